"""Collect a remote's upload cache: its ended runs' folders and the blobs nothing links."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from agent.ledger.gc import DAY_SECONDS
from agent.remote.config import load_remote
from agent.remote.connection import RemoteSession
from agent.runs.states import ACTIVE_RUN_STATES


@dataclass(frozen=True)
class RemoteFreed:
    """What gc freed (or would free) on one remote; `busy` when an upload held its cache."""

    remote: str
    busy: bool
    run_folders: int
    run_folder_bytes: int
    blobs: int
    blob_bytes: int


def remote_run_dirs(
    db: Database, remote: str, *, older_than_days: float | None, now: float
) -> list[str]:
    """The remote run folders of ended runs on `remote` whose version is deleted, or (with
    `older_than_days`) that ended longer ago than that."""
    marks = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    cutoff = now - older_than_days * DAY_SECONDS if older_than_days is not None else None
    chosen = []
    for detail, ended_at, deleted in db.execute(
        "SELECT r.detail, r.ended_at, v.deleted_at IS NOT NULL FROM runs r "
        f"LEFT JOIN model_versions v ON v.run_id = r.id WHERE r.remote = ? "
        f"AND r.state NOT IN ({marks})",
        [remote, *ACTIVE_RUN_STATES],
    ):
        old = cutoff is not None and ended_at is not None and ended_at < cutoff
        if not (deleted or old):
            continue
        try:
            folder = json.loads(detail or "{}").get("remote_run_dir")
        except json.JSONDecodeError:
            continue
        if isinstance(folder, str) and folder:
            chosen.append(folder)
    return chosen


def collect_remote_cache(
    db: Database,
    name: str,
    *,
    dry_run: bool,
    older_than_days: float | None = None,
    now: float,
) -> RemoteFreed:
    """Remove (or with `dry_run` count) the remote's run folders of deleted or old ended runs
    and the cache blobs no remaining run folder links. Nothing is removed while an upload to
    that cache is in progress (`busy`)."""
    run_dirs = remote_run_dirs(db, name, older_than_days=older_than_days, now=now)
    with RemoteSession(load_remote(name), retry_for=30.0) as session:
        request = json.dumps({"run_dirs": run_dirs, "dry_run": dry_run}) + "\n"
        reply: dict[str, Any] = session.helper_json(
            "gc", session.cache_dir, session.runs_dir, stdin=request.encode()
        )
    return RemoteFreed(
        name,
        bool(reply["busy"]),
        int(reply["run_folders"]),
        int(reply["run_folder_bytes"]),
        int(reply["blobs"]),
        int(reply["blob_bytes"]),
    )
