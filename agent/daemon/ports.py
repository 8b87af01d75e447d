"""What the agent's parts need of the agent, as narrow protocols (so none imports the service)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

from sqlite_utils import Database

from agent.config import UserConfig
from agent.daemon.ingest import DataTracker, SaveCoalescer
from agent.daemon.scheduler import AgentScheduler
from agent.daemon.server import ControlServer
from agent.daemon.settings import AgentSettings
from agent.daemon.watchers import WatchManager
from agent.daemon.work import DebouncedWorker
from agent.paths import WatchkeeperPaths


class ActivityListener(Protocol):
    """Told of the user's activity (a commit, saves) so it can act once activity settles."""

    def note(self, after: str) -> None: ...


class AgentCore(Protocol):
    """The ledger, the event stream, the work queue and the counters of one running agent."""

    paths: WatchkeeperPaths
    settings: AgentSettings
    worker: DebouncedWorker
    counters: dict[str, int]
    identities: list[str]

    @property
    def paused(self) -> bool: ...

    @property
    def coding_time(self) -> ActivityListener: ...

    def db(self) -> Database: ...

    def new_connection(self) -> Database: ...

    def publish(self, kind: str, payload: dict[str, Any]) -> None: ...

    def model_repos(self) -> list[Path]: ...

    def check_staleness(self, *, repo_filter: Path | None = None) -> int: ...


class WatchingCore(AgentCore, Protocol):
    """An agent core that also turns file events into ledger rows."""

    saves: SaveCoalescer
    data: DataTracker


class ServedAgent(AgentCore, Protocol):
    """Everything the control-socket methods read or ask of the agent."""

    started_at: float
    paused_at: float | None
    last_rescan: float | None
    config: UserConfig
    watches: WatchManager
    server: ControlServer
    scheduler: AgentScheduler
    stop_requested: threading.Event

    def pause_watching(self) -> dict[str, Any]: ...

    def resume_watching(self) -> dict[str, Any]: ...

    def full_rescan(self) -> None: ...

    def refit_coding_time(self) -> dict[str, Any]: ...

    def start_training(
        self, repo: Path, model: str, params: dict[str, Any], remote: str | None
    ) -> dict[str, Any]: ...

    def apply_watch_scope(self) -> None: ...

    def watch_report(self) -> list[dict[str, object]]: ...
