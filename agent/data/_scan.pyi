"""Type stub for the compiled folder walker (agent/data/_scan.pyx)."""

import numpy as np

KIND_FILE: int
KIND_SYMLINK: int
KIND_OTHER: int
KIND_UNREADABLE: int
ENTRY_FIELDS: list[tuple[str, str]]

def scan_folder(
    root: bytes, prefix: bytes = b"", skip_name: bytes | None = None
) -> tuple[bytes, np.ndarray]: ...
def scan_names(root: bytes, names: list[bytes]) -> tuple[bytes, np.ndarray]: ...
