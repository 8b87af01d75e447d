"""The Models page's queries: ordered version ids, windows of display rows, a version's detail."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from desktop_app.queries.connection import has_tables, parse_json
from desktop_app.queries.formatting import format_time

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
    if not has_tables(connection, "models", "model_versions"):
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
    judged = has_tables(connection, "model_verdicts")
    sql = VERSION_ROWS_SQL.format(
        marks=",".join("?" * len(ids)),
        state=VERSION_STATE_SQL if judged else "mv.status",
        verdict_join=VERDICT_JOIN_SQL if judged else "",
    )
    return {row[0]: row[1:] for row in cursor.execute(sql, list(ids))}


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
    if not has_tables(connection, "models", "model_versions"):
        return None
    assert connection is not None
    has_repos = has_tables(connection, "repos")
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
    data = parse_json(row["data"], {})
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
        params=parse_json(row["params"], {}),
        metrics=parse_json(row["metrics"], {}),
        data=data,
        code=parse_json(row["code"], {}),
        artifacts=parse_json(row["artifacts"], {}),
        executor=row["executor"] or "",
        host=row["host"] or "",
        run_id=row["run_id"] or "",
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        exit_code=row["exit_code"],
    )
    snapshot_ids = [entry.get("snapshot_id") for entry in data.values() if isinstance(entry, dict)]
    if snapshot_ids and has_tables(connection, "data_snapshots"):
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
