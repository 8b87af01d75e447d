"""A small real tmpfs mounted for a test (root only): fail in CI when impossible, else skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import require


@contextmanager
def mounted_tmpfs(size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. "2m") on a new folder; unmount and remove it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="wk-tmpfs-"))
    mounted = False
    reason = "needs root" if os.geteuid() != 0 else ""
    if not reason:
        completed = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        mounted = completed.returncode == 0
        reason = completed.stderr.strip()
    try:
        require(mounted, "a tmpfs mount", f"run the tests as root where mount works ({reason})")
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)
