"""The watched repos and data folders, kept in the user config's [watch] section."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.config import UserConfig
from agent.errors import WatchkeeperError


@dataclass(frozen=True)
class WatchEntry:
    path: Path
    kind: str  # "repo" or "data"


def _normalise(path: Path | str) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def watched(config: UserConfig | None = None) -> list[WatchEntry]:
    """Every watched repo and data path, as written in the config."""
    config = config or UserConfig.load()
    repos = [WatchEntry(_normalise(path), "repo") for path in config.watched_repos]
    data = [WatchEntry(_normalise(path), "data") for path in config.watched_data]
    return repos + data


def add_watch(path: Path | str, *, data: bool, config: UserConfig | None = None) -> WatchEntry:
    """Add a repo (must be a git work tree) or a data file/folder to the config."""
    config = config or UserConfig.load()
    resolved = _normalise(path)
    if not resolved.exists():
        raise WatchkeeperError(f"{resolved}: no such file or folder; check the path.")
    key = "data" if data else "repos"
    if not data and not (resolved / ".git").exists():
        raise WatchkeeperError(
            f"{resolved} is not the root of a git repository (no .git there); "
            "give the repo's top folder, or add --data to watch it as a data folder."
        )
    current = [str(_normalise(p)) for p in config.section("watch").get(key, [])]
    if str(resolved) not in current:
        current.append(str(resolved))
        config.set("watch", key, current)
        config.save()
    return WatchEntry(resolved, "data" if data else "repo")


def remove_watch(path: Path | str, *, config: UserConfig | None = None) -> list[WatchEntry]:
    """Remove a path from both lists; raise naming the watched paths when it is not there."""
    config = config or UserConfig.load()
    resolved = str(_normalise(path))
    removed: list[WatchEntry] = []
    for key, kind in (("repos", "repo"), ("data", "data")):
        current = [str(_normalise(p)) for p in config.section("watch").get(key, [])]
        if resolved in current:
            current.remove(resolved)
            config.set("watch", key, current)
            removed.append(WatchEntry(Path(resolved), kind))
    if not removed:
        known = ", ".join(str(entry.path) for entry in watched(config)) or "nothing yet"
        raise WatchkeeperError(f"{resolved} is not watched; watched paths: {known}.")
    config.save()
    return removed
