"""Build small real git repositories for tests with `git fast-import`."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FakeCommit:
    """One commit to write: author identity (bytes allowed for broken encodings) and time."""

    email: str
    time: int
    tz: str = "+0000"
    name: str | bytes = "Dev"
    branch: str = "main"
    merge_of: str | None = None  # branch merged into `branch` by this commit


def build_repo(path: Path, commits: list[FakeCommit], *, mailmap: str | None = None) -> Path:
    """A non-bare repo at `path` holding `commits` in order (one linear history per branch)."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    stream = bytearray()
    last_mark: dict[str, int] = {}
    for mark, commit in enumerate(commits, start=1):
        name = commit.name if isinstance(commit.name, bytes) else commit.name.encode()
        ident = name + f" <{commit.email}> {commit.time} {commit.tz}".encode()
        message = f"change {mark}\n".encode()
        stream += f"commit refs/heads/{commit.branch}\nmark :{mark}\n".encode()
        stream += b"author " + ident + b"\ncommitter " + ident + b"\n"
        stream += f"data {len(message)}\n".encode() + message
        if commit.branch not in last_mark and "main" in last_mark:
            stream += f"from :{last_mark['main']}\n".encode()
        if commit.merge_of is not None:
            stream += f"merge :{last_mark[commit.merge_of]}\n".encode()
        stream += f"M 644 inline file{mark % 7}.txt\ndata 2\n{mark % 10}\n\n".encode()
        last_mark[commit.branch] = mark
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"], input=bytes(stream), check=True
    )
    if mailmap is not None:
        (path / ".mailmap").write_text(mailmap, encoding="utf-8")
    subprocess.run(["git", "-C", str(path), "config", "user.email", "me@example.com"], check=True)
    return path


def workday_commits(
    email: str, first_day_epoch: int, days: int, per_day: int = 4, tz: str = "+0000"
) -> list[FakeCommit]:
    """`per_day` commits 40 minutes apart from 09:00 UTC on each weekday."""
    commits = []
    for day in range(days):
        start = first_day_epoch + day * 86400
        if ((start // 86400) + 3) % 7 >= 5:
            continue
        for index in range(per_day):
            commits.append(FakeCommit(email, start + 9 * 3600 + index * 2400, tz))
    return commits


def add_raw_commit(
    repo: Path, email: str, time: int, tz: str, *, branch: str = "main", name: str = "Dev"
) -> str:
    """Append a commit to `branch` written byte for byte with `git hash-object --literally`,
    for headers `git fast-import` refuses (such as a malformed UTC offset like +51800)."""

    def git(*arguments: str, stdin: bytes | None = None) -> str:
        result = subprocess.run(
            ["git", "-C", str(repo), *arguments], input=stdin, capture_output=True, check=True
        )
        return result.stdout.decode().strip()

    tree = git("mktree", stdin=b"")
    parent = (
        subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
            capture_output=True,
            check=False,
        )
        .stdout.decode()
        .strip()
    )
    header = f"tree {tree}\n" + (f"parent {parent}\n" if parent else "")
    ident = f"{name} <{email}> {time} {tz}"
    body = f"{header}author {ident}\ncommitter {ident}\n\nraw commit\n"
    sha = git("hash-object", "-t", "commit", "-w", "--literally", "--stdin", stdin=body.encode())
    git("update-ref", f"refs/heads/{branch}", sha)
    return sha
