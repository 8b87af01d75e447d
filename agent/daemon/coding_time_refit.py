"""The nightly coding-time refit, bookkept in the ledger as versions of the model `coding-time`."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlite_utils import Database

from agent.ledger import write_transaction
from agent.ledger.queries import insert_row, next_version

if TYPE_CHECKING:
    from agent.daemon.ports import AgentCore

BUILTIN_REPO_PATH = "builtin:watchkeeper"
"""The ledger's `repos` row that owns built-in models (it is not a directory)."""
MODEL_NAME = "coding-time"
WINDOW_DAYS = 90
TRAIN_COMMAND = "builtin: hour-of-week HMM fitted to your commits and file saves"


def _builtin_model_id(db: Database) -> int:
    row = db.execute("SELECT id FROM repos WHERE path = ?", [BUILTIN_REPO_PATH]).fetchone()
    if row is None:
        repo_id = db.execute(
            "INSERT INTO repos (path, name, added_at) VALUES (?, 'built-in models', ?)",
            [BUILTIN_REPO_PATH, time.time()],
        ).lastrowid
    else:
        repo_id = row[0]
    model = db.execute(
        "SELECT id FROM models WHERE repo_id = ? AND name = ?", [repo_id, MODEL_NAME]
    ).fetchone()
    if model is not None:
        return int(model[0])
    return int(
        db.execute(
            "INSERT INTO models (repo_id, name) VALUES (?, ?)", [repo_id, MODEL_NAME]
        ).lastrowid
        or 0
    )


def load_events(db: Database, identities: list[str], since: float) -> tuple[np.ndarray, np.ndarray]:
    """UTC times and kinds (0 commit, 1 save) of the user's activity since `since`.

    Commits come from the `commits` table (own identities, merges excluded, each sha once);
    saves from `activity_events`.
    """
    own = [email.lower() for email in identities]
    where = "is_merge = 0 AND author_time >= ?"
    params: list[Any] = [int(since)]
    if own:
        where += f" AND lower(author_email) IN ({', '.join('?' for _ in own)})"
        params.extend(own)
    commit_times = [
        float(row[0])
        for row in db.execute(
            f"SELECT MIN(author_time) FROM commits WHERE {where} GROUP BY sha", params
        )
    ]
    save_times = [
        float(row[0])
        for row in db.execute(
            "SELECT ts FROM activity_events WHERE kind = 'save' AND ts >= ?", [since]
        )
    ]
    times = np.array(commit_times + save_times, dtype=np.float64)
    kinds = np.array([0] * len(commit_times) + [1] * len(save_times), dtype=np.int64)
    order = np.argsort(times, kind="stable")
    return times[order], kinds[order]


def to_local_seconds(times: np.ndarray) -> np.ndarray:
    """Epoch seconds shifted by the system zone's UTC offset at each moment."""
    if times.size == 0:
        return times
    hours = np.floor(times / 3600.0).astype(np.int64)
    unique_hours, inverse = np.unique(hours, return_inverse=True)
    offsets = np.array(
        [time.localtime(int(hour) * 3600).tm_gmtoff for hour in unique_hours], dtype=np.float64
    )
    return times + offsets[inverse]


def event_set_fingerprint(times: np.ndarray, kinds: np.ndarray) -> str:
    """A hash of exactly the events the model was fitted to."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(times, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(kinds, dtype=np.int64).tobytes())
    return digest.hexdigest()


def refit(service: AgentCore) -> dict[str, Any]:
    """Fit the coding-time model to the last 90 days and record a version plus per-day rows."""
    from agent.activity.coding_time import estimate_coding_time

    db = service.db()
    started = time.time()
    times, kinds = load_events(db, service.identities, started - WINDOW_DAYS * 86400)
    fingerprint = event_set_fingerprint(times, kinds)
    with write_transaction(db):
        model_id = _builtin_model_id(db)
    latest = db.execute(
        "SELECT id, version, data FROM model_versions WHERE model_id = ? "
        "ORDER BY version DESC LIMIT 1",
        [model_id],
    ).fetchone()
    if (
        latest is not None
        and json.loads(latest[2] or "{}").get("events", {}).get("fingerprint") == fingerprint
    ):
        return {
            "model_version_id": latest[0],
            "version": latest[1],
            "unchanged": True,
            "events": int(times.size),
        }
    if times.size == 0:
        return {"model_version_id": None, "version": None, "unchanged": True, "events": 0}
    estimate = estimate_coding_time(to_local_seconds(times), kinds)
    summary = estimate.model_summary()
    identity = service.identities[0] if service.identities else "me"
    ended = time.time()
    with write_transaction(db):
        version = next_version(db, model_id)
        version_id = insert_row(
            db,
            "model_versions",
            {
                "model_id": model_id,
                "version": version,
                "status": "succeeded",
                "dirty": 0,
                "train_command": TRAIN_COMMAND,
                "params": {
                    "parameters": summary["parameters"],
                    "identities": service.identities,
                    "window_days": WINDOW_DAYS,
                },
                "metrics": {
                    "log_likelihood": summary["log_likelihood"],
                    "n_iter": summary["n_iter"],
                    "converged": 1.0 if summary["converged"] else 0.0,
                    "commits": float(estimate.event_counts.get("commit", 0)),
                    "saves": float(estimate.event_counts.get("save", 0)),
                },
                "data": {"events": {"snapshot_id": None, "fingerprint": fingerprint}},
                "code": {},
                "artifacts": {},
                "executor": "agent",
                "host": socket.gethostname(),
                "started_at": started,
                "ended_at": ended,
                "exit_code": 0,
            },
        )
        db.conn.executemany(
            "INSERT OR REPLACE INTO coding_time_days (date, identity, coding_minutes, "
            "git_hours_minutes, timeout_minutes, model_version_id) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    date,
                    identity,
                    float(estimate.coding_minutes[i]),
                    float(estimate.git_hours_minutes[i]),
                    float(estimate.timeout_minutes[i]),
                    version_id,
                )
                for i, date in enumerate(estimate.dates)
            ],
        )
    return {
        "model_version_id": version_id,
        "version": version,
        "unchanged": False,
        "events": int(times.size),
        "days": estimate.n_days,
        "log_likelihood": summary["log_likelihood"],
        "fingerprint": fingerprint,
    }


def summary(db: Database, *, days: int = 30) -> dict[str, Any]:
    """The latest refit and the recorded per-day minutes of the last `days` days."""
    rows = list(
        db.query(
            "SELECT date, identity, coding_minutes, git_hours_minutes, timeout_minutes, "
            "model_version_id FROM coding_time_days ORDER BY date DESC LIMIT ?",
            [int(days)],
        )
    )
    latest = list(
        db.query(
            "SELECT v.id, v.version, v.metrics, v.data, v.ended_at FROM model_versions v "
            "JOIN models m ON m.id = v.model_id JOIN repos r ON r.id = m.repo_id "
            "WHERE r.path = ? AND m.name = ? ORDER BY v.version DESC LIMIT 1",
            [BUILTIN_REPO_PATH, MODEL_NAME],
        )
    )
    model = None
    if latest:
        row = latest[0]
        model = {
            "model_version_id": row["id"],
            "version": row["version"],
            "metrics": json.loads(row["metrics"] or "{}"),
            "events_fingerprint": json.loads(row["data"] or "{}")
            .get("events", {})
            .get("fingerprint"),
            "fitted_at": row["ended_at"],
        }
    return {"model": model, "days": list(reversed(rows))}
