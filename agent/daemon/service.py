"""The agent itself: wires watchers, the worker, the scheduler and the control socket together."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent import __version__
from agent.config import UserConfig
from agent.daemon import alerts as alert_store
from agent.daemon import watchlist
from agent.daemon.ingest import DataTracker, SaveCoalescer, ingest_commits
from agent.daemon.scheduler import AgentScheduler, ScheduleSettings
from agent.daemon.server import ControlServer, MethodParamsError
from agent.daemon.watchers import WatchManager
from agent.daemon.work import DebouncedWorker
from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths

log = logging.getLogger(__name__)


@dataclass
class AgentSettings:
    """Timings and watch options, from the user config's [schedule] and [watch] sections."""

    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    save_coalesce_seconds: float = 30.0
    data_debounce_seconds: float = 0.3
    data_max_delay_seconds: float = 1.2
    git_debounce_seconds: float = 0.5
    staleness_debounce_seconds: float = 2.0
    retrain_quiet_seconds: float = 60.0
    poll_interval_seconds: float = 5.0
    health_interval_seconds: float = 2.0
    poll_paths: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: UserConfig) -> AgentSettings:
        schedule = config.section("schedule")
        watch = config.section("watch")
        where = f"{config.path} [schedule]"

        def number(section: dict[str, Any], key: str, default: float, label: str) -> float:
            value = section.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise WatchkeeperError(
                    f"{label}: {key} must be a non-negative number, not {value!r}."
                )
            return float(value)

        return cls(
            schedule=ScheduleSettings.from_section(schedule, where),
            save_coalesce_seconds=number(schedule, "save_coalesce_seconds", 30.0, where),
            data_debounce_seconds=number(schedule, "data_debounce_seconds", 0.3, where),
            retrain_quiet_seconds=number(schedule, "retrain_quiet_seconds", 60.0, where),
            poll_interval_seconds=number(
                watch, "poll_interval_seconds", 5.0, f"{config.path} [watch]"
            ),
            poll_paths=tuple(str(Path(p).expanduser()) for p in watch.get("poll", [])),
        )


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
        self.worker = DebouncedWorker()
        self.saves = SaveCoalescer(self.settings.save_coalesce_seconds)
        self.data = DataTracker(self._open_stat_cache())
        self.watches = WatchManager(
            self,
            poll_interval=self.settings.poll_interval_seconds,
            health_interval=self.settings.health_interval_seconds,
            force_polling=self._is_forced_polling,
        )
        self.server = ControlServer(paths.socket, self._handlers())
        self.scheduler = AgentScheduler(self, self.settings.schedule)
        self.identities: list[str] = []
        self.last_rescan: float | None = None
        self.counters: dict[str, int] = {
            "commits_added": 0,
            "saves_recorded": 0,
            "snapshots": 0,
            "alerts": 0,
        }
        self.stop_requested = threading.Event()
        self.paused_at: float | None = None

    # -- ledger connections (one per thread) -----------------------------------------------
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
        self.server.start()
        self.worker.start()
        self.watches.start()
        self._load_identities()
        for entry in watchlist.watched(self.config):
            self.watches.add(entry.path, entry.kind)
        self._watch_model_data_deps()
        self.scheduler.start()
        self.worker.request("rescan", self.full_rescan, delay=0.0)
        log.info("agent %s started (pid %d)", __version__, os.getpid())

    def stop(self) -> None:
        log.info("agent stopping")
        self.scheduler.stop()
        self.watches.stop()
        self.worker.request("saves", self._flush_saves, delay=0.0)
        self.worker.wait_idle(1.5)
        self.worker.stop(timeout=1.5)
        self.server.stop()
        log.info("agent stopped")

    def _load_identities(self) -> None:
        try:
            from agent.activity.identities import default_identities

            repos = [e.path for e in watchlist.watched(self.config) if e.kind == "repo"]
            self.identities = default_identities(repos, self.config)
        except Exception as error:
            log.warning("could not work out your git identities (%s); recording all commits", error)
            self.identities = []

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

    # -- WatchSink: called on watchdog's thread, so each only queues work -----------------------
    def git_changed(self, repo: Path) -> None:
        if self.paused:
            return
        self.worker.request(
            ("commits", repo),
            lambda: self.ingest_repo(repo, incremental=True),
            delay=self.settings.git_debounce_seconds,
            max_delay=5.0,
        )

    def file_saved(self, repo: Path, relative_path: str, timestamp: float) -> None:
        if self.paused:
            return
        if self.saves.note(repo, relative_path, timestamp):
            self.worker.request("saves", self._flush_saves, delay=1.0, max_delay=5.0)
        self.worker.request(
            ("staleness", repo),
            lambda: self.check_staleness(repo_filter=repo),
            delay=self.settings.staleness_debounce_seconds,
            max_delay=30.0,
        )

    def data_changed(self, source: Path) -> None:
        if self.paused:
            return
        self.worker.request(
            ("snapshot", source),
            lambda: self.snapshot_source(source),
            delay=self.settings.data_debounce_seconds,
            max_delay=self.settings.data_max_delay_seconds,
        )

    def root_missing(self, root: Path, kind: str) -> None:
        if self.paused:
            return
        self.worker.request(("missing", root), lambda: self._alert_missing(root, kind))

    def root_back(self, root: Path, kind: str) -> None:
        if self.paused:
            return  # resuming rescans every root

        def resume() -> None:
            log.info("watching %s again; rescanning it", root)
            if kind == "repo":
                self.ingest_repo(root, incremental=False)
            else:
                self.data.forget(root)
                self.snapshot_source(root)

        self.worker.request(("back", root), resume)

    # -- jobs (run on the worker thread) --------------------------------------------------------
    def ingest_repo(self, repo: Path, *, incremental: bool) -> int:
        """Bring the ledger's commits of one repo up to date; returns how many were new."""
        if not (repo / ".git").exists():
            return 0
        db = self.db()
        since = None
        if incremental:
            row = db.execute(
                "SELECT MAX(c.author_time) FROM commits c JOIN repos r ON r.id = c.repo_id "
                "WHERE r.path = ?",
                [str(repo.resolve())],
            ).fetchone()
            if row and row[0] is not None:
                since = int(row[0]) - 7 * 86400
        result = ingest_commits(db, repo, self.identities, since=since)
        self.counters["commits_added"] += result.added
        if result.added:
            log.info("%s: %d new commits", repo, result.added)
            self.worker.request(
                ("staleness", repo),
                lambda: self.check_staleness(repo_filter=repo),
                delay=self.settings.staleness_debounce_seconds,
            )
        return result.added

    def _flush_saves(self) -> None:
        self.counters["saves_recorded"] += self.saves.flush(self.db())

    def snapshot_source(self, source: Path) -> None:
        """Re-fingerprint a data source; on change publish `snapshot` and check staleness."""
        if not source.exists():
            return
        outcome = self.data.snapshot(self.db(), source)
        self.counters["snapshots"] += 1
        if not outcome.changed:
            return
        log.info("data changed: %s (snapshot %d)", source, outcome.snapshot_id)
        self.server.publish("snapshot", outcome.event)
        self._alert_dependents(source, outcome.current)
        self.worker.request(
            "staleness",
            self.check_staleness,
            delay=self.settings.staleness_debounce_seconds,
            max_delay=30.0,
        )

    def _alert_dependents(self, source: Path, current: Any) -> None:
        """Alert at once for trained versions whose data dep `source` no longer matches."""
        from agent.daemon.data_alerts import change_message, dependent_versions, state_key
        from agent.data.snapshots import diff_fingerprints, load_snapshot

        db = self.db()
        for dependent in dependent_versions(db, source):
            if dependent.recorded_fingerprint == current.digest:
                continue
            added: list[str] = []
            removed: list[str] = []
            modified: list[str] = []
            if dependent.recorded_snapshot_id is not None:
                try:
                    recorded = load_snapshot(db, int(dependent.recorded_snapshot_id))
                except WatchkeeperError as error:
                    log.warning("cannot read the snapshot of %s: %s", dependent.dep, error)
                else:
                    difference = diff_fingerprints(recorded, current)
                    added, removed = list(difference.added), list(difference.removed)
                    modified = list(difference.modified)
            reason = change_message(dependent.dep, added, removed, modified)
            token = self._data_token(dependent.repo, dependent.data_deps)
            entry = {
                "repo": str(dependent.repo),
                "model": dependent.model,
                "on_stale": self._on_stale(dependent.repo, dependent.model),
                "version": {
                    "id": dependent.version_id,
                    "version": dependent.version,
                    "model_id": dependent.model_id,
                    "data": dependent.data_deps,
                },
                "reasons": [
                    {
                        "kind": "data",
                        "message": reason,
                        "paths": [dependent.dep],
                        "drift": [],
                    }
                ],
            }
            self._raise_stale_alert(entry, dedupe=state_key(dependent.version_id, token))

    def _on_stale(self, repo: Path, model: str) -> str:
        from agent.project.spec import load_project

        try:
            return load_project(repo).models[model].on_stale
        except (WatchkeeperError, KeyError):
            return "notify"

    def full_rescan(self) -> None:
        """The safety net: every repo's commits, every data source, every model's staleness."""
        if self.paused:
            log.info("watching is paused; skipping the rescan")
            return
        started = time.monotonic()
        self._flush_saves()
        for root in list(self.watches.roots.values()):
            if root.mode == "missing":
                continue
            try:
                if root.kind == "repo":
                    self.ingest_repo(root.path, incremental=False)
                else:
                    self.snapshot_source(root.path)
            except Exception:
                log.exception("rescan of %s failed", root.path)
        self._watch_model_data_deps()
        self.check_staleness()
        self.last_rescan = time.time()
        log.info("full rescan done in %.1f s", time.monotonic() - started)

    # -- staleness and alerts -------------------------------------------------------------
    def _model_repos(self) -> list[Path]:
        repos = {e.path for e in watchlist.watched(self.config) if e.kind == "repo"}
        try:
            for row in self.db().query("SELECT path FROM repos"):
                if (Path(row["path"]) / "watchkeeper.toml").exists():
                    repos.add(Path(row["path"]))
        except Exception:
            log.exception("reading repos from the ledger failed")
        return sorted(repos)

    def _watch_model_data_deps(self) -> None:
        """Watch the data deps recorded on model versions (they may live outside any repo)."""
        try:
            rows = list(
                self.db().query(
                    "SELECT r.path AS repo, v.data AS data FROM model_versions v "
                    "JOIN models m ON m.id = v.model_id JOIN repos r ON r.id = m.repo_id "
                    "WHERE v.data IS NOT NULL AND v.data != '{}' AND r.path NOT LIKE 'builtin:%'"
                )
            )
        except Exception:
            log.exception("reading the data deps of models failed")
            return
        for row in rows:
            try:
                deps = json.loads(row["data"])
            except (TypeError, json.JSONDecodeError):
                continue
            for dep in deps:
                path = Path(dep) if Path(dep).is_absolute() else Path(row["repo"]) / dep
                if (path, "data") not in self.watches.roots:
                    self.watches.add(path, "data")
                    self.data_changed(path)  # the first snapshot is the baseline

    def check_staleness(self, *, repo_filter: Path | None = None) -> int:
        """Raise an alert for every newly stale model version; returns how many were raised."""
        from agent.daemon.stalecheck import check_in_child

        try:
            stale, problems = check_in_child(self.paths, repo_filter)
        except (WatchkeeperError, OSError, ValueError) as error:
            log.warning("%s", error)
            return 0
        for problem in problems:
            log.warning("cannot check staleness in %s", problem)
        return sum(self._raise_stale_alert(entry) for entry in stale)

    def _data_token(self, root: Path, data_deps: list[str]) -> list[str | None]:
        """The current fingerprints of a version's data deps, so each new change alerts anew."""
        return [self.data.last_digest(root / dep) for dep in data_deps]

    def _raise_stale_alert(self, entry: dict[str, Any], dedupe: str | None = None) -> int:
        """Record and publish an alert for a stale version (or enrich the one for its state)."""
        from agent.daemon.data_alerts import state_key

        root = Path(entry["repo"])
        model = entry["model"]
        version = entry["version"]
        reasons = entry["reasons"]
        messages = [reason["message"] for reason in reasons]
        drift = [line for reason in reasons for line in reason["drift"]] or None
        token = self._data_token(root, version["data"])
        data_state = state_key(version["id"], token)
        if dedupe is None:
            if any(r["kind"] == "data" for r in reasons):
                # Data reasons: one alert per data state, the fast path's or this one.
                if self._enrich(data_state, model, version, messages, drift):
                    return 0
                dedupe = data_state
            else:
                key_text = json.dumps([version["id"], messages, token], sort_keys=True)
                dedupe = "stale:" + hashlib.sha256(key_text.encode()).hexdigest()[:32]
        message = f"{model}@{version['version']} is stale: " + "; ".join(messages)
        alert = alert_store.raise_alert(
            self.db(),
            kind="drift" if drift else "stale",
            message=message,
            dedupe_key=dedupe,
            model_id=version["model_id"],
            reasons=messages,
            versions=[
                {
                    "model": model,
                    "version": version["version"],
                    "id": version["id"],
                    "repo": str(root),
                    "paths": sorted({p for reason in reasons for p in reason["paths"]}),
                }
            ],
            drift=drift,
        )
        if alert is None:
            return 0
        self.counters["alerts"] += 1
        self.server.publish("alert", alert)
        log.warning("alert %d: %s", alert["id"], message)
        if entry["on_stale"] == "retrain":
            self._queue_retrain(root, model, int(version["model_id"]))
        return 1

    def _enrich(
        self,
        dedupe: str,
        model: str,
        version: dict[str, Any],
        messages: list[str],
        drift: list[str] | None,
    ) -> bool:
        """Complete the fast data alert of this state with every reason and the drift."""
        db = self.db()
        row = db.execute("SELECT id, message FROM alerts WHERE dedupe_key = ?", [dedupe]).fetchone()
        if row is None:
            return False
        message = f"{model}@{version['version']} is stale: " + "; ".join(messages)
        if row[1] != message:
            from agent.ledger import write_transaction

            with write_transaction(db):
                db.execute(
                    "UPDATE alerts SET message = ?, reasons = ?, drift = ?, kind = ? WHERE id = ?",
                    [
                        message,
                        json.dumps(messages),
                        None if drift is None else json.dumps(drift),
                        "drift" if drift else "stale",
                        row[0],
                    ],
                )
            self.server.publish(
                "alert", {**alert_store.get_alert(db, int(row[0])), "updated": True}
            )
        return True

    def _alert_missing(self, root: Path, kind: str) -> None:
        what = "repo" if kind == "repo" else "data folder"
        alert = alert_store.raise_alert(
            self.db(),
            kind="watch",
            message=f"watched {what} {root} was deleted or renamed; "
            "watching resumes when it reappears",
            dedupe_key=f"watch:missing:{root}:{time.time():.0f}",
            reasons=[f"{root} is missing"],
        )
        if alert is not None:
            self.counters["alerts"] += 1
            self.server.publish("alert", alert)

    # -- training ---------------------------------------------------------------------------
    def _queue_retrain(self, repo: Path, model: str, model_id: int) -> None:
        """Retrain after a quiet period; at most one run per model at a time."""
        self.worker.request(
            ("retrain", model_id),
            lambda: self._retrain(repo, model, model_id),
            delay=self.settings.retrain_quiet_seconds,
            max_delay=self.settings.retrain_quiet_seconds * 10,
        )

    def _retrain(self, repo: Path, model: str, model_id: int) -> None:
        active = (
            self.db()
            .execute(
                "SELECT id FROM runs WHERE model_id = ? AND state IN (?, ?, ?)",
                [model_id, "queued", "starting", "running"],
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
        from agent.daemon import training

        return training.start(self, repo, model, params, remote)

    # -- scheduled work ----------------------------------------------------------------------
    def poll_runs(self) -> None:
        """Follow unsupervised runs, and watch the data deps of versions recorded meanwhile."""
        from agent.daemon import training

        newest = self.db().execute("SELECT COALESCE(MAX(id), 0) FROM model_versions").fetchone()
        if newest[0] != self._newest_version_id:
            self._newest_version_id = newest[0]
            self._watch_model_data_deps()
        training.poll_active_runs(self)

    def refit_coding_time(self) -> dict[str, Any]:
        from agent.daemon import codingtime

        result = codingtime.refit(self)
        self.server.publish("coding_time", result)
        return result

    # -- control socket methods ----------------------------------------------------------------
    def _handlers(self) -> dict[str, Any]:
        return {
            "status": self.rpc_status,
            "alerts": self.rpc_alerts,
            "ack_alert": self.rpc_ack_alert,
            "models": self.rpc_models,
            "runs": self.rpc_runs,
            "train": self.rpc_train,
            "cancel": self.rpc_cancel,
            "watch_add": self.rpc_watch_add,
            "watch_remove": self.rpc_watch_remove,
            "watch_list": self.rpc_watch_list,
            "coding_time": self.rpc_coding_time,
            "rescan": self.rpc_rescan,
            "pause_watching": self.rpc_pause_watching,
            "resume_watching": self.rpc_resume_watching,
            "stop": self.rpc_stop,
        }

    def rpc_status(self) -> dict[str, Any]:
        """The agent's pid, uptime, watches, queue and counters."""
        db = self.db()
        open_alerts = db.execute(
            "SELECT COUNT(*) FROM alerts WHERE acknowledged_at IS NULL"
        ).fetchone()[0]
        active_runs = db.execute(
            "SELECT COUNT(*) FROM runs WHERE state IN ('queued','starting','running')"
        ).fetchone()[0]
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "socket": str(self.paths.socket),
            "ledger": str(self.paths.ledger),
            "watches": self.watches.describe(),
            "inotify_watches": self.watches.inotify_watches,
            "busy": not self.worker.is_idle(),
            "paused": self.paused,
            "paused_at": self.paused_at,
            "open_alerts": int(open_alerts),
            "active_runs": int(active_runs),
            "last_rescan": self.last_rescan,
            "subscribers": self.server.subscriber_count,
            "counters": dict(self.counters),
            "schedule": self.scheduler.describe(),
        }

    def rpc_alerts(self, all: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        return alert_store.list_alerts(self.db(), include_acknowledged=bool(all), limit=limit)

    def rpc_ack_alert(self, id: int) -> dict[str, Any]:
        if isinstance(id, bool) or not isinstance(id, int):
            raise MethodParamsError('ack_alert: "id" must be an integer alert id')
        return alert_store.acknowledge(self.db(), id)

    def rpc_models(self) -> list[dict[str, Any]]:
        from agent.daemon.stalecheck import models_in_child

        return models_in_child(self.paths)

    def rpc_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        from agent.ledger.queries import runs

        return runs(self.db(), limit=int(limit))

    def rpc_train(
        self,
        model: str,
        repo: str | None = None,
        params: dict[str, Any] | None = None,
        remote: str | None = None,
    ) -> dict[str, Any]:
        from agent.daemon import training

        return self.start_training(
            training.resolve_repo(self, model, repo), model, params or {}, remote
        )

    def rpc_cancel(self, run: str) -> dict[str, Any]:
        from agent.daemon import training

        return training.cancel(self, run)

    def rpc_watch_add(self, path: str, data: bool = False) -> dict[str, Any]:
        entry = watchlist.add_watch(path, data=bool(data), config=self.config)
        root = self.watches.add(entry.path, entry.kind)
        if entry.kind == "repo":
            self.worker.request(
                ("commits", entry.path), lambda: self.ingest_repo(entry.path, incremental=False)
            )
        else:
            self.data_changed(entry.path)
        return {"path": str(entry.path), "kind": entry.kind, "mode": root.mode}

    def rpc_watch_remove(self, path: str) -> list[dict[str, Any]]:
        removed = watchlist.remove_watch(path, config=self.config)
        for entry in removed:
            self.watches.remove(entry.path, entry.kind)
        return [{"path": str(e.path), "kind": e.kind} for e in removed]

    def rpc_watch_list(self) -> list[dict[str, object]]:
        return self.watches.describe()

    def rpc_coding_time(self, refit: bool = False, days: int = 30) -> dict[str, Any]:
        from agent.daemon import codingtime

        if refit:
            self.refit_coding_time()
        return codingtime.summary(self.db(), days=int(days))

    def rpc_rescan(self) -> dict[str, Any]:
        if self.paused:
            return {"queued": False, "paused": True}
        self.worker.request("rescan", self.full_rescan)
        return {"queued": True}

    def rpc_pause_watching(self) -> dict[str, Any]:
        return self.pause_watching()

    def rpc_resume_watching(self) -> dict[str, Any]:
        return self.resume_watching()

    def rpc_stop(self) -> dict[str, Any]:
        self.stop_requested.set()
        return {"stopping": True, "pid": os.getpid()}
