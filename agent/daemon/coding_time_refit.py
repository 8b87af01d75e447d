"""The nightly coding-time refit, bookkept in the ledger as versions of the model `coding-time`."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlite_utils import Database

from agent.activity.coding_time_store import (
    WINDOW_DAYS,
    StoredEstimate,
    UserEvents,
    compute_estimate,
    load_user_events,
    read_stored,
    write_stored,
)
from agent.ledger import write_transaction
from agent.ledger.queries import insert_row, next_version

if TYPE_CHECKING:
    from agent.daemon.ports import AgentCore

BUILTIN_REPO_PATH = "builtin:watchkeeper"
"""The ledger's `repos` row that owns built-in models (it is not a directory)."""
MODEL_NAME = "coding-time"
COMMIT_SETTLE_SECONDS = 5.0
"""How long after a commit the estimate is refreshed (other commits in a series join it)."""
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
    """UTC times and kinds (0 commit, 1 save) of the user's activity since `since`."""
    events = load_user_events(db, identities, since)
    return events.times, events.kinds


def event_set_fingerprint(times: np.ndarray, kinds: np.ndarray) -> str:
    """A hash of exactly the events the model was fitted to."""
    return UserEvents(times, kinds, [], 0).fingerprint


class RefreshAfterActivity:
    """Queues one estimate refresh on the agent's worker once a burst of activity has settled:
    `COMMIT_SETTLE_SECONDS` after a commit, `coding_time_settle_seconds` after saves.

    The wait happens on this object's own thread, not in the worker's queue, so the worker
    stays idle (and other jobs are not held up) while activity settles. Activity during the
    wait pushes the refresh back, but never past five waits after the burst began.
    """

    def __init__(self, core: AgentCore) -> None:
        self.core = core
        self._condition = threading.Condition()
        self._due: float | None = None
        self._deadline = 0.0
        self._trigger = ""
        self._stopping = False
        self._thread: threading.Thread | None = None

    def note(self, after: str) -> None:
        """Activity happened (`after` is "commit", "saves" or "start")."""
        settle = self.core.settings.coding_time_settle_seconds
        delay = min(settle, COMMIT_SETTLE_SECONDS) if after in ("commit", "start") else settle
        now = time.monotonic()
        with self._condition:
            if self._stopping:
                return
            if self._due is None:
                self._deadline = now + max(delay, settle) * 5
            self._due = min(now + delay, self._deadline)
            self._trigger = after
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._wait, name="wk-coding-time", daemon=True
                )
                self._thread.start()
            self._condition.notify_all()

    @property
    def waiting(self) -> bool:
        with self._condition:
            return self._due is not None

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()

    def _wait(self) -> None:
        while True:
            with self._condition:
                while not self._stopping and (self._due is None or self._due > time.monotonic()):
                    timeout = None if self._due is None else self._due - time.monotonic()
                    self._condition.wait(timeout)
                if self._stopping:
                    return
                trigger, self._due = self._trigger, None
            self.core.worker.request(
                "coding_time", functools.partial(refresh_and_publish, self.core, trigger)
            )


def refresh_and_publish(core: AgentCore, trigger: str) -> dict[str, Any]:
    """`refresh`, then tell the socket's subscribers (the app) that the estimate changed."""
    result = refresh(core, trigger=trigger)
    if not result.get("unchanged"):
        core.publish("coding_time", result)
    return result


def _latest_version(db: Database, model_id: int) -> tuple[int, int, str | None] | None:
    row = db.execute(
        "SELECT id, version, data FROM model_versions WHERE model_id = ? "
        "ORDER BY version DESC LIMIT 1",
        [model_id],
    ).fetchone()
    if row is None:
        return None
    fingerprint = json.loads(row[2] or "{}").get("events", {}).get("fingerprint")
    return int(row[0]), int(row[1]), fingerprint


def refresh(core: AgentCore, *, trigger: str, record_version: bool = False) -> dict[str, Any]:
    """Re-estimate the last 90 days from the ledger and store it for every view.

    Nothing is recomputed when the stored estimate already covers the same events up to
    today. With `record_version` (the nightly refit, or a refit asked for), a fit of a new
    set of events is also bookkept as a version of the built-in model `coding-time`.
    """
    db = core.db()
    started = time.time()
    events = load_user_events(db, core.identities, started - WINDOW_DAYS * 86400)
    fingerprint = events.fingerprint
    stored = read_stored(db)
    model_id: int | None = None
    latest = None
    if record_version:
        with write_transaction(db):
            model_id = _builtin_model_id(db)
        latest = _latest_version(db, model_id)
    stored_is_current = (
        stored is not None
        and stored.fingerprint == fingerprint
        and stored.dates[-1] == str(stored.today())
    )
    version_is_current = not record_version or (latest is not None and latest[2] == fingerprint)
    if events.times.size == 0 or (stored_is_current and version_is_current):
        if stored is not None and stored.events_through_id != events.through_id:
            with write_transaction(db):  # newer events, none of them the user's: still current
                db.execute(
                    "UPDATE coding_time_estimate SET events_through_id = ?", [events.through_id]
                )
        return {
            "model_version_id": latest[0] if latest else None,
            "version": latest[1] if latest else None,
            "unchanged": True,
            "events": int(events.times.size),
        }
    fresh = compute_estimate(events, identities=core.identities, trigger=trigger, now=started)
    summary = fresh.model
    version_id: int | None = None
    version: int | None = None
    with write_transaction(db):
        if record_version and model_id is not None:
            if latest is not None and latest[2] == fingerprint:
                version_id, version = latest[0], latest[1]
            else:
                version, version_id = _record_version(core, db, model_id, fresh, started)
        elif latest is not None and latest[2] == fingerprint:
            version_id, version = latest[0], latest[1]
        fresh.model_version_id = version_id
        write_stored(db, fresh)
    return {
        "model_version_id": version_id,
        "version": version,
        "unchanged": False,
        "trigger": trigger,
        "events": int(events.times.size),
        "days": fresh.estimate.n_days,
        "today_minutes": round(float(fresh.estimate.coding_minutes[-1]), 1),
        "log_likelihood": summary["log_likelihood"],
        "fingerprint": fingerprint,
    }


def _record_version(
    core: AgentCore, db: Database, model_id: int, fresh: StoredEstimate, started: float
) -> tuple[int, int]:
    summary = fresh.model
    counts = fresh.estimate.event_counts
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
                "identities": core.identities,
                "window_days": WINDOW_DAYS,
            },
            "metrics": {
                "log_likelihood": summary["log_likelihood"],
                "n_iter": summary["n_iter"],
                "converged": 1.0 if summary["converged"] else 0.0,
                "commits": float(counts.get("commit", 0)),
                "saves": float(counts.get("save", 0)),
            },
            "data": {"events": {"snapshot_id": None, "fingerprint": fresh.fingerprint}},
            "code": {},
            "artifacts": {},
            "executor": "agent",
            "host": socket.gethostname(),
            "started_at": started,
            "ended_at": time.time(),
            "exit_code": 0,
        },
    )
    return version, version_id


def refit(service: AgentCore) -> dict[str, Any]:
    """The nightly refit: the 90-day estimate stored for the views, bookkept as a version."""
    return refresh(service, trigger="nightly", record_version=True)


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
