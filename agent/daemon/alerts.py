"""Alerts in the ledger: raised once per distinct cause, listed, and acknowledged."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger import write_transaction

ALERT_JSON_COLUMNS = ("reasons", "versions", "drift")


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    decoded = dict(row)
    for column in ALERT_JSON_COLUMNS:
        value = decoded.get(column)
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                decoded[column] = json.loads(value)
    return decoded


def raise_alert(
    db: Database,
    *,
    kind: str,
    message: str,
    dedupe_key: str,
    model_id: int | None = None,
    reasons: list[str] | None = None,
    versions: list[Any] | None = None,
    drift: Any = None,
) -> dict[str, Any] | None:
    """Record an alert unless one with the same dedupe key exists; return the new alert or None.

    >>> raise_alert(db, kind="watch", message="gone", dedupe_key="watch:x")  # doctest: +SKIP
    """
    with write_transaction(db):
        cursor = db.execute(
            "INSERT OR IGNORE INTO alerts (created_at, model_id, kind, message, reasons, versions,"
            " drift, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                time.time(),
                model_id,
                kind,
                message,
                json.dumps(reasons or []),
                json.dumps(versions or []),
                None if drift is None else json.dumps(drift),
                dedupe_key,
            ],
        )
        if cursor.rowcount != 1:
            return None
        alert_id = cursor.lastrowid
    return get_alert(db, int(alert_id or 0))


def get_alert(db: Database, alert_id: int) -> dict[str, Any]:
    rows = list(
        db.query(
            "SELECT alerts.*, models.name AS model FROM alerts "
            "LEFT JOIN models ON models.id = alerts.model_id WHERE alerts.id = ?",
            [alert_id],
        )
    )
    if not rows:
        raise WatchkeeperError(
            f"no alert with id {alert_id}; `watchkeeper alerts --all` lists them."
        )
    return _decode(rows[0])


def list_alerts(
    db: Database, *, include_acknowledged: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    """Alerts, newest first; only unacknowledged ones unless asked for all."""
    where = "" if include_acknowledged else "WHERE alerts.acknowledged_at IS NULL"
    sql = (
        "SELECT alerts.*, models.name AS model FROM alerts "
        f"LEFT JOIN models ON models.id = alerts.model_id {where} "
        "ORDER BY alerts.created_at DESC, alerts.id DESC"
    )
    params: list[Any] = []
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return [_decode(row) for row in db.query(sql, params)]


def acknowledge(db: Database, alert_id: int) -> dict[str, Any]:
    """Mark an alert acknowledged (idempotent) and return it."""
    get_alert(db, alert_id)
    with write_transaction(db):
        db.execute(
            "UPDATE alerts SET acknowledged_at = ? WHERE id = ? AND acknowledged_at IS NULL",
            [time.time(), alert_id],
        )
    return get_alert(db, alert_id)
