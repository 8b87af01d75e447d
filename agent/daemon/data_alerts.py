"""The fast path from a data change to a stale alert: which trained versions depend on a source.

The full staleness check (code, params, drift) runs in a child process and takes a second or
two; this module answers the common question "did a data dep of a trained model just change?"
inside the agent in milliseconds, from fingerprints it already holds. The child's findings
later enrich the same alert with drift.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

MAX_NAMED_FILES = 8


@dataclass(frozen=True)
class DependentVersion:
    """The newest succeeded version of a model, with one of its data deps."""

    repo: Path
    model: str
    model_id: int
    version_id: int
    version: int
    dep: str
    recorded_snapshot_id: int | None
    recorded_fingerprint: str | None
    data_deps: list[str]


def dependent_versions(db: Database, source: Path) -> list[DependentVersion]:
    """Newest succeeded versions whose data deps resolve to `source`."""
    rows = db.execute(
        "SELECT v.id, v.version, v.model_id, v.data, m.name, r.path FROM model_versions v "
        "JOIN models m ON m.id = v.model_id JOIN repos r ON r.id = m.repo_id "
        "WHERE v.status = 'succeeded' AND v.version = (SELECT MAX(version) FROM model_versions "
        "WHERE model_id = v.model_id AND status = 'succeeded')"
    ).fetchall()
    found = []
    for version_id, version, model_id, data_json, name, repo_path in rows:
        try:
            data: dict[str, Any] = json.loads(data_json or "{}")
        except json.JSONDecodeError:
            continue
        for dep, record in data.items():
            path = Path(dep) if Path(dep).is_absolute() else Path(repo_path) / dep
            if path != source:
                continue
            record = record if isinstance(record, dict) else {}
            found.append(
                DependentVersion(
                    repo=Path(repo_path),
                    model=name,
                    model_id=model_id,
                    version_id=version_id,
                    version=version,
                    dep=dep,
                    recorded_snapshot_id=record.get("snapshot_id"),
                    recorded_fingerprint=record.get("fingerprint"),
                    data_deps=sorted(data),
                )
            )
    return found


def _name_files(files: list[str]) -> str:
    named = ", ".join(files[:MAX_NAMED_FILES])
    more = len(files) - MAX_NAMED_FILES
    return named + (f" and {more} more" if more > 0 else "")


def change_message(dep: str, added: list[str], removed: list[str], modified: list[str]) -> str:
    """One reason line, e.g. "data changed in data/train.csv: 1 modified (train.csv)"."""
    parts = [
        f"{len(files)} {word} ({_name_files(sorted(files))})"
        for word, files in (("added", added), ("removed", removed), ("modified", modified))
        if files
    ]
    return f"data changed in {dep}: " + ("; ".join(parts) or "content changed")


def state_key(version_id: int, data_token: list[str | None]) -> str:
    """The dedupe key of "this version, with its data deps in exactly this state"."""
    text = json.dumps(["data-state", version_id, data_token])
    return "stale:" + hashlib.sha256(text.encode()).hexdigest()[:32]
