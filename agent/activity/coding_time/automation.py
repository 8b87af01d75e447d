"""Recognising automated identities (bots) by their author name and email."""

from __future__ import annotations

import re

# services that commit under their own name, without "bot" in it
KNOWN_AUTOMATION = frozenset(
    {
        "dependabot",
        "renovate",
        "github-actions",
        "pre-commit-ci",
        "greenkeeper",
        "mergify",
        "allcontributors",
        "snyk-bot",
        "imgbot",
    }
)
_BOT_TOKEN = re.compile(r"(?:^|[^a-z0-9])bot(?:$|[^a-z0-9])")
_GITHUB_ID = re.compile(r"^\d+\+")


def _email_local_part(email: str) -> str:
    local = email.strip().lower().rsplit("@", 1)[0]
    return _GITHUB_ID.sub("", local)  # 49699333+dependabot[bot]@users.noreply.github.com


def is_automated_identity(name: str, email: str) -> bool:
    """Whether an author name/email is a bot's, by the conventions real histories follow.

    A name or email local part that holds `bot` as a word of its own (`dependabot[bot]`,
    `release-bot`, `ci_bot`, `Renovate Bot`, `bot@example.com`), or that is one of a few
    well-known services that commit under their own name (`renovate`, `github-actions`,
    `pre-commit-ci`, ...). A GitHub noreply address counts only by its local part, so
    `12345+alice@users.noreply.github.com` is a person. Words that merely contain "bot"
    (`Abbott`, `robotics@...`) are not.

    >>> is_automated_identity("dependabot[bot]", "1+dependabot[bot]@users.noreply.github.com")
    True
    >>> is_automated_identity("Alice", "12345+alice@users.noreply.github.com")
    False
    >>> is_automated_identity("Jane Abbott", "jane@robotics.example")
    False
    """
    for text in (name.strip().lower(), _email_local_part(email)):
        if not text:
            continue
        if _BOT_TOKEN.search(text):
            return True
        bare = text.removesuffix("[bot]")
        if bare in KNOWN_AUTOMATION or text.endswith("[bot]"):
            return True
    return False
