"""Data deps through the data package: snapshot one for a version, or say what changed since."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlite_utils import Database

from agent.paths import WatchkeeperPaths

if TYPE_CHECKING:
    from agent.data.fingerprint import StatCache


@dataclass(frozen=True)
class DataDepSnapshot:
    """What a version records per data dep: the ledger snapshot and its fingerprint."""

    snapshot_id: int
    fingerprint: str


@dataclass(frozen=True)
class DataDepChange:
    """How a data dep differs from the snapshot a version was trained on."""

    fingerprint: str
    added: list[str]
    removed: list[str]
    modified: list[str]
    drift: list[str]


def _stat_cache(paths: WatchkeeperPaths | None) -> StatCache:
    from agent.data.fingerprint import StatCache

    return StatCache.open(paths or WatchkeeperPaths.from_environment())


def current_fingerprint(path: Path, paths: WatchkeeperPaths | None = None) -> str:
    """The fingerprint digest of a data file or folder now."""
    from agent.data.fingerprint import fingerprint

    return fingerprint(path, cache=_stat_cache(paths)).digest


def snapshot_data_dep(
    db: Database,
    path: Path,
    paths: WatchkeeperPaths | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> DataDepSnapshot:
    """Fingerprint a data dep and record it as a ledger snapshot (idempotent).

    `on_progress(bytes_hashed, bytes_to_hash)` is called while files are read.
    """
    from agent.data.fingerprint import fingerprint
    from agent.data.snapshots import record_snapshot

    current = fingerprint(path, cache=_stat_cache(paths), on_progress=on_progress)
    return DataDepSnapshot(record_snapshot(db, current), current.digest)


def data_dep_change(
    db: Database,
    snapshot_id: int,
    path: Path,
    paths: WatchkeeperPaths | None = None,
    *,
    drift: bool = True,
) -> DataDepChange | None:
    """None when the data dep still matches the snapshot; else the files and drift that differ.

    With `drift=False` the per-column drift tests (and scipy) are skipped.
    """
    from agent.data.fingerprint import fingerprint
    from agent.data.snapshots import diff_fingerprints, load_snapshot

    current = fingerprint(path, cache=_stat_cache(paths))
    recorded = load_snapshot(db, snapshot_id)
    if current.digest == recorded.digest:
        return None
    difference = diff_fingerprints(recorded, current)
    reports = []
    if drift:
        from agent.data.drift import drift_against_snapshot

        reports = drift_against_snapshot(db, snapshot_id, path)
    return DataDepChange(
        fingerprint=current.digest,
        added=sorted(difference.added),
        removed=sorted(difference.removed),
        modified=sorted(difference.modified),
        drift=[f"{report.path}: {report.summary()}" for report in reports],
    )
