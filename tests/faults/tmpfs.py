"""Small real filesystems mounted for a test (root only), a tmpfs or an XFS with reflinks: fail in
CI when impossible, else skip."""

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


@contextmanager
def mounted_xfs() -> Iterator[Path]:
    """Mount a new 300 MiB XFS image with reflinks (sparse, in /var/tmp) through a loop device on
    a new folder; unmount it and remove both afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="wk-xfs-"))
    image = Path(tempfile.mkstemp(prefix="wk-xfs-", suffix=".img", dir="/var/tmp")[1])
    mounted = False
    reason = "needs root" if os.geteuid() != 0 else ""
    if not reason and shutil.which("mkfs.xfs") is None:
        reason = "mkfs.xfs is missing: apt-get install xfsprogs"
    if not reason:
        os.truncate(image, 300 << 20)
        for command in (
            ["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)],
            ["mount", "-o", "loop", str(image), str(folder)],
        ):
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                reason = f"{command[0]}: {completed.stderr.strip()}"
                break
        mounted = not reason
    try:
        require(
            mounted,
            "an XFS filesystem with reflinks",
            f"run the tests as root with xfsprogs installed and loop devices ({reason})",
        )
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)
        image.unlink(missing_ok=True)
