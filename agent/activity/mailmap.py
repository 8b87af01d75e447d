"""The .mailmap files git applies to a repo: their lines checked, and emails mapped through them."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAILMAP_EXAMPLE = "Proper Name <proper@email> <commit@email>"


@dataclass(frozen=True)
class MailmapProblem:
    """A .mailmap line that git skips (in whole or in part)."""

    source: str  # a file path, or the blob (e.g. HEAD:.mailmap) of mailmap.blob
    line: int
    text: str
    reason: str

    def message(self) -> str:
        shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return (
            f"{self.source}:{self.line}: {self.reason} in {shown!r}; git skips it (the other "
            f"lines still apply). Write it as `{MAILMAP_EXAMPLE}`."
        )

    def to_json(self) -> dict[str, object]:
        return {"file": self.source, "line": self.line, "text": self.text, "reason": self.reason}


def _check_rest(rest: str) -> str | None:
    """Why the text after a line's first <email> is not read as git reads it (or None)."""
    stripped = rest.strip()
    if not stripped or stripped.startswith("#"):
        return None
    left = rest.find("<")
    if left < 0:
        return "text after the first <email> is not an <email> (missing angle brackets?)"
    right = rest.find(">", left + 1)
    if right < 0:
        return "the second email has no closing '>'"
    after = rest[right + 1 :].strip()
    if after and not after.startswith("#"):
        return "text after the second <email> is ignored"
    return None


def check_line(text: str) -> str | None:
    """Why git would not read a .mailmap line as written (None when it would).

    Mirrors git's mailmap.c: a line starting with '#' is a comment; an entry needs a
    non-empty `<email>`, optionally followed by a name and a second `<email>` (the commit's).
    """
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    left = text.find("<")
    if left < 0:
        return "no <email>"
    right = text.find(">", left + 1)
    if right < 0:
        return "the email has no closing '>'"
    if right == left + 1:
        return "an empty <>"
    return _check_rest(text[right + 1 :])


def check_mailmap(source: str, content: bytes) -> list[MailmapProblem]:
    """The problems of one .mailmap's lines, numbered from 1."""
    problems = []
    lines = content.decode("utf-8", "replace").split("\n")
    for number, line in enumerate(lines, start=1):
        reason = check_line(line.rstrip("\r"))
        if reason is not None:
            problems.append(MailmapProblem(source, number, line.rstrip("\r").strip(), reason))
    return problems


def _git(repo: Path, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *arguments], capture_output=True, check=False)


def mailmap_sources(repo: Path, top: Path, bare: bool) -> list[tuple[str, bytes]]:
    """(name, content) of every mailmap git reads for `repo`: `.mailmap` at the top of the
    work tree, `mailmap.file` and `mailmap.blob` (HEAD:.mailmap by default in a bare repo)."""
    sources: list[tuple[str, bytes]] = []
    if not bare:
        path = top / ".mailmap"
        if path.is_file():
            sources.append((str(path), path.read_bytes()))
    settings = _git(repo, "config", "--get-regexp", r"^mailmap\.(file|blob)$")
    files: list[str] = []
    blobs: list[str] = []
    for line in settings.stdout.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(" ")
        (files if key.lower() == "mailmap.file" else blobs).append(value)
    for value in files:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else top / path
        if path.is_file():
            sources.append((str(path), path.read_bytes()))
    if bare and not blobs:
        blobs.append("HEAD:.mailmap")
    for blob in blobs:
        shown = _git(repo, "cat-file", "blob", blob)
        if shown.returncode == 0:
            sources.append((blob, shown.stdout))
    return sources


def _email_of(identity: str) -> str:
    left, right = identity.rfind("<"), identity.rfind(">")
    return identity[left + 1 : right] if 0 <= left < right else identity


def map_emails(repo: Path, identities: Sequence[tuple[str | None, str]]) -> list[str]:
    """The email .mailmap gives each (name, email) in `repo`, lower-cased, in order.

    The name matters only for .mailmap entries that match on name and email. Emails are
    returned unchanged when git cannot run there.
    """
    if not identities:
        return []
    queries = [f"{name} <{email}>" if name else f"<{email}>" for name, email in identities]
    result = _git(repo, "check-mailmap", "--", *queries)
    lines = result.stdout.decode("utf-8", "replace").splitlines()
    if result.returncode != 0 or len(lines) != len(queries):
        return [email.strip().lower() for _, email in identities]
    return [_email_of(line).strip().lower() for line in lines]
