"""Whose coding time: emails from `git config user.email` plus the user config's identities,
each also as .mailmap maps it (the commits' emails are read through .mailmap too)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from agent.activity.mailmap import map_emails
from agent.config import UserConfig


def git_user(repo: Path | None) -> tuple[str | None, str | None]:
    """`git config user.name` and `user.email` as seen from `repo` (local, then global)."""
    command = ["git"] + (["-C", str(repo)] if repo is not None else [])
    command += ["config", "--get-regexp", r"^user\.(name|email)$"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        found[key.lower()] = value.strip()  # the last one set (the most local) wins
    return found.get("user.name") or None, found.get("user.email") or None


def git_user_email(repo: Path | None) -> str | None:
    """`git config user.email` as seen from `repo` (its local config, then global), or None."""
    return git_user(repo)[1]


def _unique(emails: Sequence[str]) -> list[str]:
    unique: list[str] = []
    for email in emails:
        lowered = email.strip().lower()
        if lowered and lowered not in unique:
            unique.append(lowered)
    return unique


def canonical_identities(
    repos: Sequence[Path], identities: Sequence[tuple[str | None, str]]
) -> list[str]:
    """Each (name, email) followed by the email(s) .mailmap maps it to in `repos`,
    lower-cased and deduplicated. Several emails one .mailmap joins end up as one.

    Example: with `Alice <alice@example.com> <old@laptop>` in .mailmap,
    `canonical_identities([repo], [(None, "old@laptop")])` is
    `["old@laptop", "alice@example.com"]`.
    """
    found: list[str] = []
    mapped = [map_emails(repo, identities) for repo in repos if repo.is_dir()]
    for index, (_, email) in enumerate(identities):
        found.append(email)
        found.extend(emails[index] for emails in mapped)
    return _unique(found)


def default_identities(repos: Sequence[Path], config: UserConfig | None = None) -> list[str]:
    """The user's emails, lower-cased and deduplicated, in the order found, each followed by
    what .mailmap maps it to.

    Sources: `git config user.email` (with user.name, which .mailmap entries may match on) in
    each repo, then `[identity] emails` in config.toml.
    """
    config = config if config is not None else UserConfig.load()
    found: list[tuple[str | None, str]] = []
    places: list[Path | None] = list(repos) or [None]
    for place in places:
        if place is not None and not place.is_dir():
            continue
        name, email = git_user(place)
        if email:
            found.append((name, email))
    found.extend((None, email) for email in config.identity_emails)
    return canonical_identities([r for r in repos if r.is_dir()], found)
