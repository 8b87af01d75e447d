"""What the agent watches, and why: paths added by hand, registered repos, models' data deps.

Hand-added paths live in the user config's `[watch] repos` and `[watch] data`. Every repo
registered in the ledger (by `init` or `train`) and every data dep recorded on a model version
is watched too, unless `watch remove` took it out (remembered in `[watch] removed`) or
`[watch] registered = false` turns the ledger's part off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from agent.config import UserConfig
from agent.errors import WatchkeeperError
from agent.ledger.queries import recorded_data_deps

BY_HAND = "added by hand"
REGISTERED = "registered repo"


@dataclass(frozen=True)
class WatchEntry:
    path: Path
    kind: str  # "repo" or "data"
    why: str = BY_HAND


def _normalise(path: Path | str) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def watched(config: UserConfig | None = None) -> list[WatchEntry]:
    """Every path added by hand, as written in the config."""
    config = config or UserConfig.load()
    repos = [WatchEntry(_normalise(path), "repo") for path in config.watched_repos]
    data = [WatchEntry(_normalise(path), "data") for path in config.watched_data]
    return repos + data


def removed_paths(config: UserConfig) -> set[Path]:
    """Paths the user took out with `watch remove` (never watched again until `watch add`)."""
    return {_normalise(str(path)) for path in config.section("watch").get("removed", [])}


def watch_scope(config: UserConfig, db: Database | None) -> list[WatchEntry]:
    """Everything the agent should watch, each path once, with why it is watched.

    Example::

        [e.why for e in watch_scope(config, db)]
        # ['added by hand', 'registered repo', 'data dep of churn']
    """
    entries = {(entry.path, entry.kind): entry for entry in watched(config)}
    if db is not None and config.section("watch").get("registered", True) is not False:
        removed = removed_paths(config)
        for entry in _ledger_entries(db):
            if entry.path not in removed:
                entries.setdefault((entry.path, entry.kind), entry)
    return list(entries.values())


def _ledger_entries(db: Database) -> list[WatchEntry]:
    found: list[WatchEntry] = []
    for (path,) in db.execute(
        "SELECT path FROM repos WHERE path NOT LIKE 'builtin:%' ORDER BY path"
    ).fetchall():
        if (Path(path) / ".git").exists():
            found.append(WatchEntry(Path(path), "repo", REGISTERED))
    for dep in recorded_data_deps(db):
        found.append(WatchEntry(dep.path, "data", f"data dep of {dep.model}"))
    return found


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
    removed = [str(p) for p in sorted(removed_paths(config)) if p != resolved]
    if removed != sorted(str(p) for p in removed_paths(config)):
        config.set("watch", "removed", removed)
    config.save()
    return WatchEntry(resolved, "data" if data else "repo")


def remove_watch(
    path: Path | str, *, config: UserConfig | None = None, db: Database | None = None
) -> list[WatchEntry]:
    """Stop watching a path: drop it from the config and remember it against the ledger's part.

    Raises naming the watched paths when it is not watched at all.
    """
    config = config or UserConfig.load()
    resolved = _normalise(path)
    in_scope = [entry for entry in watch_scope(config, db) if entry.path == resolved]
    if not in_scope:
        known = ", ".join(str(entry.path) for entry in watch_scope(config, db)) or "nothing yet"
        raise WatchkeeperError(f"{resolved} is not watched; watched paths: {known}.")
    for key in ("repos", "data"):
        current = [str(_normalise(p)) for p in config.section("watch").get(key, [])]
        if str(resolved) in current:
            current.remove(str(resolved))
            config.set("watch", key, current)
    # Remembered whenever the ledger lists the path too (a hand-added repo is registered once
    # its commits are read), so that `watch remove` holds until `watch add`.
    if db is not None and any(entry.path == resolved for entry in _ledger_entries(db)):
        config.set("watch", "removed", sorted({*map(str, removed_paths(config)), str(resolved)}))
    config.save()
    return in_scope
