"""Writing what the watchers saw into the ledger: commits, file saves and data snapshots."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.ledger import write_transaction
from agent.ledger.queries import register_repo

log = logging.getLogger(__name__)

COMMIT_BATCH = 2000
"""Commits written per transaction: a crash loses at most one uncommitted batch, never half."""


@dataclass(frozen=True)
class IngestResult:
    repo: Path
    seen: int
    added: int


def ingest_commits(
    db: Database,
    repo: Path,
    identities: list[str],
    *,
    since: int | None = None,
) -> IngestResult:
    """Record a repo's commits (idempotent) and the user's own ones as activity events.

    A commit's activity event is written in the same transaction as its row and only when its
    sha is new to the ledger, so a sha seen in two clones counts once and a crash never leaves
    one without the other. Only the agent's worker writes commits, so the shas read before
    the batches are still current when they are written.
    """
    from agent.activity.git_log import read_commits

    table = read_commits([repo], include_merges=True, since=since)
    repo_id = register_repo_once(db, repo)
    own = {email.lower() for email in identities}
    known_here = {
        row[0] for row in db.execute("SELECT sha FROM commits WHERE repo_id = ?", [repo_id])
    }
    shas = [sha.decode() for sha in table.sha]
    new_rows = [index for index, sha in enumerate(shas) if sha not in known_here]
    if not new_rows:
        return IngestResult(repo=repo, seen=len(shas), added=0)
    known_elsewhere = {
        row[0] for row in db.execute("SELECT sha FROM commits WHERE repo_id != ?", [repo_id])
    }
    emails, names = table.emails, table.names
    added = 0
    for start in range(0, len(new_rows), COMMIT_BATCH):
        batch = new_rows[start : start + COMMIT_BATCH]
        commits = []
        events = []
        for index in batch:
            code = int(table.author_code[index])
            author_time = int(table.author_time[index])
            is_merge = bool(table.is_merge[index])
            commits.append(
                (
                    repo_id,
                    shas[index],
                    names[code],
                    emails[code],
                    author_time,
                    int(table.author_tz_minutes[index]),
                    int(table.commit_time[index]),
                    int(is_merge),
                )
            )
            own_commit = not own or emails[code] in own
            if own_commit and not is_merge and shas[index] not in known_elsewhere:
                events.append((float(author_time), repo_id))
        with write_transaction(db):
            cursor = db.conn.executemany(
                "INSERT OR IGNORE INTO commits (repo_id, sha, author_name, author_email, "
                "author_time, author_tz_minutes, commit_time, is_merge) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                commits,
            )
            added += max(cursor.rowcount, 0)
            db.conn.executemany(
                "INSERT INTO activity_events (ts, kind, repo_id, path) "
                "VALUES (?, 'commit', ?, NULL)",
                events,
            )
    return IngestResult(repo=repo, seen=len(shas), added=added)


_repo_ids: dict[tuple[int, str], int] = {}
_repo_ids_lock = threading.Lock()


def register_repo_once(db: Database, repo: Path) -> int:
    """The ledger id of a repo, registering it the first time (cached per connection)."""
    key = (id(db), str(repo))
    with _repo_ids_lock:
        cached = _repo_ids.get(key)
    if cached is not None:
        return cached
    with write_transaction(db):
        repo_id = register_repo(db, repo)
    with _repo_ids_lock:
        _repo_ids[key] = repo_id
    return repo_id


class SaveCoalescer:
    """Turns a stream of file saves into at most one activity event per file per window."""

    def __init__(self, window_seconds: float = 30.0) -> None:
        self.window_seconds = window_seconds
        self._last_recorded: dict[tuple[Path, str], float] = {}
        self._pending: list[tuple[Path, str, float]] = []
        self._lock = threading.Lock()

    def note(self, repo: Path, relative_path: str, timestamp: float) -> bool:
        """Remember a save; True when it starts a new window (and so becomes an event)."""
        key = (repo, relative_path)
        with self._lock:
            last = self._last_recorded.get(key)
            if last is not None and timestamp - last < self.window_seconds:
                return False
            self._last_recorded[key] = timestamp
            self._pending.append((repo, relative_path, timestamp))
            return True

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self, db: Database) -> int:
        """Write the pending save events; forget windows that have closed."""
        with self._lock:
            pending, self._pending = self._pending, []
            horizon = time.time() - self.window_seconds
            for key in [k for k, ts in self._last_recorded.items() if ts < horizon]:
                del self._last_recorded[key]
        if not pending:
            return 0
        repo_ids = {repo: register_repo_once(db, repo) for repo in {p[0] for p in pending}}
        with write_transaction(db):
            db.conn.executemany(
                "INSERT OR IGNORE INTO activity_events (ts, kind, repo_id, path) "
                "VALUES (?, 'save', ?, ?)",
                [(round(ts, 3), repo_ids[repo], path) for repo, path, ts in pending],
            )
        return len(pending)


@dataclass
class SnapshotOutcome:
    source: Path
    snapshot_id: int
    fingerprint: str
    changed: bool
    event: dict[str, Any]
    current: Any = None
    keep_notes: tuple[str, ...] = ()  # what of its content `[watch] keep_data` could not keep

    @property
    def skipped(self) -> tuple[Any, ...]:
        """The entries left out of this snapshot (agent.data.fingerprint.SkippedEntry)."""
        return tuple(getattr(self.current, "skipped", ()))


class DataTracker:
    """Fingerprints data sources incrementally and records a snapshot when one changed."""

    def __init__(
        self,
        cache: Any = None,
        *,
        keep: tuple[str, int] = ("never", 0),
        artifacts: Path | None = None,
    ) -> None:
        self.cache = cache
        self.keep, self.keep_limit = keep  # `[watch] keep_data` and `keep_data_limit`
        self.artifacts = artifacts
        self._last: dict[Path, tuple[int, Any]] = {}

    def forget(self, source: Path) -> None:
        self._last.pop(source, None)

    def last_digest(self, source: Path) -> str | None:
        """The fingerprint digest of the source's last snapshot this agent took, if any."""
        last = self._last.get(source)
        return None if last is None else str(last[1].digest)

    def snapshot(self, db: Database, source: Path) -> SnapshotOutcome:
        """Fingerprint `source`, record the snapshot, and say whether it differs from the last."""
        from agent.data.fingerprint import fingerprint
        from agent.data.snapshots import diff_fingerprints, record_snapshot

        current = fingerprint(source, cache=self.cache)
        snapshot_id = record_snapshot(db, current)
        keep_notes = self._keep_content(db, snapshot_id, current)
        previous = self._last.get(source)
        if previous is None:
            previous = self._previous_from_ledger(db, source, snapshot_id)
        self._last[source] = (snapshot_id, current)
        event: dict[str, Any] = {
            "source": str(source),
            "snapshot_id": snapshot_id,
            "fingerprint": current.digest,
            "n_files": len(current.files),
            "total_bytes": current.total_bytes,
            "added": [],
            "removed": [],
            "modified": [],
            "skipped": [entry.to_json() for entry in current.skipped[:100]],
            "keep_notes": list(keep_notes),
        }
        changed = previous is None or previous[1].digest != current.digest
        if previous is not None and changed:
            difference = diff_fingerprints(previous[1], current)
            event["added"] = list(difference.added)[:100]
            event["removed"] = list(difference.removed)[:100]
            event["modified"] = list(difference.modified)[:100]
        return SnapshotOutcome(
            source, snapshot_id, current.digest, changed, event, current, keep_notes
        )

    def _keep_content(self, db: Database, snapshot_id: int, current: Any) -> tuple[str, ...]:
        """Keep the snapshot's content as `[watch] keep_data` says; notes of what was not."""
        if self.keep == "never" or self.artifacts is None:
            return ()
        from agent.ledger.artifacts import ArtifactStore
        from agent.runs.data_cache import keep_snapshot

        store = ArtifactStore(self.artifacts, self.cache)
        kept = keep_snapshot(db, store, snapshot_id, current, self.keep, self.keep_limit)
        for note in kept.notes:
            log.warning("snapshot %d: %s", snapshot_id, note)
        return tuple(kept.notes)

    @staticmethod
    def _previous_from_ledger(db: Database, source: Path, snapshot_id: int) -> Any:
        from agent.data.snapshots import load_snapshot

        row = db.execute(
            "SELECT s.id FROM data_snapshots s JOIN data_sources d ON d.id = s.source_id "
            "WHERE d.path = ? AND s.id != ? ORDER BY s.taken_at DESC, s.id DESC LIMIT 1",
            [str(source), snapshot_id],
        ).fetchone()
        if row is None:
            return None
        return (int(row[0]), load_snapshot(db, int(row[0])))
