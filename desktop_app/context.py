"""What every page shares: the paths, the ledger workers, the agent link and the status bar."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agent.config import UserConfig
from agent.paths import WatchkeeperPaths
from desktop_app.agent_link import AgentLink
from desktop_app.workers import LedgerWorkers


@dataclass
class AppContext:
    """Shared services handed to each page."""

    paths: WatchkeeperPaths
    workers: LedgerWorkers
    agent: AgentLink
    show_status: Callable[[str], None] = field(default=lambda message: None)

    def load_config(self) -> UserConfig:
        """The user config as it is on disk now (the agent may have changed it)."""
        return UserConfig.load(self.paths.config)
