"""Whose coding time: emails from `git config user.email` plus the user config's identities."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from agent.config import UserConfig


def git_user_email(repo: Path | None) -> str | None:
    """`git config user.email` as seen from `repo` (its local config, then global), or None."""
    command = (
        ["git"]
        + (["-C", str(repo)] if repo is not None else [])
        + [
            "config",
            "user.email",
        ]
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    email = result.stdout.strip()
    return email or None


def default_identities(repos: Sequence[Path], config: UserConfig | None = None) -> list[str]:
    """The user's emails, lower-cased and deduplicated, in the order found.

    Sources: `git config user.email` in each repo, then `[identity] emails` in config.toml.
    """
    config = config if config is not None else UserConfig.load()
    found: list[str] = []
    places: list[Path | None] = list(repos) or [None]
    for place in places:
        email = git_user_email(place)
        if email:
            found.append(email)
    found.extend(config.identity_emails)
    unique: list[str] = []
    for email in found:
        lowered = email.strip().lower()
        if lowered and lowered not in unique:
            unique.append(lowered)
    return unique
