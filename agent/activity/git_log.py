"""Fast reading of commit metadata from `git log` into columnar numpy arrays."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from agent.activity.mailmap import MailmapProblem, check_mailmap, mailmap_sources
from agent.errors import WatchkeeperError

FIELDS_PER_COMMIT = 3
# One fixed-width field (sha, then the raw author date `<epoch> <offset>` right-aligned in 17
# characters, then the commit time right-aligned in 11) parsed with numpy in bulk, then
# author email and name (.mailmap applied) as NUL-separated fields. git prints the offset as
# the number stored in the commit (`%+05d`), so a malformed one such as +51800 or +1234567
# is wider than +HHMM and shifts or widens the field; such records are parsed one by one.
# (The raw date, unlike `--date=format:%z`, never makes git log fail on a huge offset.)
DATE_WIDTH = 17
OFFSET_WIDTH = 6  # " +HHMM", the last characters of the date
TIMES_WIDTH = DATE_WIDTH + 11
LATEST_OFFSET_HOURS = 14  # UTC+14:00 (Kiribati) and UTC-12:00 are the extremes in use
LOG_FORMAT = "%H%>(17)%ad%>(11)%ct%x00%aE%x00%aN"
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
    # int16 per commit: -1 for a well-formed author UTC offset, else an index into
    # `bad_offset_texts` (such commits get offset 0, i.e. UTC); None when all are well-formed
    bad_offset: np.ndarray | None = None
    bad_offset_texts: list[str] = field(default_factory=list)
    notes: HistoryNotes = field(default_factory=lambda: HistoryNotes())

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
            bad_offset=None if self.bad_offset is None else self.bad_offset[mask],
            bad_offset_texts=self.bad_offset_texts,
            notes=self.notes,
        )

    def malformed_offsets(self, mask: np.ndarray | None = None) -> dict[str, int]:
        """Commits per malformed author UTC offset (as git prints it), among `mask` if given."""
        if self.bad_offset is None:
            return {}
        labels = self.bad_offset if mask is None else self.bad_offset[mask]
        counts = np.bincount(labels[labels >= 0], minlength=len(self.bad_offset_texts))
        return {
            text: int(count)
            for text, count in zip(self.bad_offset_texts, counts.tolist(), strict=True)
            if count
        }

    def input_checks(self, codes: np.ndarray | None = None) -> InputChecks:
        """What was wrong with the history read: malformed offsets among the commits of the
        authors `codes` (all when None), shallow clones and .mailmap lines git skips."""
        mask = None if codes is None else np.isin(self.author_code, codes)
        return InputChecks(self.malformed_offsets(mask), self.notes)

    def commit_counts(self) -> np.ndarray:
        """Number of commits per entry of `emails`."""
        return np.bincount(self.author_code, minlength=len(self.emails))

    def codes_for(self, emails: Sequence[str]) -> np.ndarray:
        """Author codes of the given emails (case-insensitive); unknown emails are skipped."""
        index = {email: code for code, email in enumerate(self.emails)}
        return np.array([index[e.lower()] for e in emails if e.lower() in index], dtype=np.int32)


@dataclass(frozen=True)
class ShallowBoundary:
    """A shallow clone: the author times of the commits whose parents were not fetched."""

    repo: str
    earliest: int
    latest: int
    commits: int

    @staticmethod
    def _day(seconds: int) -> str:
        return datetime.fromtimestamp(seconds, UTC).date().isoformat()

    def message(self) -> str:
        return (
            f"{self.repo} is a shallow clone: its history is cut at {self._day(self.latest)} "
            f"(commits before that are missing, so is their coding time); "
            f"`git -C {self.repo} fetch --unshallow` fetches them."
        )

    def to_json(self) -> dict[str, object]:
        return {
            "repo": self.repo,
            "cut_at": self._day(self.latest),
            "earliest_boundary": self._day(self.earliest),
            "boundary_commits": self.commits,
        }


@dataclass
class HistoryNotes:
    """What reading found wrong with the repositories themselves."""

    shallow: list[ShallowBoundary] = field(default_factory=list)
    mailmap_problems: list[MailmapProblem] = field(default_factory=list)

    def extend(self, other: HistoryNotes) -> None:
        self.shallow.extend(other.shallow)
        self.mailmap_problems.extend(
            p for p in other.mailmap_problems if p not in self.mailmap_problems
        )


@dataclass
class InputChecks:
    """Problems in the input that the estimate worked around, for the report and --json."""

    malformed_offsets: dict[str, int] = field(default_factory=dict)
    notes: HistoryNotes = field(default_factory=HistoryNotes)

    def warnings(self) -> list[str]:
        lines = [problem.message() for problem in self.notes.mailmap_problems]
        lines += [boundary.message() for boundary in self.notes.shallow]
        if self.malformed_offsets:
            total = sum(self.malformed_offsets.values())
            listed = ", ".join(
                f"{text} ({count})" for text, count in sorted(self.malformed_offsets.items())
            )
            lines.append(
                f"{total} commit{'s' if total != 1 else ''} with a malformed UTC offset "
                f"({listed}; valid ones are -1200 to +1400 with minutes under 60): placed "
                "in UTC"
            )
        return lines

    def to_json(self) -> dict[str, object]:
        return {
            "malformed_offsets": [
                {"offset": text, "commits": count}
                for text, count in sorted(self.malformed_offsets.items())
            ],
            "shallow": [boundary.to_json() for boundary in self.notes.shallow],
            "mailmap_errors": [problem.to_json() for problem in self.notes.mailmap_problems],
        }


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


@dataclass(frozen=True)
class RepositoryInfo:
    """Where git keeps a repository and what kind it is."""

    path: Path
    git_dir: Path
    top: Path  # the top of the work tree (the git dir of a bare repo)
    bare: bool
    shallow: bool


def inspect_repository(repo: Path) -> RepositoryInfo:
    """Where and what the repository at `repo` is, with one `git rev-parse`.

    Raises WatchkeeperError naming the path when it is missing or not a git repository.
    """
    if not repo.exists():
        raise WatchkeeperError(f"{repo}: no such folder; pass --repo with a git repository.")
    result = subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "rev-parse",
            "--absolute-git-dir",
            "--is-bare-repository",
            "--is-shallow-repository",
            "--show-cdup",
        ],
        capture_output=True,
        check=False,
    )
    lines = result.stdout.decode("utf-8", "replace").splitlines()
    if result.returncode != 0 or len(lines) < 3:
        raise WatchkeeperError(
            f"{repo}: not a git repository (git rev-parse failed); pass --repo with the "
            "folder of a git clone."
        )
    git_dir = Path(lines[0])
    bare = lines[1] == "true"
    cdup = lines[3] if len(lines) > 3 else ""
    top = git_dir if bare else (repo / cdup).resolve()
    return RepositoryInfo(repo.resolve(), git_dir, top, bare, lines[2] == "true")


def check_repository(repo: Path) -> Path:
    """Return `repo` resolved; raises WatchkeeperError naming the path when it is missing or
    not a git repository."""
    return inspect_repository(repo).path


def _shallow_boundary(info: RepositoryInfo, shown: Path) -> ShallowBoundary | None:
    """The author times of a shallow clone's boundary commits (listed in .git/shallow)."""
    try:
        shas = (info.git_dir / "shallow").read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None
    if not shas:
        return None
    result = subprocess.run(
        ["git", "-C", str(info.path), "log", "--no-walk=unsorted", "--stdin", "--format=%at"],
        input="\n".join(shas).encode(),
        capture_output=True,
        check=False,
    )
    times = [int(t) for t in result.stdout.split() if t.lstrip(b"-").isdigit()]
    if not times:
        return None
    return ShallowBoundary(str(shown), min(times), max(times), len(times))


def _history_notes(info: RepositoryInfo, shown: Path) -> HistoryNotes:
    notes = HistoryNotes()
    if info.shallow:
        boundary = _shallow_boundary(info, shown)
        if boundary is not None:
            notes.shallow.append(boundary)
    for source, content in mailmap_sources(info.path, info.top, info.bare):
        notes.mailmap_problems.extend(check_mailmap(source, content))
    return notes


def _git_log_command(repo: Path, include_merges: bool) -> list[str]:
    command = [
        "git",
        "-C",
        str(repo),
        "log",
        "--all",
        "-z",
        "--date=raw",
        f"--format={LOG_FORMAT_WITH_PARENTS if include_merges else LOG_FORMAT}",
    ]
    if not include_merges:
        command.append("--no-merges")
    return command


def _parse_offsets(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """' +0130' -> 90, ' -0800' -> -480, vectorised over an S6 array of right-aligned offsets.

    Returns the minutes and whether each offset is well-formed (a sign, four digits, at most
    14 hours and under 60 minutes); malformed ones get 0 minutes (UTC).
    """
    if offsets.size == 0:
        return np.zeros(0, dtype=np.int16), np.ones(0, dtype=bool)
    characters = np.ascontiguousarray(offsets.astype(f"S{OFFSET_WIDTH}")).view(np.uint8)
    characters = characters.reshape(-1, OFFSET_WIDTH)
    digits = characters[:, 2:].astype(np.int16) - ord("0")
    hours = digits[:, 0] * 10 + digits[:, 1]
    minutes = digits[:, 2] * 10 + digits[:, 3]
    sign = characters[:, 1]
    valid = (
        (characters[:, 0] == ord(" "))
        & ((sign == ord("+")) | (sign == ord("-")))
        & ((digits >= 0) & (digits <= 9)).all(axis=1)
        & (hours <= LATEST_OFFSET_HOURS)
        & (minutes < 60)
    )
    value = np.where(sign == ord("-"), -1, 1) * (hours * 60 + minutes)
    result: np.ndarray = np.where(valid, value, 0).astype(np.int16)
    return result, valid


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


def _regular_width(fixed: list[bytes]) -> tuple[list[bytes], int, dict[int, bytes]]:
    """The records whose date is wider than DATE_WIDTH (a malformed offset) with their date
    replaced by a placeholder, the common width, and the original date of each."""
    lengths = np.fromiter(map(len, fixed), dtype=np.int64, count=len(fixed))
    shortest = int(lengths.min())
    # a SHA-1 is 40 hex digits, a SHA-256 64; a SHA-1 record never reaches 64 + TIMES_WIDTH
    sha_width = 64 if shortest >= 64 + TIMES_WIDTH else 40
    width = sha_width + TIMES_WIDTH
    wide: dict[int, bytes] = {}
    if shortest < width:
        return fixed, shortest, wide
    fixed = list(fixed)
    for row in np.flatnonzero(lengths != width).tolist():
        record = fixed[row]
        wide[row] = record[sha_width : len(record) - 11]
        fixed[row] = record[:sha_width] + b"!" * DATE_WIDTH + record[-11:]
    return fixed, width, wide


def _parse_fixed_fields(
    fixed: list[bytes],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[tuple[int, bytes]]]:
    """sha, author time, author offset (minutes), commit time, and the rows with a malformed
    offset with its text as git printed it."""
    n = len(fixed)
    width = len(fixed[0])
    joined = b"".join(fixed)
    wide: dict[int, bytes] = {}
    if len(joined) != width * n or width - TIMES_WIDTH not in (40, 64):
        fixed, width, wide = _regular_width(fixed)
        joined = b"".join(fixed)
    if width - TIMES_WIDTH not in (40, 64) or len(joined) != width * n:
        raise WatchkeeperError(
            "git log printed a commit line of unexpected width; is this a git from 2.0 on?"
        )
    table = np.frombuffer(joined, dtype=np.uint8).reshape(n, width)
    sha_width = width - TIMES_WIDTH
    sha = np.ascontiguousarray(table[:, :sha_width]).view(f"S{sha_width}").reshape(n)
    date = table[:, sha_width : sha_width + DATE_WIDTH]
    author_time = _right_aligned_integers(date[:, : DATE_WIDTH - OFFSET_WIDTH])
    offset_text = np.ascontiguousarray(date[:, DATE_WIDTH - OFFSET_WIDTH :])
    minutes, valid = _parse_offsets(offset_text.view(f"S{OFFSET_WIDTH}").reshape(n))
    commit_time = _right_aligned_integers(table[:, sha_width + DATE_WIDTH :])
    bad = []
    for row in np.flatnonzero(~valid).tolist():
        text = wide[row] if row in wide else bytes(date[row])
        parts = text.split()
        if len(parts) == 2 and parts[0].lstrip(b"-").isdigit():
            author_time[row] = int(parts[0])
        bad.append((row, parts[-1] if parts else b"?"))
    return sha, author_time, minutes, commit_time, bad


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
        self.bad_offset_codes: dict[bytes, int] = {}
        self.bad_offset_rows: list[tuple[int, int]] = []  # (row, index into bad_offset_codes)
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
        sha, author_time, offsets, commit_time, bad = _parse_fixed_fields(parts[0:complete:width])
        for row, text in bad:
            code = self.bad_offset_codes.setdefault(text, len(self.bad_offset_codes))
            self.bad_offset_rows.append((self.count + row, code))
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
        bad_offset = None
        if self.bad_offset_rows:
            bad_offset = np.full(sha.shape[0], -1, dtype=np.int16)
            rows, codes = zip(*self.bad_offset_rows, strict=True)
            bad_offset[list(rows)] = codes
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
            bad_offset=bad_offset,
            bad_offset_texts=[t.decode("utf-8", "replace") for t in self.bad_offset_codes],
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
    texts: dict[str, int] = {}
    bad_parts = []
    for table in tables:
        if table.bad_offset is None:
            bad_parts.append(np.full(len(table), -1, dtype=np.int16))
            continue
        recode_text = np.array(
            [texts.setdefault(t, len(texts)) for t in table.bad_offset_texts], dtype=np.int16
        )
        bad_parts.append(np.where(table.bad_offset >= 0, recode_text[table.bad_offset], -1))
    notes = HistoryNotes()
    for table in tables:
        notes.extend(table.notes)
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
        bad_offset=np.concatenate(bad_parts).astype(np.int16) if texts else None,
        bad_offset_texts=list(texts),
        notes=notes,
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
        info = inspect_repository(repo)
        table = _merge_case_insensitive(_read_one_repo(repo, index, include_merges, progress))
        table.notes = _history_notes(info, repo)
        tables.append(table)
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
