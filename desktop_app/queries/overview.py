"""The Overview's and the tray's queries: open alerts, verdicts, active runs, coding minutes."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import date, timedelta

from agent.runs.states import ACTIVE_RUN_STATES, RunState
from desktop_app.queries.connection import has_tables, parse_json
from desktop_app.queries.formatting import format_minutes
from desktop_app.queries.runs import RunRow, recent_runs


@dataclass
class AlertRow:
    """One alert as the Overview shows it."""

    id: int
    created_at: float
    kind: str
    model: str
    message: str
    reasons: list[str]
    acknowledged: bool


@dataclass
class VerdictRow:
    """The verdict on one model, as the agent or `watchkeeper status` last judged it."""

    repo: str
    model: str
    verdict: str
    version: int | None
    reasons: list[str]
    error: str | None
    checked_at: float


@dataclass
class Overview:
    """What the Overview page and the tray summarise."""

    alerts: list[AlertRow]
    verdicts: list[VerdictRow]
    running: list[RunRow]
    today_minutes: float
    week_minutes: float
    model_count: int
    version_count: int
    last_failed_run: RunRow | None
    today_text: str = ""  # e.g. "today 0h 09m so far", from the stored coding-time estimate
    today_note: str = ""  # how current that estimate is

    @property
    def stale(self) -> list[VerdictRow]:
        """The models judged stale (whatever became of their alerts)."""
        return [row for row in self.verdicts if row.verdict == "stale"]

    @property
    def never_trained(self) -> list[VerdictRow]:
        return [row for row in self.verdicts if row.verdict == "never trained"]

    @property
    def tray_state(self) -> str:
        """'running', 'error', 'stale' or 'fresh' for the tray icon."""
        if self.running:
            return "running"
        if self.last_failed_run is not None:
            return "error"
        if self.stale:
            return "stale"
        return "fresh"

    @property
    def status_line(self) -> str:
        parts = [f"{self.model_count} models"]
        if self.stale:
            parts.append(f"{len(self.stale)} stale")
        if self.never_trained:
            parts.append(f"{len(self.never_trained)} never trained")
        if self.running:
            parts.append(f"{len(self.running)} running")
        if self.last_failed_run is not None:
            parts.append(f"run {self.last_failed_run.id} failed")
        parts.append(self.today_text or f"today {format_minutes(self.today_minutes)}")
        return " · ".join(parts)


def model_verdicts(connection: sqlite3.Connection | None) -> list[VerdictRow]:
    """The stored verdict on every declared model (the one `watchkeeper status` gives)."""
    if not has_tables(connection, "model_verdicts"):
        return []
    assert connection is not None
    rows = connection.execute("SELECT * FROM model_verdicts ORDER BY repo, model").fetchall()
    return [
        VerdictRow(
            repo=row["repo"],
            model=row["model"],
            verdict=row["verdict"],
            version=row["version"],
            reasons=[str(reason.get("message", "")) for reason in parse_json(row["reasons"], [])],
            error=row["error"],
            checked_at=row["checked_at"],
        )
        for row in rows
    ]


def open_alerts(connection: sqlite3.Connection | None, limit: int = 200) -> list[AlertRow]:
    """Alerts neither acknowledged nor resolved, newest first."""
    if not has_tables(connection, "alerts"):
        return []
    assert connection is not None
    has_models = has_tables(connection, "models")
    model_select = "m.name AS model_name" if has_models else "'' AS model_name"
    model_join = " LEFT JOIN models m ON m.id = a.model_id" if has_models else ""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(alerts)")}
    resolved = " AND a.resolved_at IS NULL" if "resolved_at" in columns else ""
    rows = connection.execute(
        f"SELECT a.*, {model_select} FROM alerts a{model_join}"
        f" WHERE a.acknowledged_at IS NULL{resolved} ORDER BY a.created_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        AlertRow(
            id=int(row["id"]),
            created_at=row["created_at"] or 0.0,
            kind=row["kind"] or "",
            model=row["model_name"] or "",
            message=row["message"] or "",
            reasons=[str(reason) for reason in parse_json(row["reasons"], [])],
            acknowledged=row["acknowledged_at"] is not None,
        )
        for row in rows
    ]


def coding_minutes_since(connection: sqlite3.Connection | None, first_day: date) -> float:
    """Estimated coding minutes from first_day (inclusive) to today, over all identities."""
    if not has_tables(connection, "coding_time_days"):
        return 0.0
    assert connection is not None
    row = connection.execute(
        "SELECT COALESCE(SUM(coding_minutes), 0) FROM coding_time_days WHERE date >= ?",
        (first_day.isoformat(),),
    ).fetchone()
    return float(row[0])


def overview(connection: sqlite3.Connection | None, now: float | None = None) -> Overview:
    """Everything the Overview page and the tray need, in one worker call."""
    today = date.fromtimestamp(now or time.time())
    alerts = open_alerts(connection)
    running = recent_runs(connection, limit=100, states=ACTIVE_RUN_STATES)
    failed = recent_runs(connection, limit=1, states=(RunState.FAILED, RunState.LOST))
    latest = recent_runs(connection, limit=1)
    last_failed = failed[0] if failed and latest and latest[0].id == failed[0].id else None
    verdicts = model_verdicts(connection)
    version_count = 0
    if has_tables(connection, "models", "model_versions"):
        assert connection is not None
        version_count = int(connection.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0])
    return Overview(
        alerts=alerts,
        verdicts=verdicts,
        running=running,
        today_minutes=coding_minutes_since(connection, today),
        week_minutes=coding_minutes_since(connection, today - timedelta(days=today.weekday())),
        model_count=len(verdicts),
        version_count=version_count,
        last_failed_run=last_failed,
    )
