"""Fast reading of commit metadata from `git log` into columnar numpy arrays."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.errors import WatchkeeperError

FIELDS_PER_COMMIT = 6
# sha, author email and name (.mailmap applied), author time, author UTC offset, commit time
LOG_FORMAT = "%H%x00%aE%x00%aN%x00%at%x00%ad%x00%ct"
LOG_FORMAT_WITH_PARENTS = LOG_FORMAT + "%x00%P"
READ_CHUNK_BYTES = 8 << 20

ProgressCallback = Callable[[int], None]


@dataclass
class CommitTable:
    """Commits as parallel arrays; author emails and names are stored once and indexed.

    `author_code[i]` indexes `emails` and `names` (one entry per distinct email, with the
    name seen on its newest commit). Names are decoded with replacement characters when
    they are not valid UTF-8; emails are lower-cased.
    """

    sha: np.ndarray  # S40
    author_code: np.ndarray  # int32, index into emails/names
    emails: list[str]
    names: list[str]
    author_time: np.ndarray  # int64 epoch seconds
    author_tz_minutes: np.ndarray  # int16 offset from UTC in minutes
    commit_time: np.ndarray  # int64 epoch seconds
    is_merge: np.ndarray  # bool
    repo_index: np.ndarray  # int16 index into the list of repos read

    def __len__(self) -> int:
        return int(self.sha.shape[0])

    @property
    def author_email(self) -> np.ndarray:
        """Per-commit author email (an object array built on demand)."""
        return np.asarray(self.emails, dtype=object)[self.author_code]

    @property
    def author_name(self) -> np.ndarray:
        """Per-commit author name (an object array built on demand)."""
        return np.asarray(self.names, dtype=object)[self.author_code]

    def select(self, mask: np.ndarray) -> CommitTable:
        """Return the commits where `mask` is true (author tables are kept whole)."""
        return CommitTable(
            sha=self.sha[mask],
            author_code=self.author_code[mask],
            emails=self.emails,
            names=self.names,
            author_time=self.author_time[mask],
            author_tz_minutes=self.author_tz_minutes[mask],
            commit_time=self.commit_time[mask],
            is_merge=self.is_merge[mask],
            repo_index=self.repo_index[mask],
        )

    def commit_counts(self) -> np.ndarray:
        """Number of commits per entry of `emails`."""
        return np.bincount(self.author_code, minlength=len(self.emails))

    def codes_for(self, emails: Sequence[str]) -> np.ndarray:
        """Author codes of the given emails (case-insensitive); unknown emails are skipped."""
        index = {email: code for code, email in enumerate(self.emails)}
        return np.array([index[e.lower()] for e in emails if e.lower() in index], dtype=np.int32)


def _empty_table() -> CommitTable:
    return CommitTable(
        sha=np.zeros(0, dtype="S40"),
        author_code=np.zeros(0, dtype=np.int32),
        emails=[],
        names=[],
        author_time=np.zeros(0, dtype=np.int64),
        author_tz_minutes=np.zeros(0, dtype=np.int16),
        commit_time=np.zeros(0, dtype=np.int64),
        is_merge=np.zeros(0, dtype=bool),
        repo_index=np.zeros(0, dtype=np.int16),
    )


def check_repository(repo: Path) -> Path:
    """Return the top level of the work tree (or the git dir of a bare repo) at `repo`.

    Raises WatchkeeperError naming the path when it is missing or not a git repository.
    """
    if not repo.exists():
        raise WatchkeeperError(f"{repo}: no such folder; pass --repo with a git repository.")
    result = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--absolute-git-dir"],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise WatchkeeperError(
            f"{repo}: not a git repository (git rev-parse failed); pass --repo with the "
            "folder of a git clone."
        )
    return repo.resolve()


def _git_log_command(repo: Path, include_merges: bool) -> list[str]:
    command = [
        "git",
        "-C",
        str(repo),
        "log",
        "--all",
        "-z",
        "--date=format:%z",
        f"--format={LOG_FORMAT_WITH_PARENTS if include_merges else LOG_FORMAT}",
    ]
    if not include_merges:
        command.append("--no-merges")
    return command


def _parse_offsets(offsets: np.ndarray) -> np.ndarray:
    """'+0130' -> 90, '-0800' -> -480, vectorised over an S5 array."""
    if offsets.size == 0:
        return np.zeros(0, dtype=np.int16)
    fixed = offsets.astype("S5")
    digits = fixed.view(np.uint8).reshape(-1, 5).astype(np.int16) - ord("0")
    minutes = (digits[:, 1] * 10 + digits[:, 2]) * 60 + digits[:, 3] * 10 + digits[:, 4]
    sign = np.where(fixed.view(np.uint8).reshape(-1, 5)[:, 0] == ord("-"), -1, 1)
    result: np.ndarray = (minutes * sign).astype(np.int16)
    return result


class _ChunkParser:
    """Collects NUL-separated fields arriving in chunks into per-column lists of bytes."""

    def __init__(self, fields_per_commit: int) -> None:
        self.fields_per_commit = fields_per_commit
        self.leftover = b""
        self.columns: list[list[bytes]] = [[] for _ in range(fields_per_commit)]
        self.count = 0

    def feed(self, chunk: bytes) -> int:
        parts = (self.leftover + chunk).split(b"\0")
        tail = parts.pop()
        complete = len(parts) - len(parts) % self.fields_per_commit
        self.leftover = b"\0".join([*parts[complete:], tail])
        width = self.fields_per_commit
        for column in range(width):
            self.columns[column].extend(parts[column:complete:width])
        added = complete // width
        self.count += added
        return added


def _read_one_repo(
    repo: Path, include_merges: bool, progress: ProgressCallback | None
) -> list[list[bytes]]:
    fields = FIELDS_PER_COMMIT + (1 if include_merges else 0)
    parser = _ChunkParser(fields)
    process = subprocess.Popen(
        _git_log_command(repo, include_merges),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    while True:
        chunk = process.stdout.read1(READ_CHUNK_BYTES)  # type: ignore[attr-defined]
        if not chunk:
            break
        added = parser.feed(chunk)
        if progress is not None and added:
            progress(added)
    stderr = process.stderr.read() if process.stderr is not None else b""
    if process.wait() != 0:
        message = stderr.decode("utf-8", "replace").strip()
        if "does not have any commits" in message or "bad default revision" in message:
            return parser.columns  # an empty history reads as no commits
        raise WatchkeeperError(f"{repo}: git log failed: {message}")
    if parser.leftover.strip(b"\0"):
        raise WatchkeeperError(f"{repo}: git log output ended mid-record; is the repo intact?")
    return parser.columns


def _factorize(values: list[bytes]) -> tuple[np.ndarray, list[bytes]]:
    index: dict[bytes, int] = {}
    codes = np.fromiter(
        (index.setdefault(v, len(index)) for v in values), dtype=np.int32, count=len(values)
    )
    return codes, list(index)


def read_commits(
    repos: Sequence[Path],
    *,
    include_merges: bool = False,
    since: int | None = None,
    until: int | None = None,
    progress: ProgressCallback | None = None,
) -> CommitTable:
    """Read every commit on all branches of `repos`, deduplicated by sha.

    `since`/`until` are epoch seconds bounding the author time (inclusive, exclusive).
    `progress` is called with the number of commits parsed since its last call.

    >>> table = read_commits([Path(".")])  # doctest: +SKIP
    >>> table.emails[table.author_code[0]]  # doctest: +SKIP
    'dev@example.com'
    """
    per_repo: list[list[list[bytes]]] = []
    for repo in repos:
        check_repository(repo)
        per_repo.append(_read_one_repo(repo, include_merges, progress))
    if not per_repo or sum(len(c[0]) for c in per_repo) == 0:
        return _empty_table()

    def gather(column: int) -> list[bytes]:
        if len(per_repo) == 1:
            return per_repo[0][column]
        return [v for columns in per_repo for v in columns[column]]

    sha = np.array(gather(0), dtype="S40")
    email_codes, email_values = _factorize([e.lower() for e in gather(1)])
    names_raw = gather(2)
    author_time = np.array(gather(3)).astype(np.int64)
    tz_minutes = _parse_offsets(np.array(gather(4)))
    commit_time = np.array(gather(5)).astype(np.int64)
    if include_merges:
        parents = np.array(gather(6))
        is_merge = np.char.find(parents, b" ") >= 0
    else:
        is_merge = np.zeros(sha.shape[0], dtype=bool)
    repo_index = np.repeat(np.arange(len(per_repo), dtype=np.int16), [len(c[0]) for c in per_repo])
    # newest name per email: git log lists newest first, so the first occurrence wins
    first_seen = np.full(len(email_values), -1, dtype=np.int64)
    order = np.arange(email_codes.shape[0] - 1, -1, -1)
    first_seen[email_codes[order]] = order
    names = [names_raw[i].decode("utf-8", "replace") for i in first_seen]
    emails = [e.decode("utf-8", "replace") for e in email_values]
    table = CommitTable(
        sha=sha,
        author_code=email_codes,
        emails=emails,
        names=names,
        author_time=author_time,
        author_tz_minutes=tz_minutes,
        commit_time=commit_time,
        is_merge=is_merge,
        repo_index=repo_index,
    )
    if len(per_repo) > 1:
        _, first = np.unique(sha, return_index=True)
        keep = np.zeros(sha.shape[0], dtype=bool)
        keep[first] = True
        table = table.select(keep)
    if since is not None or until is not None:
        mask = np.ones(len(table), dtype=bool)
        if since is not None:
            mask &= table.author_time >= since
        if until is not None:
            mask &= table.author_time < until
        table = table.select(mask)
    return table
