"""The model ledger: one SQLite file in WAL mode, opened with its schema migrated."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from agent.disk import disk_full_error, is_disk_full, is_nearly_full
from agent.errors import WatchkeeperError
from agent.ledger.schema import migrations
from agent.paths import PRIVATE_FOLDER_MODE, WatchkeeperPaths, make_private

DEFAULT_BUSY_TIMEOUT_MS = 10_000
BUSY_TIMEOUT_ENV = "WATCHKEEPER_BUSY_TIMEOUT_MS"

__all__ = [
    "LedgerLockedError",
    "integrity_problem",
    "ledger_errors",
    "open_ledger",
    "write_transaction",
]


class LedgerLockedError(WatchkeeperError):
    """Another process held the ledger's write lock for longer than the busy timeout."""


def busy_timeout_ms() -> int:
    """The busy timeout in milliseconds: $WATCHKEEPER_BUSY_TIMEOUT_MS, else 10 seconds."""
    value = os.environ.get(BUSY_TIMEOUT_ENV)
    if not value:
        return DEFAULT_BUSY_TIMEOUT_MS
    try:
        return max(0, int(value))
    except ValueError as error:
        raise WatchkeeperError(
            f"${BUSY_TIMEOUT_ENV} is {value!r}; set it to a whole number of milliseconds."
        ) from error


def ledger_path(db: Database) -> Path:
    """The file behind an open ledger."""
    for _, name, filename in db.conn.execute("PRAGMA database_list"):
        if name == "main":
            return Path(filename)
    raise WatchkeeperError("the ledger connection has no main database")


def _corrupt_error(path: Path, error: sqlite3.DatabaseError, finding: str) -> WatchkeeperError:
    if "file is not a database" in str(error):
        return WatchkeeperError(
            f"{path} is not a SQLite database (it may be corrupt). Watchkeeper will not "
            "overwrite it: move it aside (for example to ledger.db.broken) and run the command "
            "again to start a new ledger, or restore it from a backup."
        )
    return WatchkeeperError(
        f"the ledger {path} is damaged ({error}; integrity check: {finding}). Watchkeeper will "
        f"not overwrite it: restore a backup, or move it aside to start a new ledger."
    )


def integrity_problem(path: Path) -> str | None:
    """None when `PRAGMA integrity_check` passes on the file; else its first finding."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as error:
        return str(error)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as error:
        return str(error)
    finally:
        connection.close()
    findings = [str(row[0]) for row in rows]
    return None if findings == ["ok"] else "; ".join(findings[:3])


def _diagnose(path: Path, error: sqlite3.DatabaseError) -> WatchkeeperError:
    """The user-facing error for a failed ledger operation that is not a lock timeout.

    A full disk says so. The ledger is called damaged only when its integrity check fails;
    otherwise the error is reported as it is, with the word that the file itself is intact.
    """
    if is_disk_full(error, path):
        return disk_full_error(path)
    if "file is not a database" in str(error):
        return _corrupt_error(path, error, "not a database")
    problem = integrity_problem(path)
    if problem is not None:
        if is_nearly_full(path):
            return disk_full_error(path)
        return _corrupt_error(path, error, problem)
    return WatchkeeperError(
        f"the ledger {path} could not be used: {error}. Its integrity check passes, so the "
        "file is intact: retry the command."
    )


def _locked_error(path: Path, timeout_ms: int) -> LedgerLockedError:
    return LedgerLockedError(
        f"the ledger {path} is locked by another writer (waited {timeout_ms / 1000:g} s). "
        "Another watchkeeper command or the agent is writing to it; try again in a moment, or "
        f"raise ${BUSY_TIMEOUT_ENV}."
    )


def _is_locked(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "database is locked" in message or "database is busy" in message


@contextmanager
def ledger_errors(path: Path) -> Iterator[None]:
    """Turn SQLite errors into user-facing errors naming the ledger file.

    A lock timeout, a full disk and a damaged file each get their own message; the file is
    called damaged only after `PRAGMA integrity_check` has failed on it.
    """
    try:
        yield
    except sqlite3.OperationalError as error:
        if _is_locked(error):
            raise _locked_error(path, busy_timeout_ms()) from error
        raise _diagnose(path, error) from error
    except sqlite3.DatabaseError as error:
        if isinstance(error, sqlite3.IntegrityError | sqlite3.ProgrammingError):
            raise
        raise _diagnose(path, error) from error
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(path) from error
        raise


def open_ledger(path: Path | None = None, *, readonly: bool = False) -> Database:
    """Open the ledger (default `$WATCHKEEPER_HOME/ledger.db`), migrating its schema.

    The connection uses WAL, enforces foreign keys and waits up to the busy timeout for another
    writer. A file that is not a readable SQLite database raises WatchkeeperError and is left
    untouched. With `readonly=True` the file is opened with `mode=ro` and nothing is applied.

    >>> db = open_ledger()  # $WATCHKEEPER_HOME/ledger.db
    >>> "model_versions" in db.table_names()
    True
    """
    if path is None:
        paths = WatchkeeperPaths.from_environment()
        path = paths.ledger
    timeout_ms = busy_timeout_ms()
    # The file is never opened outside SQLite: closing a second descriptor of it would drop the
    # POSIX locks of every SQLite connection in this process. SQLite itself reports a file that
    # is not a database, and ledger_errors() turns that into a message naming the file.
    if not path.exists() and readonly:
        raise WatchkeeperError(f"there is no ledger at {path} yet; run `watchkeeper init` first.")
    if not readonly:
        _make_ledger_folder_private(path)
    with ledger_errors(path):
        if readonly:
            connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=timeout_ms / 1000,
                check_same_thread=False,
            )
        else:
            connection = sqlite3.connect(
                str(path), timeout=timeout_ms / 1000, check_same_thread=False
            )
        db = Database(connection)
        try:
            if not readonly:
                _make_ledger_files_private(path)
            db.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA schema_version").fetchone()
            if not readonly:
                if db.journal_mode != "wal":
                    db.enable_wal()
                if migrations.pending(db):
                    with write_transaction(db):
                        migrations.apply(db)
        except BaseException:
            connection.close()
            raise
    return db


def _make_ledger_folder_private(path: Path) -> None:
    """Create the ledger's folder 0700; in the Watchkeeper home, make the whole home private."""
    paths = WatchkeeperPaths.from_environment()
    if path.parent.resolve() == paths.data_dir:
        paths.ensure()
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)


def _make_ledger_files_private(path: Path) -> None:
    """ledger.db, its WAL and its index 0600 (SQLite gives the WAL the database file's mode)."""
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        with contextlib.suppress(OSError):
            make_private(path.with_name(name))


@contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """A `BEGIN IMMEDIATE` transaction: takes the write lock up front, waiting the busy timeout.

    Taking the lock first avoids the immediate SQLITE_BUSY a deferred transaction gets when it
    upgrades from reading to writing while another process writes.
    """
    path = ledger_path(db)
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    with ledger_errors(path):
        db.conn.execute("BEGIN IMMEDIATE")
    try:
        with ledger_errors(path):
            yield db
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.rollback()
        raise
    with ledger_errors(path):
        db.conn.execute("COMMIT")
