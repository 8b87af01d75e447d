"""The agent itself: starts, wires and stops its parts (watchers, worker, scheduler, socket)."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent import __version__
from agent.config import UserConfig
from agent.daemon import coding_time_refit, rpc, watchlist
from agent.daemon.faults import is_transient
from agent.daemon.ingest import DataTracker, SaveCoalescer
from agent.daemon.mlflow_auto_export import MlflowAutoExport
from agent.daemon.scheduler import AgentScheduler
from agent.daemon.server import ControlServer
from agent.daemon.settings import AgentSettings
from agent.daemon.stale_checks import StaleChecks
from agent.daemon.watch_events import WatchEvents
from agent.daemon.watchers import WatchManager
from agent.daemon.work import DebouncedWorker
from agent.paths import WatchkeeperPaths
from agent.staleness import Finding

log = logging.getLogger(__name__)


class AgentService:
    """One running agent. `start()` brings every part up; `stop()` takes them down in order."""

    def __init__(
        self,
        paths: WatchkeeperPaths,
        *,
        config: UserConfig | None = None,
        settings: AgentSettings | None = None,
    ) -> None:
        self.paths = paths
        self.config = config or UserConfig.load(paths.config)
        self.settings = settings or AgentSettings.from_config(self.config)
        self.started_at = time.time()
        self._local = threading.local()
        self._state_lock = threading.Lock()
        self._ledger_opened = False
        self._newest_version_id = -1
        self.worker = DebouncedWorker(is_transient=is_transient)
        self.saves = SaveCoalescer(self.settings.save_coalesce_seconds)
        self.data = DataTracker(
            self._open_stat_cache(),
            keep=(self.settings.keep_data, self.settings.keep_data_limit),
            artifacts=paths.artifacts,
        )
        self.checks = StaleChecks(self, on_stale=self._on_stale)
        self.events = WatchEvents(self, self.checks)
        self.watches = WatchManager(
            self.events,
            poll_interval=self.settings.poll_interval_seconds,
            health_interval=self.settings.health_interval_seconds,
            force_polling=self._is_forced_polling,
        )
        self.server = ControlServer(paths.socket, rpc.handlers(self))
        self.scheduler = AgentScheduler(self, self.settings.schedule)
        self.mlflow_export = MlflowAutoExport.from_config(self.config, paths)
        self.identities: list[str] = []
        self.coding_time = coding_time_refit.RefreshAfterActivity(self)
        self.last_rescan: float | None = None
        self.counters: dict[str, int] = {
            "commits_added": 0,
            "saves_recorded": 0,
            "snapshots": 0,
            "alerts": 0,
        }
        self.stop_requested = threading.Event()
        self.paused_at: float | None = None

    # -- ledger connections (one per thread) and the event stream ---------------------------
    def db(self) -> Database:
        """This thread's ledger connection."""
        db: Database | None = getattr(self._local, "db", None)
        if db is None:
            db = self.new_connection()
            self._local.db = db
        return db

    def new_connection(self) -> Database:
        """A new ledger connection, opened by `open_ledger` like every other one.

        The first open (which may migrate the file) is serialised so that two threads never
        migrate at once; later opens find nothing pending and run concurrently.
        """
        from agent.ledger import open_ledger

        with self._state_lock:
            if not self._ledger_opened:
                db = open_ledger(self.paths.ledger)
                self._ledger_opened = True
                return db
        return open_ledger(self.paths.ledger)

    def publish(self, kind: str, payload: dict[str, Any]) -> None:
        """Send an event to every subscriber of the control socket."""
        self.server.publish(kind, payload)

    def _open_stat_cache(self) -> Any:
        try:
            from agent.data.fingerprint import StatCache
        except ImportError:
            return None
        try:
            return StatCache.open(self.paths)
        except Exception as error:  # the cache only saves time; the agent works without it
            log.warning("data stat cache unavailable (%s); fingerprints will re-hash files", error)
            return None

    def _is_forced_polling(self, path: Path) -> bool:
        return any(
            path == Path(p) or path.is_relative_to(Path(p)) for p in self.settings.poll_paths
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.paths.ensure()
        self.db()  # migrate the ledger before anything else touches it
        self._remove_abandoned_artifact_copies()
        self.server.start()
        self.worker.start()
        self.watches.start()
        self._load_identities()
        self.apply_watch_scope(baseline=False)
        self.scheduler.start()
        self.worker.request("rescan", self.full_rescan, delay=0.0)
        self.coding_time.note("start")
        log.info("agent %s started (pid %d)", __version__, os.getpid())

    def stop(self) -> None:
        log.info("agent stopping")
        self.coding_time.stop()
        self.scheduler.stop()
        self.mlflow_export.stop()
        self.watches.stop()
        self.worker.request("saves", self.events.flush_saves, delay=0.0)
        self.worker.wait_idle(1.5)
        self.worker.stop(timeout=1.5)
        self.server.stop()
        log.info("agent stopped")

    def _remove_abandoned_artifact_copies(self) -> None:
        """Half-written artifact copies of writers killed meanwhile (the next store would too)."""
        from agent.ledger.artifacts import ArtifactStore

        try:
            removed = ArtifactStore(self.paths.artifacts).remove_abandoned_copies()
        except OSError as error:
            log.warning("cannot clean %s: %s", self.paths.artifacts, error)
            return
        if removed:
            log.info("removed %d abandoned artifact copies", len(removed))

    def _load_identities(self) -> None:
        try:
            from agent.activity.identities import default_identities

            repos = [e.path for e in watchlist.watched(self.config) if e.kind == "repo"]
            self.identities = default_identities(repos, self.config)
        except Exception as error:
            log.warning("could not work out your git identities (%s); recording all commits", error)
            self.identities = []

    # -- what is watched ------------------------------------------------------------------------
    def apply_watch_scope(self, *, baseline: bool = True) -> None:
        """Watch everything in scope (hand-added, registered repos, models' data deps).

        New roots get their first ingest or snapshot queued when `baseline` is set (at start
        the full rescan does that).
        """
        try:
            scope = watchlist.watch_scope(self.config, self.db())
        except Exception:
            log.exception("reading what to watch failed")
            return
        for entry in scope:
            if (entry.path, entry.kind) in self.watches.roots:
                continue
            self.watches.add(entry.path, entry.kind, why=entry.why)
            if not baseline:
                continue
            if entry.kind == "repo":
                self._queue_ingest(entry.path)
            else:
                self.events.data_changed(entry.path)

    def watch_report(self) -> list[dict[str, object]]:
        """Every watched root and how it is watched, with the entries its snapshot left out."""
        report = self.watches.describe()
        for entry in report:
            entry["skipped"] = list(self.events.skipped.get(Path(str(entry["path"])), []))
        return report

    def _queue_ingest(self, repo: Path) -> None:
        self.worker.request(
            ("commits", repo), lambda: self.events.ingest_repo(repo, incremental=False)
        )

    def model_repos(self) -> list[Path]:
        """Watched and registered repos that have a watchkeeper.toml."""
        return sorted(
            entry.path
            for entry in watchlist.watch_scope(self.config, self.db())
            if entry.kind == "repo" and (entry.path / "watchkeeper.toml").exists()
        )

    # -- pausing --------------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        """True while watching is paused: file events are then dropped, not acted on."""
        return self.paused_at is not None

    def pause_watching(self) -> dict[str, Any]:
        """Stop turning file events into commits, saves, snapshots and alerts until resumed."""
        with self._state_lock:
            if self.paused_at is None:
                self.paused_at = time.time()
                log.info("watching paused")
            return {"paused": True, "paused_at": self.paused_at}

    def resume_watching(self) -> dict[str, Any]:
        """Act on file events again, and rescan to catch up with what changed meanwhile."""
        with self._state_lock:
            paused_at, self.paused_at = self.paused_at, None
        paused_seconds = 0.0 if paused_at is None else round(time.time() - paused_at, 1)
        if paused_at is not None:
            log.info("watching resumed after %.0f s; rescanning", paused_seconds)
            self.worker.request("rescan", self.full_rescan, delay=0.0)
        return {"paused": False, "paused_seconds": paused_seconds}

    # -- scheduled and queued work --------------------------------------------------------------
    def full_rescan(self) -> None:
        """The safety net: every repo's commits, every data source, every model's verdict."""
        if self.paused:
            log.info("watching is paused; skipping the rescan")
            return
        started = time.monotonic()
        self.events.flush_saves()
        self.apply_watch_scope(baseline=False)
        passing_fault: Exception | None = None
        for root in list(self.watches.roots.values()):
            if root.mode == "missing":
                continue
            try:
                if root.kind == "repo":
                    self.events.ingest_repo(root.path, incremental=False)
                else:
                    self.events.snapshot_source(root.path)
            except Exception as error:
                if not is_transient(error):
                    log.exception("rescan of %s failed", root.path)
                passing_fault = passing_fault or error
        self.check_staleness()
        if passing_fault is not None:
            raise passing_fault  # the worker runs the whole rescan again, with backoff
        self.last_rescan = time.time()
        log.info("full rescan done in %.1f s", time.monotonic() - started)

    def check_staleness(self, *, repo_filter: Path | None = None) -> int:
        """Judge the models (of one repo, or all), update verdicts and alerts; alerts raised."""
        try:
            return self.checks.check_repos(repo_filter)
        except Exception as error:
            if is_transient(error):
                raise  # retried by the worker with backoff: the change is alerted on later
            log.exception("the staleness check failed")
            return 0

    def poll_runs(self) -> None:
        """Follow unsupervised runs; a new version anywhere rechecks the models and watches."""
        from agent.daemon import run_supervisor

        newest = self.db().execute("SELECT COALESCE(MAX(id), 0) FROM model_versions").fetchone()
        if newest[0] != self._newest_version_id:
            first_poll = self._newest_version_id < 0
            self._newest_version_id = newest[0]
            self.apply_watch_scope()
            if not first_poll:
                self.worker.request("staleness", self.check_staleness, delay=0.0)
        run_supervisor.poll_active_runs(self)
        self.mlflow_export.tick(self.db())

    def refit_coding_time(self) -> dict[str, Any]:
        from agent.daemon import coding_time_refit

        result = coding_time_refit.refit(self)
        self.publish("coding_time", result)
        return result

    # -- training ---------------------------------------------------------------------------
    def _on_stale(self, finding: Finding) -> None:
        if finding.on_stale == "retrain" and finding.model_id is not None:
            self._queue_retrain(Path(finding.repo), finding.model, finding.model_id)

    def _queue_retrain(self, repo: Path, model: str, model_id: int) -> None:
        """Retrain after a quiet period; at most one run per model at a time."""
        self.worker.request(
            ("retrain", model_id),
            lambda: self._retrain(repo, model, model_id),
            delay=self.settings.retrain_quiet_seconds,
            max_delay=self.settings.retrain_quiet_seconds * 10,
        )

    def _retrain(self, repo: Path, model: str, model_id: int) -> None:
        from agent.ledger.queries import ACTIVE_RUN_STATES

        placeholders = ", ".join("?" for _ in ACTIVE_RUN_STATES)
        active = (
            self.db()
            .execute(
                f"SELECT id FROM runs WHERE model_id = ? AND state IN ({placeholders})",
                [model_id, *ACTIVE_RUN_STATES],
            )
            .fetchone()
        )
        if active:
            log.info("%s: a run (%s) is already active; not queuing another", model, active[0])
            return
        run = self.start_training(repo, model, {}, None)
        log.info("%s went stale: retraining as run %s", model, run.get("run"))

    def start_training(
        self, repo: Path, model: str, params: dict[str, Any], remote: str | None
    ) -> dict[str, Any]:
        """Start a training run in the background and report its id."""
        from agent.daemon import run_supervisor

        return run_supervisor.start(self, repo, model, params, remote)
