"""Deleting versions and collecting the blobs and run folders nothing kept references."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger import write_transaction
from agent.ledger.artifacts import DIGEST_PREFIX, ArtifactStore, gc_lock
from agent.ledger.blobs import ARTIFACT, DATA, DIFF
from agent.ledger.queries import current_version
from agent.paths import WatchkeeperPaths
from agent.runs.states import ACTIVE_RUN_STATES

# A blob written or claimed (touched) this recently is never collected: a training that is
# still preparing lists its blobs in the ledger only when it records its version.
GRACE_SECONDS = 3600.0
UNLISTED = "unlisted"  # a blob no version lists at all (a training killed before recording)
RUN_FOLDERS = "run folders"
KIND_ORDER = (ARTIFACT, DATA, DIFF, UNLISTED, RUN_FOLDERS)
KIND_TITLES = {
    ARTIFACT: "artifacts",
    DATA: "data",
    DIFF: "diffs",
    UNLISTED: "unlisted blobs",
    RUN_FOLDERS: "run folders",
}
SWEEP_BATCH = 500
_HEX = frozenset("0123456789abcdef")
DAY_SECONDS = 86400.0


@dataclass(frozen=True)
class RetiredVersion:
    """A version gc marks deleted because of --keep-last / --older-than."""

    id: int
    model: str
    version: int


@dataclass(frozen=True)
class StoredBlob:
    """A complete blob of the store, as gc found it."""

    digest: str
    path: Path
    size: int
    mtime: float


@dataclass(frozen=True)
class RunFolder:
    """A run folder gc removes, with the bytes it holds."""

    run_id: str
    path: Path
    size: int
    for_age: bool  # chosen because it ended before --older-than, not because it is deleted


@dataclass
class GcPlan:
    """What a gc removes: versions it marks deleted, blobs by kind, run folders."""

    retired: list[RetiredVersion] = field(default_factory=list)
    blobs: dict[str, list[StoredBlob]] = field(default_factory=dict)
    run_folders: list[RunFolder] = field(default_factory=list)
    kept_young: int = 0  # unreferenced blobs left alone because they are newer than the grace

    def totals(self) -> dict[str, tuple[int, int]]:
        """kind -> (count, bytes) of what the plan frees."""
        totals = {
            kind: (len(items), sum(b.size for b in items)) for kind, items in self.blobs.items()
        }
        totals[RUN_FOLDERS] = (len(self.run_folders), sum(f.size for f in self.run_folders))
        return totals


@dataclass
class GcResult:
    """What a gc freed (kind -> count, bytes), and what it found in use after all."""

    freed: dict[str, list[int]] = field(default_factory=dict)
    kept_in_use: int = 0

    def add(self, kind: str, size: int) -> None:
        entry = self.freed.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += size


class VersionInUseError(WatchkeeperError):
    """A version cannot be deleted: it is running, aliased or current."""


# -- deleting versions ------------------------------------------------------------------


def protected_reasons(db: Database, version: dict[str, Any]) -> list[str]:
    """Why a version should not be deleted: its aliases, being current (empty when none)."""
    reasons = [
        f"alias {alias}"
        for (alias,) in db.execute(
            "SELECT alias FROM version_aliases WHERE version_id = ? AND moved_at IS NULL "
            "ORDER BY alias",
            [int(version["id"])],
        )
    ]
    current = current_version(db, int(version["model_id"]))
    if current is not None and int(current["id"]) == int(version["id"]):
        reasons.append("the current version")
    return reasons


def is_running(db: Database, version: dict[str, Any]) -> bool:
    """True when the version's run has not ended (it is queued, starting or running)."""
    if version["status"] == "running":
        return True
    if not version.get("run_id"):
        return False
    marks = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    row = db.execute(
        f"SELECT 1 FROM runs WHERE id = ? AND state IN ({marks})",
        [version["run_id"], *ACTIVE_RUN_STATES],
    ).fetchone()
    return row is not None


def delete_version(db: Database, version: dict[str, Any], *, force: bool = False) -> bool:
    """Mark a version deleted (call inside a write transaction); False when it already was.

    A running version is always refused; an aliased or current one unless `force`.
    """
    label = f"{version['model']}@{version['version']}"
    if is_running(db, version):
        raise VersionInUseError(
            f"{label} is still running; wait for it or cancel it "
            f"(`watchkeeper runs cancel {version['run_id']}`), then delete it"
        )
    reasons = protected_reasons(db, version)
    if reasons and not force:
        raise VersionInUseError(
            f"{label} is {' and '.join(reasons)}; move the alias or promote another version "
            "first, or pass --force to delete it anyway"
        )
    cursor = db.execute(
        "UPDATE model_versions SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
        [time.time(), int(version["id"])],
    )
    return cursor.rowcount > 0


# -- planning ---------------------------------------------------------------------------


def protected_version_ids(db: Database) -> set[int]:
    """Versions gc never retires: aliased, current, running, or reproduced by a running run."""
    marks = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    protected = {
        int(row[0])
        for row in db.execute(
            "SELECT DISTINCT version_id FROM version_aliases WHERE moved_at IS NULL"
        )
    }
    protected |= {
        int(row[0])
        for row in db.execute(
            "SELECT v.id FROM model_versions v LEFT JOIN runs r ON r.id = v.run_id "
            f"WHERE v.status = 'running' OR r.state IN ({marks})",
            list(ACTIVE_RUN_STATES),
        )
    }
    protected |= _reproduced_by_active_runs(db)
    for (model_id,) in db.execute("SELECT id FROM models").fetchall():
        current = current_version(db, int(model_id))
        if current is not None:
            protected.add(int(current["id"]))
    return protected


def _reproduced_by_active_runs(db: Database) -> set[int]:
    marks = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    return {
        int(row[0])
        for row in db.execute(
            "SELECT v.reproduction_of FROM model_versions v JOIN runs r ON r.id = v.run_id "
            f"WHERE v.reproduction_of IS NOT NULL AND r.state IN ({marks})",
            list(ACTIVE_RUN_STATES),
        )
    }


def versions_to_retire(
    db: Database, *, keep_last: int | None, older_than_days: float | None, now: float
) -> list[RetiredVersion]:
    """Versions not yet deleted that fall outside the newest `keep_last` of their model and
    (when given) started more than `older_than_days` ago; protected versions are left out.

    With neither limit, nothing is retired: gc never deletes versions by itself.
    """
    if keep_last is None and older_than_days is None:
        return []
    conditions = ["deleted_at IS NULL"]
    outer = []
    parameters: list[Any] = []
    if keep_last is not None:
        outer.append("rank > ?")
        parameters.append(keep_last)
    if older_than_days is not None:
        outer.append("COALESCE(started_at, ended_at, 0) < ?")
        parameters.append(now - older_than_days * DAY_SECONDS)
    rows = db.execute(
        "SELECT id, model, version FROM ("
        "  SELECT v.id, m.name AS model, v.version, v.started_at, v.ended_at,"
        "  ROW_NUMBER() OVER (PARTITION BY v.model_id ORDER BY v.version DESC) AS rank"
        "  FROM model_versions v JOIN models m ON m.id = v.model_id"
        f"  WHERE {' AND '.join('v.' + c for c in conditions)}"
        f") WHERE {' AND '.join(outer)} ORDER BY model, version",
        parameters,
    ).fetchall()
    protected = protected_version_ids(db)
    return [
        RetiredVersion(int(row[0]), str(row[1]), int(row[2]))
        for row in rows
        if int(row[0]) not in protected
    ]


def referenced_blobs(db: Database, retiring: set[int]) -> tuple[set[str], dict[str, str]]:
    """(digests kept, digest -> kind of the blobs only deleted versions list).

    A blob is kept when a version not deleted (nor being retired) lists it, when a deleted
    version reproduced by a running run lists it, when a snapshot not deleted holds it
    (`snapshot_blobs`), or when the newest snapshot of a data source names it.
    """
    kept: set[str] = set()
    kinds: dict[str, str] = {}
    for digest, kind, version_id, deleted in db.execute(
        "SELECT b.digest, b.kind, b.version_id, v.deleted_at IS NOT NULL "
        "FROM version_blobs b JOIN model_versions v ON v.id = b.version_id"
    ):
        if deleted or version_id in retiring:
            kinds.setdefault(digest, kind)
        else:
            kept.add(digest)
    for version_id in _reproduced_by_active_runs(db):
        kept.update(
            str(row[0])
            for row in db.execute(
                "SELECT digest FROM version_blobs WHERE version_id = ?", [version_id]
            )
        )
    for digest, deleted in db.execute(
        "SELECT b.digest, s.deleted_at IS NOT NULL "
        "FROM snapshot_blobs b JOIN data_snapshots s ON s.id = b.snapshot_id"
    ):
        if deleted:
            kinds.setdefault(digest, DATA)
        else:
            kept.add(digest)
    kept.update(_latest_snapshot_digests(db))
    return kept, kinds


def _latest_snapshot_digests(db: Database) -> set[str]:
    return {
        DIGEST_PREFIX + str(row[0])
        for row in db.execute(
            "SELECT f.digest FROM data_snapshot_files f WHERE f.digest IS NOT NULL AND "
            "f.snapshot_id IN (SELECT MAX(id) FROM data_snapshots WHERE deleted_at IS NULL "
            "GROUP BY source_id)"
        )
    }


def stored_blobs(root: Path) -> Iterator[StoredBlob]:
    """Every complete blob of the store (not copies in progress, nor set-aside damaged ones)."""
    try:
        folders = list(os.scandir(root))
    except FileNotFoundError:
        return
    for folder in folders:
        name = folder.name
        if len(name) != 2 or not _HEX.issuperset(name) or not folder.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(folder.path):
            rest = entry.name
            if len(rest) != 62 or not _HEX.issuperset(rest):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield StoredBlob(
                DIGEST_PREFIX + name + rest, Path(entry.path), info.st_size, info.st_mtime
            )


def run_folders_to_remove(
    db: Database,
    runs_root: Path,
    *,
    older_than_days: float | None,
    now: float,
    retiring: set[int],
) -> list[RunFolder]:
    """Folders under `runs_root` of ended runs whose version is deleted (or being retired),
    or, with `older_than_days`, that ended longer ago than that."""
    marks = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    cutoff = now - older_than_days * DAY_SECONDS if older_than_days is not None else None
    chosen = []
    for run_id, ended_at, version_id, deleted in db.execute(
        "SELECT r.id, r.ended_at, v.id, v.deleted_at IS NOT NULL FROM runs r "
        f"LEFT JOIN model_versions v ON v.run_id = r.id WHERE r.state NOT IN ({marks})",
        list(ACTIVE_RUN_STATES),
    ):
        gone = bool(deleted) or (version_id is not None and int(version_id) in retiring)
        old = cutoff is not None and ended_at is not None and ended_at < cutoff
        if not (gone or old):
            continue
        folder = runs_root / str(run_id)
        if folder.is_dir() and not folder.is_symlink():
            chosen.append(RunFolder(str(run_id), folder, _folder_size(folder), old and not gone))
    return chosen


def _folder_size(folder: Path) -> int:
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def plan_gc(
    db: Database,
    paths: WatchkeeperPaths,
    *,
    keep_last: int | None = None,
    older_than_days: float | None = None,
    grace_seconds: float = GRACE_SECONDS,
    now: float | None = None,
) -> GcPlan:
    """What `gc` would remove, changing nothing (this is `gc --dry-run`)."""
    now = time.time() if now is None else now
    if keep_last is not None and keep_last < 0:
        raise WatchkeeperError(f"--keep-last {keep_last}: give 0 or more versions to keep")
    if older_than_days is not None and older_than_days < 0:
        raise WatchkeeperError(f"--older-than {older_than_days:g}: give 0 or more days")
    plan = GcPlan()
    plan.retired = versions_to_retire(
        db, keep_last=keep_last, older_than_days=older_than_days, now=now
    )
    retiring = {version.id for version in plan.retired}
    kept, kinds = referenced_blobs(db, retiring)
    young = now - grace_seconds
    for blob in stored_blobs(paths.artifacts):
        if blob.digest in kept:
            continue
        if blob.mtime > young:
            plan.kept_young += 1
            continue
        plan.blobs.setdefault(kinds.get(blob.digest, UNLISTED), []).append(blob)
    plan.run_folders = run_folders_to_remove(
        db, paths.runs, older_than_days=older_than_days, now=now, retiring=retiring
    )
    return plan


# -- sweeping ---------------------------------------------------------------------------


def retire_versions(db: Database, versions: Iterable[RetiredVersion]) -> int:
    """Mark versions deleted in one transaction, re-checking that none became protected."""
    chosen = [version.id for version in versions]
    if not chosen:
        return 0
    with write_transaction(db):
        protected = protected_version_ids(db)
        now = time.time()
        marked = 0
        for version_id in chosen:
            if version_id in protected:
                continue
            marked += db.execute(
                "UPDATE model_versions SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                [now, version_id],
            ).rowcount
    return marked


def sweep_blobs(
    db: Database, store: ArtifactStore, plan: GcPlan, *, grace_seconds: float = GRACE_SECONDS
) -> GcResult:
    """Remove the planned blobs, a batch at a time, each re-checked before it goes.

    For each batch, under the store's exclusive gc lock (so no writer can claim a blob in
    between) and inside a ledger write transaction (so no version can start listing one):
    blobs that a kept version, a kept snapshot or the newest snapshot now lists, or that were
    written or claimed within the grace period, are kept; the `version_blobs` and
    `snapshot_blobs` rows of deleted versions and snapshots naming the others are removed and
    committed; only then are the files unlinked. A kill at any point
    leaves every listed blob in the store (at worst an unlisted blob stays for the next gc).
    """
    result = GcResult()
    planned = [(kind, blob) for kind, blobs in plan.blobs.items() for blob in blobs]
    if not planned:
        return result
    store.root.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(planned), SWEEP_BATCH):
        batch = planned[start : start + SWEEP_BATCH]
        with gc_lock(store.root, exclusive=True):
            doomed = _recheck(db, batch, grace_seconds, result)
            for _, blob in doomed:
                with contextlib.suppress(FileNotFoundError):
                    blob.path.unlink()
        for kind, blob in doomed:
            result.add(kind, blob.size)
    return result


def _recheck(
    db: Database,
    batch: list[tuple[str, StoredBlob]],
    grace_seconds: float,
    result: GcResult,
) -> list[tuple[str, StoredBlob]]:
    """The blobs of `batch` still unreferenced and old, their deleted versions' rows removed
    (committed before returning)."""
    digests = [blob.digest for _, blob in batch]
    marks = ", ".join("?" for _ in digests)
    with write_transaction(db):
        listed = {
            str(row[0])
            for row in db.execute(
                f"SELECT b.digest FROM version_blobs b JOIN model_versions v "
                f"ON v.id = b.version_id WHERE b.digest IN ({marks}) AND v.deleted_at IS NULL",
                digests,
            )
        }
        listed |= {
            str(row[0])
            for row in db.execute(
                f"SELECT b.digest FROM snapshot_blobs b JOIN data_snapshots s "
                f"ON s.id = b.snapshot_id WHERE b.digest IN ({marks}) AND s.deleted_at IS NULL",
                digests,
            )
        }
        listed |= _latest_snapshot_digests(db) & set(digests)
        reproduced = _reproduced_by_active_runs(db)
        if reproduced:
            listed |= {
                str(row[0])
                for row in db.execute(
                    f"SELECT digest FROM version_blobs WHERE version_id IN "
                    f"({', '.join('?' for _ in reproduced)})",
                    list(reproduced),
                )
            }
        young = time.time() - grace_seconds
        doomed = []
        for kind, blob in batch:
            try:
                mtime = blob.path.stat().st_mtime
            except FileNotFoundError:
                continue
            if blob.digest in listed or mtime > young:
                result.kept_in_use += 1
                continue
            doomed.append((kind, blob))
        gone = [blob.digest for _, blob in doomed]
        if gone:
            gone_marks = ", ".join("?" for _ in gone)
            db.execute(f"DELETE FROM version_blobs WHERE digest IN ({gone_marks})", gone)
            db.execute(f"DELETE FROM snapshot_blobs WHERE digest IN ({gone_marks})", gone)
    return doomed


def remove_run_folders(db: Database, folders: list[RunFolder], result: GcResult) -> None:
    """Remove planned run folders, each re-checked: its run ended, and its version is deleted
    (unless the folder was chosen for its age)."""
    marks = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    for folder in folders:
        row = db.execute(
            f"SELECT r.state IN ({marks}), v.id IS NOT NULL AND v.deleted_at IS NULL "
            "FROM runs r LEFT JOIN model_versions v ON v.run_id = r.id WHERE r.id = ?",
            [*ACTIVE_RUN_STATES, folder.run_id],
        ).fetchone()
        if row is not None and (row[0] or (row[1] and not folder.for_age)):
            continue
        shutil.rmtree(folder.path, ignore_errors=True)
        result.add(RUN_FOLDERS, folder.size)


def collect(
    db: Database,
    paths: WatchkeeperPaths,
    *,
    keep_last: int | None = None,
    older_than_days: float | None = None,
    grace_seconds: float = GRACE_SECONDS,
) -> tuple[GcPlan, GcResult]:
    """Run gc: mark the retired versions deleted (committed first), then sweep.

    The sweep re-checks every blob and run folder against the ledger as it is then, so a
    version that became protected in between keeps what it lists.

    >>> from agent.ledger import open_ledger
    >>> plan, result = collect(open_ledger(), WatchkeeperPaths.from_environment())
    >>> plan.retired
    []
    """
    plan = plan_gc(
        db,
        paths,
        keep_last=keep_last,
        older_than_days=older_than_days,
        grace_seconds=grace_seconds,
    )
    retire_versions(db, plan.retired)
    result = sweep_blobs(db, ArtifactStore(paths.artifacts), plan, grace_seconds=grace_seconds)
    remove_run_folders(db, plan.run_folders, result)
    return plan, result
