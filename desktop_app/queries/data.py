"""The Data page's queries: sources with their snapshots, what changed, per-column drift."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop_app.queries.connection import has_tables, parse_json


@dataclass
class DataSourceRow:
    """A watched data folder or file with its snapshot history."""

    id: int
    path: str
    kind: str
    snapshots: list[tuple[int, float, int, int, str]]  # id, taken_at, n_files, bytes, fingerprint


def data_sources(connection: sqlite3.Connection | None) -> list[DataSourceRow]:
    """Every data source with its snapshots in time order."""
    if not has_tables(connection, "data_sources"):
        return []
    assert connection is not None
    sources = [
        DataSourceRow(int(row["id"]), row["path"], row["kind"] or "", [])
        for row in connection.execute("SELECT * FROM data_sources ORDER BY path")
    ]
    if has_tables(connection, "data_snapshots"):
        by_id = {source.id: source for source in sources}
        columns = {str(row[1]) for row in connection.execute("PRAGMA table_info(data_snapshots)")}
        if "deleted_at" in columns:  # deleted snapshots are not shown, nor sources left empty
            for (source_id,) in connection.execute(
                "SELECT source_id FROM data_snapshots GROUP BY source_id"
                " HAVING count(*) = count(deleted_at)"
            ):
                by_id.pop(int(source_id), None)
            sources = list(by_id.values())
        kept = " WHERE deleted_at IS NULL" if "deleted_at" in columns else ""
        for row in connection.execute(
            "SELECT id, source_id, taken_at, n_files, total_bytes, fingerprint"
            f" FROM data_snapshots{kept} ORDER BY taken_at"
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
    if not has_tables(connection, "data_snapshot_files"):
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
    if not has_tables(connection, "alerts"):
        return "", []
    assert connection is not None
    row = connection.execute(
        "SELECT message, drift FROM alerts WHERE drift IS NOT NULL AND drift != ''"
        " ORDER BY created_at DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return "", []
    drift = parse_json(row["drift"], [])
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
