"""The app's read-only way into the ledger, and the checks every page's queries share."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from agent.errors import WatchkeeperError


def connect_readonly(ledger: Path) -> sqlite3.Connection | None:
    """Open the ledger read-only (None when the file does not exist yet).

    A plain `mode=ro` SQLite connection, as `agent.ledger.open_ledger(readonly=True)` opens it,
    without importing the ledger library (sqlite-utils and numpy), which would otherwise cost
    the app its first second. The file is never opened outside SQLite: closing another
    descriptor of it would drop the POSIX locks of every SQLite connection in the process.
    """
    if not ledger.exists():
        return None
    connection = sqlite3.connect(
        f"{ledger.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=10.0
    )
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        connection.close()
        if "not a database" in str(error):
            raise WatchkeeperError(
                f"{ledger} is not a SQLite database (it may be corrupt); the app only reads "
                "it. Run `watchkeeper status` to see what the ledger library makes of it."
            ) from error
        raise
    connection.row_factory = sqlite3.Row
    return connection


def table_names(connection: sqlite3.Connection | None) -> set[str]:
    """The tables present in the ledger (an older or empty file may lack some)."""
    if connection is None:
        return set()
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(row[0]) for row in rows}


def has_tables(connection: sqlite3.Connection | None, *tables: str) -> bool:
    return connection is not None and set(tables) <= table_names(connection)


def parse_json(text: Any, default: Any) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default
