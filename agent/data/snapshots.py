"""Data snapshots in the ledger: record a fingerprint once, load it back, diff two of them."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from agent.data.fingerprint import DataFingerprint, FileEntry, SkippedEntry
from agent.data.tabular import is_tabular, profile_csv
from agent.errors import WatchkeeperError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FingerprintDiff:
    """Relative paths added, removed and modified between two fingerprints (each sorted)."""

    added: list[str]
    removed: list[str]
    modified: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.modified)


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot row with its source, as listed by `data` commands."""

    id: int
    source: str
    kind: str
    fingerprint: str
    n_files: int
    total_bytes: int
    taken_at: float
    skipped: tuple[SkippedEntry, ...] = ()


def diff_fingerprints(old: DataFingerprint, new: DataFingerprint) -> FingerprintDiff:
    """Which files were added, removed or changed in content from `old` to `new`.

    Example::

        diff_fingerprints(load_snapshot(db, 1), fingerprint(Path("data")))
        # FingerprintDiff(added=['new.csv'], removed=[], modified=['train.csv'])
    """
    old_files, new_files = old.files, new.files
    if old.digest == new.digest and old.kind == new.kind:
        return FingerprintDiff([], [], [])
    old_paths, new_paths = set(old_files), set(new_files)
    modified = [
        path for path in old_paths & new_paths if old_files[path].digest != new_files[path].digest
    ]
    return FingerprintDiff(
        added=sorted(new_paths - old_paths),
        removed=sorted(old_paths - new_paths),
        modified=sorted(modified),
    )


@contextmanager
def _writing(db: Database) -> Iterator[None]:
    try:
        from agent.ledger import write_transaction
    except ImportError:  # pragma: no cover - the ledger package is part of the agent
        with db.conn:
            yield
        return
    with write_transaction(db):
        yield


def record_snapshot(db: Database, fp: DataFingerprint) -> int:
    """Store a fingerprint as a snapshot of its source and return the snapshot id.

    Recording the same fingerprint of the same source again returns the existing id (its list of
    skipped entries stays the one recorded first). The column profile of every CSV/TSV file
    whose content is not profiled yet is stored too (keyed by the file's digest); a file that
    cannot be parsed gets its error stored instead, with a warning.

    Example::

        record_snapshot(db, fingerprint(Path("data")))  # 3
    """
    profiles = _new_profiles(db, fp)
    source_path = str(fp.root)
    with _writing(db):
        row = db.execute("SELECT id FROM data_sources WHERE path = ?", [source_path]).fetchone()
        if row is None:
            cursor = db.execute(
                "INSERT INTO data_sources (path, kind, added_at) VALUES (?, ?, ?)",
                [source_path, fp.kind, time.time()],
            )
            source_id = int(cursor.lastrowid or 0)
        else:
            source_id = int(row[0])
            db.execute("UPDATE data_sources SET kind = ? WHERE id = ?", [fp.kind, source_id])
        for digest, profile in profiles.items():
            db.execute(
                "INSERT OR IGNORE INTO column_profiles (digest, profile) VALUES (?, ?)",
                [digest, profile],
            )
        existing = db.execute(
            "SELECT id FROM data_snapshots WHERE source_id = ? AND fingerprint = ?",
            [source_id, fp.digest],
        ).fetchone()
        if existing is not None:
            # Recorded again: wanted again, so a deleted snapshot is no longer deleted.
            db.execute("UPDATE data_snapshots SET deleted_at = NULL WHERE id = ?", [existing[0]])
            return int(existing[0])
        cursor = db.execute(
            "INSERT INTO data_snapshots"
            " (source_id, fingerprint, n_files, total_bytes, taken_at, skipped)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                source_id,
                fp.digest,
                fp.n_files,
                fp.total_bytes,
                time.time(),
                _skipped_json(fp.skipped),
            ],
        )
        snapshot_id = int(cursor.lastrowid or 0)
        db.conn.executemany(
            "INSERT INTO data_snapshot_files (snapshot_id, path, size, mtime_ns, digest)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                (snapshot_id, entry.path, entry.size, entry.mtime_ns, entry.digest)
                for entry in fp.files.values()
            ),
        )
    return snapshot_id


def _skipped_json(skipped: tuple[SkippedEntry, ...]) -> str:
    return json.dumps([entry.to_json() for entry in skipped], separators=(",", ":"))


def _skipped_from_json(text: str | None) -> tuple[SkippedEntry, ...]:
    """The skipped entries stored with a snapshot (none for a snapshot recorded before the list)."""
    if not text:
        return ()
    return tuple(SkippedEntry(str(item["path"]), str(item["reason"])) for item in json.loads(text))


def _new_profiles(db: Database, fp: DataFingerprint) -> dict[str, str]:
    """JSON profiles of the tabular files of `fp` whose digest has no profile yet."""
    wanted = {entry.digest: entry for entry in fp.files.values() if is_tabular(entry.path)}
    if not wanted:
        return {}
    digests = list(wanted)
    known: set[str] = set()
    for start in range(0, len(digests), 500):
        chunk = digests[start : start + 500]
        placeholders = ",".join("?" * len(chunk))
        query = f"SELECT digest FROM column_profiles WHERE digest IN ({placeholders})"
        known.update(row[0] for row in db.execute(query, chunk).fetchall())
    profiles = {}
    for digest, entry in wanted.items():
        if digest in known:
            continue
        path = fp.root / entry.path if fp.kind == "folder" else fp.root
        try:
            profile = profile_csv(path, expected_digest=digest).to_json()
        except WatchkeeperError as error:
            log.warning("no column profile for %s: %s", path, error)
            profile = {"error": str(error)}
        profiles[digest] = json.dumps(profile, separators=(",", ":"))
    return profiles


def load_snapshot(db: Database, snapshot_id: int) -> DataFingerprint:
    """The fingerprint stored as snapshot `snapshot_id`, with its source as root."""
    row = db.execute(
        "SELECT s.fingerprint, d.path, d.kind, s.skipped FROM data_snapshots s"
        " JOIN data_sources d ON d.id = s.source_id WHERE s.id = ?",
        [snapshot_id],
    ).fetchone()
    if row is None:
        raise WatchkeeperError(
            f"there is no data snapshot {snapshot_id}; `watchkeeper data snapshot PATH` records one"
        )
    digest, source, kind, skipped = row
    files: dict[str, FileEntry] = {}
    for path, size, mtime_ns, file_digest in db.execute(
        "SELECT path, size, mtime_ns, digest FROM data_snapshot_files WHERE snapshot_id = ?",
        [snapshot_id],
    ):
        _check_relative(path, snapshot_id)
        files[path] = FileEntry(path, int(size), int(mtime_ns), str(file_digest))
    ordered = dict(sorted(files.items(), key=lambda item: item[0].split("/")))
    return DataFingerprint(
        root=Path(source),
        digest=str(digest),
        files=ordered,
        kind=str(kind),
        skipped=_skipped_from_json(skipped),
    )


def _check_relative(path: str, snapshot_id: int) -> None:
    parts = path.split("/")  # not PurePosixPath: thousands of files
    if path.startswith("/") or ".." in parts or all(part in ("", ".") for part in parts):
        raise WatchkeeperError(
            f"data snapshot {snapshot_id} lists {path!r}, a path outside its folder; "
            "the ledger entry is damaged: record a new snapshot"
        )


def snapshot_info(db: Database, snapshot_id: int) -> SnapshotInfo:
    """The snapshot row and its source; a clear error when there is no such snapshot."""
    row = db.execute(
        "SELECT s.id, d.path, d.kind, s.fingerprint, s.n_files, s.total_bytes, s.taken_at,"
        " s.skipped FROM data_snapshots s JOIN data_sources d ON d.id = s.source_id WHERE s.id = ?",
        [snapshot_id],
    ).fetchone()
    if row is None:
        raise WatchkeeperError(
            f"there is no data snapshot {snapshot_id}; `watchkeeper data snapshot PATH` records one"
        )
    return SnapshotInfo(
        int(row[0]),
        row[1],
        row[2],
        row[3],
        int(row[4] or 0),
        int(row[5] or 0),
        row[6] or 0.0,
        _skipped_from_json(row[7]),
    )


def delete_snapshot(db: Database, snapshot_id: int) -> bool:
    """Mark a snapshot deleted (inside a write transaction); False when it already was.

    Its row and file list stay (versions trained on it still name it); the content it kept
    (`snapshot_blobs`) becomes collectable by `watchkeeper gc` unless something else holds it.
    Recording the same data again undeletes it.

    Example::

        with write_transaction(db):
            delete_snapshot(db, 3)  # True
    """
    snapshot_info(db, snapshot_id)  # a clear error when there is no such snapshot
    cursor = db.execute(
        "UPDATE data_snapshots SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
        [time.time(), snapshot_id],
    )
    return cursor.rowcount > 0
