"""A full disk, told one way for SQLite and the OS alike: which disk, what is free, what to do."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from agent.errors import WatchkeeperError

SQLITE_FULL = 13
SQLITE_IOERR = 10
SQLITE_CANTOPEN = 14
NEARLY_FULL_BYTES = 1024 * 1024
"""Below this much free space, a failed write or open is put down to the full disk."""
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(WatchkeeperError):
    """A write failed because the disk (or the user's quota) is full."""


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged user may still write on the file system holding `path`."""
    for candidate in (path, *path.parents):
        try:
            stats = os.statvfs(candidate)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return None


def disk_full_error(path: Path) -> DiskFullError:
    """The one message for a full disk.

    >>> str(disk_full_error(Path("/nonexistent/ledger.db"))).startswith("the disk holding")
    True
    """
    free = free_bytes(path)
    shown = "unknown" if free is None else f"{free}"
    return DiskFullError(
        f"the disk holding {path} is full ({shown} bytes free); free space and retry."
    )


def is_nearly_full(path: Path) -> bool:
    """True when the file system holding `path` has less than NEARLY_FULL_BYTES free."""
    free = free_bytes(path)
    return free is not None and free < NEARLY_FULL_BYTES


def is_disk_full(error: BaseException, path: Path | None = None) -> bool:
    """Whether `error` comes from a full disk.

    ENOSPC and EDQUOT always do, and so does SQLite's SQLITE_FULL. SQLite reports some writes
    that failed for lack of space as I/O errors or as files it cannot open (its shared-memory
    index, for one); with `path` given, those count too when that disk is nearly full.
    """
    if isinstance(error, OSError):
        return error.errno in _DISK_FULL_ERRNOS
    if isinstance(error, sqlite3.Error):
        primary = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
        if primary == SQLITE_FULL:
            return True
        if primary in (SQLITE_IOERR, SQLITE_CANTOPEN) and path is not None:
            return is_nearly_full(path)
    return False
