"""Where Watchkeeper keeps its files: WATCHKEEPER_HOME when set, else the platformdirs folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from agent.errors import WatchkeeperError

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
            check_home(root)
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
            try:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as error:
                raise WatchkeeperError(
                    f"cannot create the folder {folder} ({error.strerror}); "
                    "make its parent writable or set WATCHKEEPER_HOME to a writable folder."
                ) from error
        return self


def check_home(root: Path) -> None:
    """Raise a one-line error when WATCHKEEPER_HOME is not a folder we can use or create.

    >>> check_home(Path("/etc/hostname"))
    Traceback (most recent call last):
    ...
    agent.errors.WatchkeeperError: WATCHKEEPER_HOME=/etc/hostname is a file, not a folder; ...
    """
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != root and not existing.is_dir():
        raise WatchkeeperError(
            f"WATCHKEEPER_HOME={root} cannot be created: {existing} is a file, not a folder; "
            "point WATCHKEEPER_HOME at a folder."
        )
    if existing == root and not root.is_dir():
        raise WatchkeeperError(
            f"WATCHKEEPER_HOME={root} is a file, not a folder; point WATCHKEEPER_HOME at a "
            "folder (it is created when missing)."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "is not writable" if existing == root else f"cannot be created in {existing}"
        raise WatchkeeperError(
            f"WATCHKEEPER_HOME={root} {verb}; point WATCHKEEPER_HOME at a writable folder."
        )
