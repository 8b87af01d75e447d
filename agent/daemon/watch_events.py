"""The watchers' callbacks: each queues work, and the queued jobs turn events into ledger rows.

Callbacks run on watchdog's threads and only queue; the jobs run on the agent's worker thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.daemon import stale_alerts
from agent.daemon.ingest import ingest_commits
from agent.daemon.ports import WatchingCore
from agent.daemon.stale_checks import StaleChecks

log = logging.getLogger(__name__)


class WatchEvents:
    """The agent's `WatchSink`: commits, saves, data snapshots, and what they make stale."""

    def __init__(self, core: WatchingCore, checks: StaleChecks) -> None:
        self.core = core
        self.checks = checks
        self.skipped: dict[Path, list[str]] = {}  # entries each data source leaves out

    # -- WatchSink (watchdog's threads) ---------------------------------------------------
    def git_changed(self, repo: Path) -> None:
        if self.core.paused:
            return
        self.core.worker.request(
            ("commits", repo),
            lambda: self.ingest_repo(repo, incremental=True),
            delay=self.core.settings.git_debounce_seconds,
            max_delay=5.0,
        )

    def file_saved(self, repo: Path, relative_path: str, timestamp: float) -> None:
        if self.core.paused:
            return
        if self.core.saves.note(repo, relative_path, timestamp):
            self.core.worker.request("saves", self.flush_saves, delay=1.0, max_delay=5.0)
        self._queue_repo_check(repo)

    def data_changed(self, source: Path) -> None:
        if self.core.paused:
            return
        self.core.worker.request(
            ("snapshot", source),
            lambda: self.snapshot_source(source),
            delay=self.core.settings.data_debounce_seconds,
            max_delay=self.core.settings.data_max_delay_seconds,
        )

    def root_missing(self, root: Path, kind: str) -> None:
        if self.core.paused:
            return
        self.core.worker.request(("missing", root), lambda: self._alert_missing(root, kind))

    def root_back(self, root: Path, kind: str) -> None:
        if self.core.paused:
            return  # resuming rescans every root

        def resume() -> None:
            log.info("watching %s again; rescanning it", root)
            stale_alerts.watch_back(self.core, root)
            if kind == "repo":
                self.ingest_repo(root, incremental=False)
            else:
                self.core.data.forget(root)
                self.snapshot_source(root)

        self.core.worker.request(("back", root), resume)

    # -- jobs (the worker thread) -----------------------------------------------------------
    def ingest_repo(self, repo: Path, *, incremental: bool) -> int:
        """Bring the ledger's commits of one repo up to date; returns how many were new."""
        if not (repo / ".git").exists():
            return 0
        db = self.core.db()
        since = None
        if incremental:
            row = db.execute(
                "SELECT MAX(c.author_time) FROM commits c JOIN repos r ON r.id = c.repo_id "
                "WHERE r.path = ?",
                [str(repo.resolve())],
            ).fetchone()
            if row and row[0] is not None:
                since = int(row[0]) - 7 * 86400
        result = ingest_commits(db, repo, self.core.identities, since=since)
        self.core.counters["commits_added"] += result.added
        if result.added:
            log.info("%s: %d new commits", repo, result.added)
            self._queue_repo_check(repo)
            self.core.coding_time.note("commit")
        return result.added

    def flush_saves(self) -> None:
        recorded = self.core.saves.flush(self.core.db())
        self.core.counters["saves_recorded"] += recorded
        if recorded:
            self.core.coding_time.note("saves")

    def snapshot_source(self, source: Path) -> None:
        """Re-fingerprint a data source; on change publish `snapshot` and judge its models."""
        if not source.exists():
            return
        outcome = self.core.data.snapshot(self.core.db(), source)
        self.core.counters["snapshots"] += 1
        skipped = [entry.describe() for entry in outcome.skipped]
        if skipped != self.skipped.get(source, []):
            self.skipped[source] = skipped
            if stale_alerts.watch_skipped(self.core, source, skipped) is not None:
                self.core.counters["alerts"] += 1
        if not outcome.changed:
            return
        log.info("data changed: %s (snapshot %d)", source, outcome.snapshot_id)
        self.core.publish("snapshot", outcome.event)
        self.checks.check_dependents(source)

    def _queue_repo_check(self, repo: Path) -> None:
        self.core.worker.request(
            ("staleness", repo),
            lambda: self.checks.check_repos(repo),
            delay=self.core.settings.staleness_debounce_seconds,
            max_delay=30.0,
        )

    def _alert_missing(self, root: Path, kind: str) -> None:
        if stale_alerts.watch_missing(self.core, root, kind) is not None:
            self.core.counters["alerts"] += 1
