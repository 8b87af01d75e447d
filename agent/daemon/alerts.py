"""Alerts in the ledger: stored, listed with their state and dated updates, and acknowledged.

An alert is `open` until acknowledged (`acknowledged`) or until what it warned about is over
(`resolved`, with when and why). Acknowledging hides the notification, not the staleness.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger import write_transaction

ALERT_JSON_COLUMNS = ("reasons", "versions", "drift")
ALERT_SELECT = (
    "SELECT alerts.*, models.name AS model FROM alerts "
    "LEFT JOIN models ON models.id = alerts.model_id"
)


def alert_state(row: dict[str, Any]) -> str:
    """`resolved`, `acknowledged` or `open`.

    >>> alert_state({"resolved_at": None, "acknowledged_at": 5.0})
    'acknowledged'
    """
    if row.get("resolved_at") is not None:
        return "resolved"
    if row.get("acknowledged_at") is not None:
        return "acknowledged"
    return "open"


def _decode(db: Database, row: dict[str, Any]) -> dict[str, Any]:
    decoded = dict(row)
    for column in ALERT_JSON_COLUMNS:
        value = decoded.get(column)
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                decoded[column] = json.loads(value)
    decoded["state"] = alert_state(decoded)
    decoded["updates"] = [
        {
            "at": update["at"],
            "message": update["message"],
            "reasons": json.loads(update["reasons"] or "[]"),
            "drift": json.loads(update["drift"]) if update["drift"] else None,
        }
        for update in db.query(
            "SELECT * FROM alert_updates WHERE alert_id = ? ORDER BY at, id", [decoded["id"]]
        )
    ]
    return decoded


def insert_alert(
    db: Database,
    *,
    kind: str,
    message: str,
    cause: str | None = None,
    dedupe_key: str | None = None,
    model_id: int | None = None,
    version_id: int | None = None,
    reasons: list[str] | None = None,
    versions: list[Any] | None = None,
    drift: Any = None,
) -> dict[str, Any] | None:
    """Record an alert unless an unresolved one has the same model and cause (or dedupe key).

    Returns the new alert, or None when one already stood for that cause.

    Example::

        insert_alert(db, kind="watch", message="gone", cause="missing:/x")
    """
    now = time.time()
    with write_transaction(db):
        cursor = db.execute(
            "INSERT OR IGNORE INTO alerts (created_at, updated_at, model_id, version_id, kind,"
            " cause, message, reasons, versions, drift, dedupe_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                now,
                now,
                model_id,
                version_id,
                kind,
                cause,
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


def add_update(
    db: Database,
    alert_id: int,
    message: str,
    *,
    reasons: list[str] | None = None,
    drift: list[str] | None = None,
) -> dict[str, Any]:
    """Add a dated detail to an alert (its own text is never rewritten) and return the alert."""
    now = time.time()
    with write_transaction(db):
        db.execute(
            "INSERT INTO alert_updates (alert_id, at, message, reasons, drift)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                alert_id,
                now,
                message,
                json.dumps(reasons or []),
                json.dumps(drift) if drift else None,
            ],
        )
        db.execute(
            "UPDATE alerts SET updated_at = ?, drift = COALESCE(drift, ?) WHERE id = ?",
            [now, json.dumps(drift) if drift else None, alert_id],
        )
    return get_alert(db, alert_id)


def resolve(db: Database, alert_id: int, resolution: str) -> dict[str, Any] | None:
    """Mark an unresolved alert resolved, saying why; None when it was already resolved."""
    with write_transaction(db):
        changed = db.execute(
            "UPDATE alerts SET resolved_at = ?, resolution = ?"
            " WHERE id = ? AND resolved_at IS NULL",
            [time.time(), resolution, alert_id],
        ).rowcount
    return get_alert(db, alert_id) if changed else None


def get_alert(db: Database, alert_id: int) -> dict[str, Any]:
    rows = list(db.query(ALERT_SELECT + " WHERE alerts.id = ?", [alert_id]))
    if not rows:
        raise WatchkeeperError(
            f"no alert with id {alert_id}; `watchkeeper alerts --all` lists them."
        )
    return _decode(db, rows[0])


def list_alerts(
    db: Database, *, include_acknowledged: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    """Alerts, newest first: the open ones, or every alert (acknowledged, resolved) if asked."""
    where = (
        ""
        if include_acknowledged
        else "WHERE alerts.acknowledged_at IS NULL AND alerts.resolved_at IS NULL"
    )
    sql = f"{ALERT_SELECT} {where} ORDER BY alerts.created_at DESC, alerts.id DESC"
    params: list[Any] = []
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return [_decode(db, row) for row in db.query(sql, params)]


def acknowledge(db: Database, alert_id: int) -> dict[str, Any]:
    """Mark an alert acknowledged (idempotent) and return it."""
    get_alert(db, alert_id)
    with write_transaction(db):
        db.execute(
            "UPDATE alerts SET acknowledged_at = ? WHERE id = ? AND acknowledged_at IS NULL",
            [time.time(), alert_id],
        )
    return get_alert(db, alert_id)


def acknowledge_all(db: Database) -> list[dict[str, Any]]:
    """Acknowledge every open alert and return them."""
    ids = [
        int(row[0])
        for row in db.execute(
            "SELECT id FROM alerts WHERE acknowledged_at IS NULL AND resolved_at IS NULL"
        ).fetchall()
    ]
    return [acknowledge(db, alert_id) for alert_id in ids]
