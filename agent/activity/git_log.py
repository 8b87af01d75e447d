"""Fast reading of commit metadata from `git log` into columnar numpy arrays."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.errors import WatchkeeperError

FIELDS_PER_COMMIT = 3
# One fixed-width field (sha, then author time, author UTC offset and commit time padded to
# 11, 6 and 11 characters) parsed with numpy in bulk, then author email and name (.mailmap
# applied) as NUL-separated fields.
TIMES_WIDTH = 28
LOG_FORMAT = "%H%>(11)%at%>(6)%ad%>(11)%ct%x00%aE%x00%aN"
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


def _right_aligned_integers(characters: np.ndarray) -> np.ndarray:
    """Integers written right-aligned (space-padded) in the columns of a (n, w) uint8 array."""
    digits = characters - np.uint8(ord("0"))  # spaces and signs wrap to values above 9
    digits[digits > 9] = 0
    values = np.zeros(characters.shape[0], dtype=np.int64)
    for column in range(characters.shape[1]):
        values *= 10
        values += digits[:, column]
    negative = (characters == ord("-")).any(axis=1)
    result: np.ndarray = np.where(negative, -values, values)
    return result


def _parse_fixed_fields(fixed: list[bytes]) -> tuple[np.ndarray, ...]:
    """sha, author time, author offset (minutes) and commit time from the fixed-width fields."""
    n = len(fixed)
    width = len(fixed[0])
    joined = b"".join(fixed)
    if len(joined) != width * n or width - TIMES_WIDTH not in (40, 64):
        raise WatchkeeperError(
            "git log printed a commit line of unexpected width; is this a git from 2.0 on?"
        )
    table = np.frombuffer(joined, dtype=np.uint8).reshape(n, width)
    sha_width = width - TIMES_WIDTH
    sha = np.ascontiguousarray(table[:, :sha_width]).view(f"S{sha_width}").reshape(n)
    author_time = _right_aligned_integers(table[:, sha_width : sha_width + 11])
    offsets = np.ascontiguousarray(table[:, sha_width + 12 : sha_width + 17]).view("S5")
    commit_time = _right_aligned_integers(table[:, sha_width + 17 :])
    return sha, author_time, _parse_offsets(offsets.reshape(n)), commit_time


class _ChunkParser:
    """Turns NUL-separated `git log -z` output, arriving in chunks, into numpy columns.

    Each chunk is converted as soon as it arrives, so parsing overlaps with git writing
    the rest. Authors are coded by raw email bytes in order of first appearance (git lists
    newest first, so the name kept for an email is its newest).
    """

    def __init__(self, fields_per_commit: int) -> None:
        self.width = fields_per_commit
        self.leftover = b""
        self.count = 0
        self.email_codes: dict[bytes, int] = {}
        self.names: list[bytes] = []
        self.columns: dict[str, list[np.ndarray]] = {
            name: [] for name in ("sha", "code", "author_time", "tz", "commit_time", "merge")
        }

    def feed(self, chunk: bytes) -> int:
        parts = (self.leftover + chunk).split(b"\0")
        tail = parts.pop()
        width = self.width
        complete = len(parts) - len(parts) % width
        self.leftover = b"\0".join([*parts[complete:], tail])
        if complete == 0:
            return 0
        n = complete // width
        columns = self.columns
        sha, author_time, offsets, commit_time = _parse_fixed_fields(parts[0:complete:width])
        columns["sha"].append(sha)
        columns["author_time"].append(author_time)
        columns["tz"].append(offsets)
        columns["commit_time"].append(commit_time)
        emails = parts[1:complete:width]
        known = self.email_codes
        first_new = len(known)
        for email in dict.fromkeys(emails):
            if email not in known:
                known[email] = len(known)
        codes = np.fromiter(map(known.__getitem__, emails), dtype=np.int32, count=n)
        if len(known) > first_new:
            new_codes, first_rows = np.unique(codes, return_index=True)
            names = parts[2:complete:width]
            for code, row in zip(new_codes.tolist(), first_rows.tolist(), strict=True):
                if code >= first_new:
                    self.names.append(names[row])
        columns["code"].append(codes)
        if width > FIELDS_PER_COMMIT:
            parents = parts[3:complete:width]
            columns["merge"].append(
                np.fromiter((p.count(b" ") > 0 for p in parents), dtype=bool, count=n)
            )
        else:
            columns["merge"].append(np.zeros(n, dtype=bool))
        self.count += n
        return n

    def table(self, repo_index: int) -> CommitTable:
        def joined(name: str, dtype: object) -> np.ndarray:
            parts = self.columns[name]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)  # type: ignore[call-overload]

        sha = joined("sha", "S40")
        return CommitTable(
            sha=sha,
            author_code=joined("code", np.int32),
            emails=[e.decode("utf-8", "replace") for e in self.email_codes],
            names=[n.decode("utf-8", "replace") for n in self.names],
            author_time=joined("author_time", np.int64),
            author_tz_minutes=joined("tz", np.int16),
            commit_time=joined("commit_time", np.int64),
            is_merge=joined("merge", bool),
            repo_index=np.full(sha.shape[0], repo_index, dtype=np.int16),
        )


def _read_one_repo(
    repo: Path, repo_index: int, include_merges: bool, progress: ProgressCallback | None
) -> CommitTable:
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
            return _empty_table()  # an empty history reads as no commits
        raise WatchkeeperError(f"{repo}: git log failed: {message}")
    if parser.leftover.strip(b"\0"):
        raise WatchkeeperError(f"{repo}: git log output ended mid-record; is the repo intact?")
    return parser.table(repo_index)


def _merge_case_insensitive(table: CommitTable) -> CommitTable:
    """Recode authors so that emails differing only in case are one author."""
    lowered = [email.lower() for email in table.emails]
    merged: dict[str, int] = {}
    names: list[str] = []
    recode = np.empty(len(lowered), dtype=np.int32)
    for raw_code, email in enumerate(lowered):
        if email not in merged:
            merged[email] = len(merged)
            names.append(table.names[raw_code])
        recode[raw_code] = merged[email]
    table.author_code = recode[table.author_code] if len(lowered) else table.author_code
    table.emails = list(merged)
    table.names = names
    return table


def _concatenate_tables(tables: list[CommitTable]) -> CommitTable:
    """One table from several repos' tables, authors matched by email."""
    emails: dict[str, int] = {}
    names: list[str] = []
    codes = []
    for table in tables:
        recode = np.empty(len(table.emails), dtype=np.int32)
        for raw_code, email in enumerate(table.emails):
            if email not in emails:
                emails[email] = len(emails)
                names.append(table.names[raw_code])
            recode[raw_code] = emails[email]
        codes.append(recode[table.author_code] if len(table.emails) else table.author_code)
    return CommitTable(
        sha=np.concatenate([t.sha for t in tables]),
        author_code=np.concatenate(codes),
        emails=list(emails),
        names=names,
        author_time=np.concatenate([t.author_time for t in tables]),
        author_tz_minutes=np.concatenate([t.author_tz_minutes for t in tables]),
        commit_time=np.concatenate([t.commit_time for t in tables]),
        is_merge=np.concatenate([t.is_merge for t in tables]),
        repo_index=np.concatenate([t.repo_index for t in tables]),
    )


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

    Example::

        table = read_commits([Path(".")])
        table.emails[table.author_code[0]]  # 'dev@example.com'
    """
    tables = []
    for index, repo in enumerate(repos):
        check_repository(repo)
        tables.append(
            _merge_case_insensitive(_read_one_repo(repo, index, include_merges, progress))
        )
    if not tables:
        return _empty_table()
    table = tables[0] if len(tables) == 1 else _concatenate_tables(tables)
    if len(tables) > 1 and len(table):
        _, first = np.unique(table.sha, return_index=True)
        keep = np.zeros(len(table), dtype=bool)
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
