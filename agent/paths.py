"""Where Watchkeeper keeps its files: WATCHKEEPER_HOME when set, else the platformdirs folders."""

from __future__ import annotations

import contextlib
import os
import stat
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
        """Create the folders, or make existing ones private to the user, and return self.

        Each folder ends up mode 0700. One that was open to others (a home made by hand, or a
        tmpfs root of mode 1777) has everything in it tightened too: group and other bits are
        removed, so folders become 0700 and files 0600 (0700 when executable).
        """
        for folder in (self.config_dir, self.data_dir, self.runtime_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
            except OSError as error:
                raise WatchkeeperError(
                    f"cannot create the folder {folder} ({error.strerror}); "
                    "make its parent writable or set WATCHKEEPER_HOME to a writable folder."
                ) from error
        not_ours = {Path("/"), Path.home()}
        for folder in (
            self.config_dir,
            self.data_dir,
            self.runtime_dir,
            self.artifacts,
            self.runs,
            self.logs,
        ):
            if folder in not_ours:
                continue  # WATCHKEEPER_HOME pointed at a folder that is not Watchkeeper's own
            try:
                loose = make_private(folder)
            except OSError as error:
                raise WatchkeeperError(
                    f"{folder}: cannot make it private (mode 0700): {error.strerror}; use a "
                    "folder you own (set WATCHKEEPER_HOME to one)."
                ) from error
            if loose:
                make_tree_private(folder)
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


PRIVATE_FOLDER_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
PRIVATE_UMASK = 0o077
"""The umask of every Watchkeeper process that writes files: what it creates is the user's."""


def private_mode(mode: int) -> int:
    """`mode` with no group, other or special bits; folders always 0700.

    >>> oct(private_mode(0o100644)), oct(private_mode(0o100755)), oct(private_mode(0o41777))
    ('0o600', '0o700', '0o700')
    """
    if stat.S_ISDIR(mode):
        return PRIVATE_FOLDER_MODE
    return stat.S_IMODE(mode) & 0o700


def make_private(path: Path) -> bool:
    """Give `path` its private_mode(); True when its mode had to change.

    A missing path and a symbolic link are left alone (False).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode):
        return False
    wanted = private_mode(info.st_mode)
    if stat.S_IMODE(info.st_mode) == wanted:
        return False
    os.chmod(path, wanted)
    return True


def make_tree_private(root: Path) -> None:
    """make_private() every file and folder below `root` (links are not followed)."""
    for folder, folders, files in os.walk(root):
        for name in (*folders, *files):
            with contextlib.suppress(OSError):
                make_private(Path(folder) / name)
