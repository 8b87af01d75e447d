"""The Runs page's queries: recent runs, the version a run produced, a local log's tail."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop_app.queries.connection import has_tables, parse_json
from desktop_app.queries.formatting import format_duration


@dataclass
class RunRow:
    """One training run."""

    id: str
    model: str
    state: str
    executor: str
    host: str
    created_at: float | None
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    log_path: str

    @property
    def elapsed(self) -> str:
        if not self.started_at:
            return ""
        return format_duration((self.ended_at or time.time()) - self.started_at)


def recent_runs(
    connection: sqlite3.Connection | None, *, limit: int = 500, states: Iterable[str] = ()
) -> list[RunRow]:
    """The latest runs (optionally only those in the given states), newest first."""
    if not has_tables(connection, "runs"):
        return []
    assert connection is not None
    has_models = has_tables(connection, "models")
    model_select = "m.name AS model_name" if has_models else "'' AS model_name"
    model_join = " LEFT JOIN models m ON m.id = r.model_id" if has_models else ""
    wanted = list(states)
    where = f" WHERE r.state IN ({','.join('?' * len(wanted))})" if wanted else ""
    # Newest first in recording order (the rowid), which needs no sort of the whole table.
    rows = connection.execute(
        f"SELECT r.*, {model_select} FROM runs r{model_join}{where} ORDER BY r.rowid DESC LIMIT ?",
        [*wanted, limit],
    ).fetchall()
    return [_run_row(row) for row in rows]


def _run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(
        id=str(row["id"]),
        model=row["model_name"] or "",
        state=row["state"] or "",
        executor=row["executor"] or "",
        host=row["host"] or "",
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        exit_code=row["exit_code"],
        log_path=row["log_path"] or "",
    )


def run_outcome(connection: sqlite3.Connection | None, run_id: str) -> dict[str, Any]:
    """The version a run produced: its number and metrics ({} when none is recorded yet)."""
    if not has_tables(connection, "model_versions"):
        return {}
    assert connection is not None
    row = connection.execute(
        "SELECT version, metrics FROM model_versions WHERE run_id = ? ORDER BY id DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    if row is None:
        return {}
    return {"version": row["version"], "metrics": parse_json(row["metrics"], {})}


def read_log_tail(log_path: str, max_bytes: int = 256_000) -> str:
    """The last max_bytes of a local run log ('' when it is not on this machine)."""
    path = Path(log_path)
    if not log_path or not path.is_file():
        return ""
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - max_bytes))
        return handle.read().decode("utf-8", errors="replace")
