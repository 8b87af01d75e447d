"""Type stub for the compiled store cloner (agent/ledger/_clone.pyx)."""

import numpy as np

CLONED: int
PRESENT: int
UNTRUSTED: int
FAILED: int

def clone_files(
    sources: list[bytes], folders: list[bytes], destinations: list[bytes], vouched: np.ndarray
) -> tuple[np.ndarray, np.ndarray]: ...
def stat_keys(paths: list[bytes]) -> np.ndarray: ...
def link_unnamed(descriptor: int, destination: bytes) -> bool: ...
