"""Read-only ledger queries for the app's pages: plain functions of a sqlite3 connection."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.errors import WatchkeeperError
from agent.runs.states import ACTIVE_RUN_STATES, RunState

MODEL_VERSION_COLUMNS: tuple[tuple[str, str], ...] = (
    # (heading, SQL expression used for sorting)
    ("Model", "m.name"),
    ("Version", "mv.version"),
    ("Status", "mv.status"),
    ("Commit", "mv.commit_sha"),
    ("Dirty", "mv.dirty"),
    ("Metrics", "mv.metrics"),
    ("Executor", "mv.executor"),
    ("Host", "mv.host"),
    ("Started", "mv.started_at"),
    ("Duration", "(mv.ended_at - mv.started_at)"),
)


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


def _has(connection: sqlite3.Connection | None, *tables: str) -> bool:
    return connection is not None and set(tables) <= table_names(connection)


def _json(text: Any, default: Any) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def format_metrics(metrics: dict[str, Any], limit: int = 3) -> str:
    """A short text of the first few metrics, e.g. 'acc=0.912 loss=0.31'."""
    parts = []
    for key, value in list(metrics.items())[:limit]:
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


# ---------------------------------------------------------------- models table


def version_filter_clause(text: str, status: str) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) for the Models table's filter box and status choice."""
    conditions: list[str] = []
    parameters: list[Any] = []
    if text.strip():
        pattern = f"%{text.strip()}%"
        conditions.append(
            "(m.name LIKE ? OR mv.commit_sha LIKE ? OR mv.executor LIKE ? OR mv.host LIKE ?)"
        )
        parameters += [pattern] * 4
    if status:
        conditions.append("mv.status = ?")
        parameters.append(status)
    clause = " WHERE " + " AND ".join(conditions) if conditions else ""
    return clause, parameters


def ordered_version_ids(
    connection: sqlite3.Connection | None,
    *,
    text: str = "",
    status: str = "",
    sort_column: int | None = None,
    descending: bool = True,
    limit: int | None = None,
) -> list[int]:
    """Ids of the model versions matching the filter, in display order (ids only: cheap to hold).

    With no sort column the order is the ledger's recording order (newest first), read straight
    from the primary key without sorting.
    """
    if not _has(connection, "models", "model_versions"):
        return []
    assert connection is not None
    where, parameters = version_filter_clause(text, status)
    direction = "DESC" if descending else "ASC"
    order = "" if sort_column is None else f"{MODEL_VERSION_COLUMNS[sort_column][1]} {direction}, "
    needs_models = bool(text.strip()) or sort_column == 0
    join = " JOIN models m ON m.id = mv.model_id" if needs_models else ""
    sql = f"SELECT mv.id FROM model_versions mv{join}{where} ORDER BY {order}mv.id {direction}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    cursor = connection.cursor()
    cursor.row_factory = None
    return [row[0] for row in cursor.execute(sql, parameters)]


# The Models table's display values, formatted by SQLite itself: a window of rows then costs the
# worker almost no Python, so it hardly competes with the Qt thread for the interpreter lock.
# Same output as format_metrics, format_time and format_duration (a test keeps them in step).
VERSION_ROWS_SQL = """
SELECT mv.id, m.name, mv.version, {state},
  substr(coalesce(mv.commit_sha, ''), 1, 10),
  CASE WHEN mv.dirty THEN 'dirty' ELSE '' END,
  CASE WHEN json_valid(mv.metrics) THEN coalesce((
    SELECT group_concat(key || '=' || CASE WHEN type = 'real' THEN printf('%.4g', value)
                                           ELSE value END, ' ')
    FROM (SELECT key, value, type FROM json_each(mv.metrics) LIMIT 3)), '')
  ELSE '' END,
  coalesce(mv.executor, ''), coalesce(mv.host, ''),
  CASE WHEN mv.started_at THEN strftime('%Y-%m-%d %H:%M', mv.started_at, 'unixepoch',
                                        'localtime') ELSE '' END,
  CASE WHEN mv.started_at AND mv.ended_at THEN (
    SELECT CASE WHEN d < 60 THEN d || 's'
                WHEN d < 3600 THEN (d / 60) || 'm ' || printf('%02d', d % 60) || 's'
                ELSE (d / 3600) || 'h ' || printf('%02d', d % 3600 / 60) || 'm' END
    FROM (SELECT max(0, CAST(mv.ended_at - mv.started_at AS INTEGER)) AS d))
  ELSE '' END
FROM model_versions mv JOIN models m ON m.id = mv.model_id{verdict_join}
WHERE mv.id IN ({marks})
"""
# A succeeded version that the model's verdict is about shows that verdict (fresh, stale), as
# `watchkeeper models list` does; every other version shows its run status.
VERSION_STATE_SQL = (
    "CASE WHEN mv.status = 'succeeded' AND vd.verdict IS NOT NULL THEN vd.verdict"
    " ELSE mv.status END"
)
VERDICT_JOIN_SQL = " LEFT JOIN model_verdicts vd ON vd.version_id = mv.id"


def version_rows(connection: sqlite3.Connection | None, ids: Sequence[int]) -> dict[int, tuple]:
    """Display values of the Models table for the given version ids (one window of rows)."""
    if connection is None or not ids:
        return {}
    cursor = connection.cursor()
    cursor.row_factory = None
    judged = _has(connection, "model_verdicts")
    sql = VERSION_ROWS_SQL.format(
        marks=",".join("?" * len(ids)),
        state=VERSION_STATE_SQL if judged else "mv.status",
        verdict_join=VERDICT_JOIN_SQL if judged else "",
    )
    return {row[0]: row[1:] for row in cursor.execute(sql, list(ids))}


def format_time(epoch: float | None) -> str:
    """Local time as 'YYYY-MM-DD HH:MM' ('' for none)."""
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


def format_duration(seconds: float) -> str:
    """'42s', '3m 05s' or '2h 10m'."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


@dataclass
class VersionDetail:
    """Everything the detail pane shows about one model version."""

    id: int
    model: str
    model_id: int
    version: int
    status: str
    repo_path: str
    commit_sha: str
    dirty: bool
    diff_hash: str
    train_command: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    data: dict[str, Any]
    code: dict[str, Any]
    artifacts: dict[str, str]
    executor: str
    host: str
    run_id: str
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    snapshots: dict[str, str] = field(default_factory=dict)  # dep path -> "taken at" text

    @property
    def label(self) -> str:
        return f"{self.model}@{self.version}"


def version_detail(connection: sqlite3.Connection | None, version_id: int) -> VersionDetail | None:
    """The lineage, metrics and artifacts of one version."""
    if not _has(connection, "models", "model_versions"):
        return None
    assert connection is not None
    has_repos = _has(connection, "repos")
    repo_select = "r.path AS repo_path" if has_repos else "'' AS repo_path"
    repo_join = " LEFT JOIN repos r ON r.id = m.repo_id" if has_repos else ""
    row = connection.execute(
        f"SELECT mv.*, m.name AS model_name, {repo_select}"
        " FROM model_versions mv JOIN models m ON m.id = mv.model_id"
        f"{repo_join} WHERE mv.id = ?",
        (version_id,),
    ).fetchone()
    if row is None:
        return None
    data = _json(row["data"], {})
    detail = VersionDetail(
        id=int(row["id"]),
        model=row["model_name"],
        model_id=int(row["model_id"]),
        version=int(row["version"]),
        status=row["status"] or "",
        repo_path=row["repo_path"] or "",
        commit_sha=row["commit_sha"] or "",
        dirty=bool(row["dirty"]),
        diff_hash=row["diff_hash"] or "",
        train_command=row["train_command"] or "",
        params=_json(row["params"], {}),
        metrics=_json(row["metrics"], {}),
        data=data,
        code=_json(row["code"], {}),
        artifacts=_json(row["artifacts"], {}),
        executor=row["executor"] or "",
        host=row["host"] or "",
        run_id=row["run_id"] or "",
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        exit_code=row["exit_code"],
    )
    snapshot_ids = [entry.get("snapshot_id") for entry in data.values() if isinstance(entry, dict)]
    if snapshot_ids and _has(connection, "data_snapshots"):
        taken = {
            int(r["id"]): r["taken_at"]
            for r in connection.execute(
                f"SELECT id, taken_at FROM data_snapshots WHERE id IN "
                f"({','.join('?' * len(snapshot_ids))})",
                snapshot_ids,
            )
        }
        for dep, entry in data.items():
            if isinstance(entry, dict) and entry.get("snapshot_id") in taken:
                detail.snapshots[dep] = format_time(taken[entry["snapshot_id"]])
    return detail


def compare_versions(first: VersionDetail, second: VersionDetail) -> list[tuple[str, str, str]]:
    """Rows (field, first value, second value) comparing two versions side by side."""

    def flat(detail: VersionDetail) -> dict[str, str]:
        values = {
            "status": detail.status,
            "commit": detail.commit_sha[:12] + (" (dirty)" if detail.dirty else ""),
            "train command": detail.train_command,
            "executor": f"{detail.executor} {detail.host}".strip(),
            "started": format_time(detail.started_at),
        }
        values.update({f"param {k}": json.dumps(v) for k, v in detail.params.items()})
        values.update({f"metric {k}": str(v) for k, v in detail.metrics.items()})
        for dep, entry in detail.data.items():
            fingerprint = entry.get("fingerprint", "") if isinstance(entry, dict) else str(entry)
            values[f"data {dep}"] = str(fingerprint)[:16]
        values.update({f"code {k}": str(v)[:16] for k, v in detail.code.items()})
        values.update({f"artifact {k}": str(v)[:16] for k, v in detail.artifacts.items()})
        return values

    left, right = flat(first), flat(second)
    keys = list(dict.fromkeys([*left, *right]))
    return [(key, left.get(key, "—"), right.get(key, "—")) for key in keys]


# ---------------------------------------------------------------- overview


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


def format_minutes(minutes: float) -> str:
    """'3h 25m' for a number of minutes."""
    whole = round(minutes)
    return f"{whole // 60}h {whole % 60:02d}m"


def model_verdicts(connection: sqlite3.Connection | None) -> list[VerdictRow]:
    """The stored verdict on every declared model (the one `watchkeeper status` gives)."""
    if not _has(connection, "model_verdicts"):
        return []
    assert connection is not None
    rows = connection.execute("SELECT * FROM model_verdicts ORDER BY repo, model").fetchall()
    return [
        VerdictRow(
            repo=row["repo"],
            model=row["model"],
            verdict=row["verdict"],
            version=row["version"],
            reasons=[str(reason.get("message", "")) for reason in _json(row["reasons"], [])],
            error=row["error"],
            checked_at=row["checked_at"],
        )
        for row in rows
    ]


def open_alerts(connection: sqlite3.Connection | None, limit: int = 200) -> list[AlertRow]:
    """Alerts neither acknowledged nor resolved, newest first."""
    if not _has(connection, "alerts"):
        return []
    assert connection is not None
    has_models = _has(connection, "models")
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
            reasons=[str(reason) for reason in _json(row["reasons"], [])],
            acknowledged=row["acknowledged_at"] is not None,
        )
        for row in rows
    ]


def recent_runs(
    connection: sqlite3.Connection | None, *, limit: int = 500, states: Iterable[str] = ()
) -> list[RunRow]:
    """The latest runs (optionally only those in the given states), newest first."""
    if not _has(connection, "runs"):
        return []
    assert connection is not None
    has_models = _has(connection, "models")
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


def coding_minutes_since(connection: sqlite3.Connection | None, first_day: date) -> float:
    """Estimated coding minutes from first_day (inclusive) to today, over all identities."""
    if not _has(connection, "coding_time_days"):
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
    if _has(connection, "models", "model_versions"):
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


def run_outcome(connection: sqlite3.Connection | None, run_id: str) -> dict[str, Any]:
    """The version a run produced: its number and metrics ({} when none is recorded yet)."""
    if not _has(connection, "model_versions"):
        return {}
    assert connection is not None
    row = connection.execute(
        "SELECT version, metrics FROM model_versions WHERE run_id = ? ORDER BY id DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    if row is None:
        return {}
    return {"version": row["version"], "metrics": _json(row["metrics"], {})}


def read_log_tail(log_path: str, max_bytes: int = 256_000) -> str:
    """The last max_bytes of a local run log ('' when it is not on this machine)."""
    path = Path(log_path)
    if not log_path or not path.is_file():
        return ""
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - max_bytes))
        return handle.read().decode("utf-8", errors="replace")


# ---------------------------------------------------------------- data


@dataclass
class DataSourceRow:
    """A watched data folder or file with its snapshot history."""

    id: int
    path: str
    kind: str
    snapshots: list[tuple[int, float, int, int, str]]  # id, taken_at, n_files, bytes, fingerprint


def data_sources(connection: sqlite3.Connection | None) -> list[DataSourceRow]:
    """Every data source with its snapshots in time order."""
    if not _has(connection, "data_sources"):
        return []
    assert connection is not None
    sources = [
        DataSourceRow(int(row["id"]), row["path"], row["kind"] or "", [])
        for row in connection.execute("SELECT * FROM data_sources ORDER BY path")
    ]
    if _has(connection, "data_snapshots"):
        by_id = {source.id: source for source in sources}
        for row in connection.execute(
            "SELECT id, source_id, taken_at, n_files, total_bytes, fingerprint"
            " FROM data_snapshots ORDER BY taken_at"
        ):
            source = by_id.get(row["source_id"])
            if source is not None:
                source.snapshots.append(
                    (
                        int(row["id"]),
                        float(row["taken_at"] or 0),
                        int(row["n_files"] or 0),
                        int(row["total_bytes"] or 0),
                        row["fingerprint"] or "",
                    )
                )
    return sources


@dataclass
class SnapshotChange:
    """What changed between two snapshots of one source."""

    added: list[str]
    removed: list[str]
    modified: list[str]


def snapshot_change(
    connection: sqlite3.Connection | None, older_id: int, newer_id: int
) -> SnapshotChange:
    """Files added, removed and modified from one snapshot to the next."""
    if not _has(connection, "data_snapshot_files"):
        return SnapshotChange([], [], [])
    assert connection is not None

    def files(snapshot_id: int) -> dict[str, str]:
        return {
            row[0]: row[1]
            for row in connection.execute(
                "SELECT path, digest FROM data_snapshot_files WHERE snapshot_id = ?",
                (snapshot_id,),
            )
        }

    old, new = files(older_id), files(newer_id)
    return SnapshotChange(
        added=sorted(set(new) - set(old)),
        removed=sorted(set(old) - set(new)),
        modified=sorted(path for path in set(old) & set(new) if old[path] != new[path]),
    )


@dataclass
class ColumnDriftRow:
    """One column's drift statistic from a drift alert."""

    path: str
    column: str
    test: str
    statistic: float
    threshold: float
    drifted: bool


def latest_drift(connection: sqlite3.Connection | None) -> tuple[str, list[ColumnDriftRow]]:
    """The newest alert that carries drift: its message and per-column statistics."""
    if not _has(connection, "alerts"):
        return "", []
    assert connection is not None
    row = connection.execute(
        "SELECT message, drift FROM alerts WHERE drift IS NOT NULL AND drift != ''"
        " ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return "", []
    drift = _json(row["drift"], [])
    notes = (
        [str(entry) for entry in drift if isinstance(entry, str)] if isinstance(drift, list) else []
    )
    message = "\n".join([row["message"] or "", *notes]).strip()
    return message, parse_drift(drift)


def drift_since_snapshot(
    connection: sqlite3.Connection | None, snapshot_id: int, source_path: str
) -> tuple[str, list[ColumnDriftRow]]:
    """Per-column drift of the source as it is now against one of its snapshots.

    Reads the current files (hashing what changed), so it runs in a worker like every query.
    """
    source = Path(source_path)
    if connection is None or not source.exists():
        return f"{source} is not on this machine.", []
    from sqlite_utils import Database

    from agent.data.drift import drift_against_snapshot

    reports = drift_against_snapshot(Database(connection), snapshot_id, source)
    if not reports:
        return "No tabular file changed since this snapshot.", []
    summary = "\n".join(f"{report.path}: {report.summary()}" for report in reports)
    return summary, parse_drift([report.to_json() for report in reports])


def parse_drift(drift: Any) -> list[ColumnDriftRow]:
    """Per-column drift rows from an alert's drift JSON (a report or a list of reports)."""
    reports = drift if isinstance(drift, list) else [drift] if isinstance(drift, dict) else []
    rows: list[ColumnDriftRow] = []
    for report in reports:
        if not isinstance(report, dict):
            continue
        for column in report.get("columns", []):
            try:
                rows.append(
                    ColumnDriftRow(
                        path=str(report.get("path", "")),
                        column=str(column["column"]),
                        test=str(column.get("test", "")),
                        statistic=float(column.get("statistic", 0.0)),
                        threshold=float(column.get("threshold", 0.0)),
                        drifted=bool(column.get("drifted", False)),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
    return rows


# ---------------------------------------------------------------- coding time


@dataclass
class CodingTimeDays:
    """Per-day coding minutes and the two baselines, as parallel lists."""

    dates: list[str]
    coding: list[float]
    git_hours: list[float]
    timeout: list[float]


def coding_time_days(connection: sqlite3.Connection | None) -> CodingTimeDays:
    """Daily totals summed over identities, oldest first."""
    if not _has(connection, "coding_time_days"):
        return CodingTimeDays([], [], [], [])
    assert connection is not None
    rows = connection.execute(
        "SELECT date, SUM(coding_minutes), SUM(git_hours_minutes), SUM(timeout_minutes)"
        " FROM coding_time_days GROUP BY date ORDER BY date"
    ).fetchall()
    return CodingTimeDays(
        dates=[row[0] for row in rows],
        coding=[float(row[1] or 0) for row in rows],
        git_hours=[float(row[2] or 0) for row in rows],
        timeout=[float(row[3] or 0) for row in rows],
    )


def activity_times(
    connection: sqlite3.Connection | None, since: float | None = None
) -> list[float]:
    """Times of all activity events (saves and commits), oldest first."""
    if not _has(connection, "activity_events"):
        return []
    assert connection is not None
    rows = connection.execute(
        "SELECT ts FROM activity_events WHERE ts >= ? ORDER BY ts", (since or 0.0,)
    )
    return [float(row[0]) for row in rows]
