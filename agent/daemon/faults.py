"""Which errors pass by themselves (a locked ledger, a full disk, a busy remote) and are retried."""

from __future__ import annotations

import errno
import sqlite3

from agent.ledger import LedgerLockedError

TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EMFILE, errno.ENFILE}
TRANSIENT_SQLITE_WORDS = ("locked", "busy", "disk is full", "database or disk is full")


def is_transient(error: BaseException) -> bool:
    """True for faults that a later attempt may not meet; the job is then retried, not dropped.

    >>> is_transient(OSError(errno.ENOSPC, "No space left on device"))
    True
    >>> is_transient(ValueError("bad input"))
    False
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, LedgerLockedError):
            return True
        if isinstance(current, sqlite3.OperationalError) and any(
            word in str(current).lower() for word in TRANSIENT_SQLITE_WORDS
        ):
            return True
        if isinstance(current, OSError) and current.errno in TRANSIENT_ERRNOS:
            return True
        if "is full" in str(current) and "disk" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False
