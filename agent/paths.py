"""Where Watchkeeper keeps its files: WATCHKEEPER_HOME when set, else the platformdirs folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "watchkeeper"


@dataclass(frozen=True)
class WatchkeeperPaths:
    """The files and folders of one Watchkeeper installation.

    >>> paths = WatchkeeperPaths.from_environment()
    >>> paths.ledger.name
    'ledger.db'
    """

    config_dir: Path
    data_dir: Path
    runtime_dir: Path

    @classmethod
    def from_environment(cls) -> WatchkeeperPaths:
        home = os.environ.get("WATCHKEEPER_HOME")
        if home:
            root = Path(home).expanduser().resolve()
            return cls(config_dir=root, data_dir=root, runtime_dir=root)
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP_NAME)),
            data_dir=Path(platformdirs.user_data_dir(APP_NAME)),
            runtime_dir=Path(platformdirs.user_runtime_dir(APP_NAME)),
        )

    @property
    def config(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def known_hosts(self) -> Path:
        return self.config_dir / "known_hosts"

    @property
    def ledger(self) -> Path:
        return self.data_dir / "ledger.db"

    @property
    def artifacts(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def runs(self) -> Path:
        return self.data_dir / "runs"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "agent.sock"

    @property
    def pid_file(self) -> Path:
        return self.runtime_dir / "agent.pid"

    def ensure(self) -> WatchkeeperPaths:
        """Create the folders (private to the user) and return self."""
        for folder in (self.config_dir, self.data_dir, self.runtime_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self
