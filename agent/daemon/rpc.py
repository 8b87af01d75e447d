"""The control socket's methods: each reads the ledger or asks the agent, and returns JSON."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from agent import __version__
from agent.daemon import alerts as alert_store
from agent.daemon import watchlist
from agent.daemon.ports import ServedAgent
from agent.daemon.server import MethodParamsError
from agent.ledger.queries import ACTIVE_RUN_STATES


def handlers(agent: ServedAgent) -> dict[str, Callable[..., Any]]:
    """Every method the socket serves, by name (see docs/agent.md)."""
    methods = AgentMethods(agent)
    return {
        "status": methods.status,
        "alerts": methods.alerts,
        "ack_alert": methods.ack_alert,
        "verdicts": methods.verdicts,
        "models": methods.models,
        "runs": methods.runs,
        "train": methods.train,
        "cancel": methods.cancel,
        "watch_add": methods.watch_add,
        "watch_remove": methods.watch_remove,
        "watch_list": methods.watch_list,
        "coding_time": methods.coding_time,
        "rescan": methods.rescan,
        "check": methods.check,
        "pause_watching": methods.pause_watching,
        "resume_watching": methods.resume_watching,
        "stop": methods.stop,
    }


class AgentMethods:
    """The socket methods of one agent; their parameters are the request's `params`."""

    def __init__(self, agent: ServedAgent) -> None:
        self.agent = agent

    def status(self) -> dict[str, Any]:
        """The agent's pid, uptime, watches, queue and counters."""
        agent = self.agent
        db = agent.db()
        open_alerts = db.execute(
            "SELECT COUNT(*) FROM alerts WHERE acknowledged_at IS NULL AND resolved_at IS NULL"
        ).fetchone()[0]
        placeholders = ", ".join("?" for _ in ACTIVE_RUN_STATES)
        active_runs = db.execute(
            f"SELECT COUNT(*) FROM runs WHERE state IN ({placeholders})", ACTIVE_RUN_STATES
        ).fetchone()[0]
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": agent.started_at,
            "uptime_seconds": round(time.time() - agent.started_at, 1),
            "socket": str(agent.paths.socket),
            "ledger": str(agent.paths.ledger),
            "watches": agent.watch_report(),
            "inotify_watches": agent.watches.inotify_watches,
            "busy": not agent.worker.is_idle(),
            "retrying": agent.worker.describe_retries(),
            "paused": agent.paused,
            "paused_at": agent.paused_at,
            "open_alerts": int(open_alerts),
            "active_runs": int(active_runs),
            "last_rescan": agent.last_rescan,
            "subscribers": agent.server.subscriber_count,
            "counters": dict(agent.counters),
            "schedule": agent.scheduler.describe(),
        }

    def alerts(self, all: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise MethodParamsError('alerts: "limit" must be an integer')
        return alert_store.list_alerts(self.agent.db(), include_acknowledged=bool(all), limit=limit)

    def ack_alert(
        self, id: int | None = None, ids: list[int] | None = None, all: bool = False
    ) -> Any:
        """Acknowledge one alert (`id`), several (`ids`) or every open one (`all`)."""
        db = self.agent.db()
        if all:
            return alert_store.acknowledge_all(db)
        wanted: list[Any] = ids if isinstance(ids, list) else [id]
        if not wanted or any(
            isinstance(value, bool) or not isinstance(value, int) for value in wanted
        ):
            raise MethodParamsError('ack_alert: give "id" (an integer), "ids" or "all": true')
        acknowledged = [alert_store.acknowledge(db, value) for value in wanted]
        return acknowledged[0] if ids is None else acknowledged

    def verdicts(self) -> list[dict[str, Any]]:
        """The stored verdict on every model (what the app and tray show)."""
        from agent.verdicts import stored_verdicts

        return stored_verdicts(self.agent.db())

    def models(self) -> list[dict[str, Any]]:
        from agent.daemon.stalecheck import models_in_child

        return models_in_child(self.agent.paths)

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        from agent.ledger.queries import runs

        if isinstance(limit, bool) or not isinstance(limit, int):
            raise MethodParamsError('runs: "limit" must be an integer')
        return runs(self.agent.db(), limit=limit)

    def train(
        self,
        model: str,
        repo: str | None = None,
        params: dict[str, Any] | None = None,
        remote: str | None = None,
    ) -> dict[str, Any]:
        from agent.daemon import run_supervisor

        return self.agent.start_training(
            run_supervisor.resolve_repo(self.agent, model, repo), model, params or {}, remote
        )

    def cancel(self, run: str) -> dict[str, Any]:
        from agent.daemon import run_supervisor

        return run_supervisor.cancel(self.agent, run)

    def watch_add(self, path: str, data: bool = False) -> dict[str, Any]:
        entry = watchlist.add_watch(path, data=bool(data), config=self.agent.config)
        self.agent.apply_watch_scope()
        root = self.agent.watches.roots.get((entry.path, entry.kind))
        return {"path": str(entry.path), "kind": entry.kind, "mode": root.mode if root else ""}

    def watch_remove(self, path: str) -> list[dict[str, Any]]:
        removed = watchlist.remove_watch(path, config=self.agent.config, db=self.agent.db())
        for entry in removed:
            self.agent.watches.remove(entry.path, entry.kind)
        return [{"path": str(e.path), "kind": e.kind, "why": e.why} for e in removed]

    def watch_list(self) -> list[dict[str, object]]:
        return self.agent.watch_report()

    def coding_time(self, refit: bool = False, days: int = 30) -> dict[str, Any]:
        from agent.daemon import coding_time_refit

        if refit:
            self.agent.refit_coding_time()
        return coding_time_refit.summary(self.agent.db(), days=int(days))

    def rescan(self) -> dict[str, Any]:
        if self.agent.paused:
            return {"queued": False, "paused": True}
        self.agent.worker.request("rescan", self.agent.full_rescan)
        return {"queued": True}

    def check(self, repo: str | None = None, pulled: dict | None = None) -> dict[str, Any]:
        """Queue a staleness check of one repo's models (or all) on the agent's worker.

        `pulled` (from `watchkeeper pull`: how many versions arrived and, under `newer`, those
        that ended after their model's current one) is published as a `pulled` event for the
        app and the tray.
        """
        from pathlib import Path

        if repo is not None and not isinstance(repo, str):
            raise MethodParamsError('check: "repo" must be a path string')
        if pulled is not None and not (
            isinstance(pulled, dict) and isinstance(pulled.get("newer", []), list)
        ):
            raise MethodParamsError('check: "pulled" must be an object with a "newer" list')
        root = Path(repo).resolve() if repo else None
        if pulled:
            self.agent.publish("pulled", {**pulled, "repo": str(root) if root else None})
        self.agent.worker.request(
            ("staleness", root), lambda: self.agent.check_staleness(repo_filter=root), delay=0.0
        )
        return {"queued": True, "repo": str(root) if root else None}

    def pause_watching(self) -> dict[str, Any]:
        return self.agent.pause_watching()

    def resume_watching(self) -> dict[str, Any]:
        return self.agent.resume_watching()

    def stop(self) -> dict[str, Any]:
        self.agent.stop_requested.set()
        return {"stopping": True, "pid": os.getpid()}
