"""Gathers a person's (or a team's) activity from git and events files and runs the estimator."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from agent.activity.coding_time import (
    COMMIT,
    SECONDS_PER_DAY,
    CodingTimeEstimate,
    TeamEstimate,
    estimate_coding_time,
    estimate_team,
)
from agent.activity.events import EventTable, plausible_mask, read_events
from agent.activity.git_log import CommitTable, read_commits
from agent.errors import WatchkeeperError

EPOCH_DATE = date(1970, 1, 1)


def resolve_zone(name: str | None) -> ZoneInfo:
    """The IANA zone `name`, or the system's zone (TZ, /etc/timezone, /etc/localtime, else UTC)."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise WatchkeeperError(
                f"--tz {name!r}: unknown time zone; use an IANA name such as Europe/Berlin, "
                "America/New_York or UTC."
            ) from None
    candidates: list[str] = []
    if os.environ.get("TZ"):
        candidates.append(os.environ["TZ"].lstrip(":"))
    timezone_file = Path("/etc/timezone")
    if timezone_file.is_file():
        candidates.append(timezone_file.read_text(encoding="utf-8", errors="replace").strip())
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    for candidate in candidates:
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def parse_day(text: str, option: str) -> int:
    """A YYYY-MM-DD date as a day number (days since 1970-01-01)."""
    try:
        return (date.fromisoformat(text) - EPOCH_DATE).days
    except ValueError:
        raise WatchkeeperError(f"{option} {text!r}: expected a date such as 2024-03-01.") from None


def to_local_seconds(utc_seconds: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """Epoch seconds shifted by the zone's UTC offset at each moment (looked up per hour)."""
    if utc_seconds.size == 0:
        return utc_seconds.astype(np.float64)
    hours = np.floor_divide(utc_seconds, 3600).astype(np.int64)
    unique_hours, inverse = np.unique(hours, return_inverse=True)
    offsets = np.array(
        [
            (datetime.fromtimestamp(int(h) * 3600, zone).utcoffset() or timedelta()).total_seconds()
            for h in unique_hours
        ]
    )
    local: np.ndarray = utc_seconds.astype(np.float64) + offsets[inverse]
    return local


def local_iso(local_seconds: float, zone: ZoneInfo) -> str:
    """ISO 8601 with the zone's offset for a local wall-clock time."""
    wall = datetime(1970, 1, 1) + timedelta(seconds=float(local_seconds))
    return wall.replace(tzinfo=zone).isoformat()


def day_iso(day_number: int) -> str:
    return (EPOCH_DATE + timedelta(days=day_number)).isoformat()


@dataclass
class ActivityRequest:
    """What the coding-time command was asked to do."""

    repos: list[Path]
    authors: list[str]
    events_file: Path | None = None
    since: str | None = None
    until: str | None = None
    zone_name: str | None = None
    bin_minutes: int = 5
    include_merges: bool = False
    now: float | None = None


@dataclass
class PersonalReport:
    """A person's estimate with what the report prints around it."""

    estimate: CodingTimeEstimate
    zone: ZoneInfo
    authors: list[str]
    warnings: list[str] = field(default_factory=list)
    ledger_saves: int = 0

    def to_json(self) -> dict[str, object]:
        """The documented JSON shape of `watchkeeper coding-time --json`."""
        estimate = self.estimate
        return {
            "events": {
                "commits": int(estimate.event_counts.get("commit", 0)),
                "saves": int(estimate.event_counts.get("save", 0)),
                "ledger_saves": self.ledger_saves,
            },
            "days": [
                {
                    "date": day,
                    "coding_minutes": round(float(hmm), 1),
                    "git_hours_minutes": round(float(git_hours), 1),
                    "timeout_minutes": round(float(timeout), 1),
                }
                for day, hmm, git_hours, timeout in zip(
                    estimate.dates,
                    estimate.coding_minutes,
                    estimate.git_hours_minutes,
                    estimate.timeout_minutes,
                    strict=True,
                )
            ],
            "sessions": [
                {"start": local_iso(start, self.zone), "end": local_iso(end, self.zone)}
                for start, end in estimate.sessions.tolist()
            ],
            "heatmap": estimate.heatmap.round(2).tolist(),
            "peak_hours": estimate.peak_hours,
            "review_windows": [
                {"weekday": w.weekday, "start_hour": w.start_hour, "end_hour": w.end_hour}
                for w in estimate.review_windows
            ],
            "model": estimate.model_summary(),
        }


@dataclass
class TeamRow:
    email: str
    name: str
    commits: int
    active_days: int
    coding_minutes: float
    git_hours_minutes: float
    timeout_minutes: float


@dataclass
class TeamReport:
    rows: list[TeamRow]
    team: TeamEstimate
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """`{"authors": [...], "model": {...}}` for `--all-authors --json`."""
        fit = self.team.team_fit
        return {
            "authors": [
                {
                    "email": row.email,
                    "name": row.name,
                    "commits": row.commits,
                    "active_days": row.active_days,
                    "coding_minutes": round(row.coding_minutes, 1),
                    "git_hours_minutes": round(row.git_hours_minutes, 1),
                    "timeout_minutes": round(row.timeout_minutes, 1),
                }
                for row in self.rows
            ],
            "model": {
                "log_likelihood": None if fit is None else round(fit.log_likelihood, 4),
                "n_iter": 0 if fit is None else fit.n_iter,
                "converged": False if fit is None else fit.converged,
                "bin_minutes": self.team.bin_minutes,
            },
        }


def _day_bounds(request: ActivityRequest) -> tuple[int | None, int | None]:
    since = parse_day(request.since, "--since") if request.since else None
    until = parse_day(request.until, "--until") if request.until else None
    if since is not None and until is not None and since > until:
        raise WatchkeeperError(
            f"--since {request.since} is after --until {request.until}; swap them."
        )
    return since, until


def _utc_bounds(since: int | None, until: int | None) -> tuple[int | None, int | None]:
    """Loose UTC bounds (a day of slack either side) for filtering commits before conversion."""
    low = None if since is None else since * SECONDS_PER_DAY - SECONDS_PER_DAY
    high = None if until is None else (until + 2) * SECONDS_PER_DAY
    return low, high


def load_commits(
    request: ActivityRequest, progress: Callable[[int], None] | None = None
) -> CommitTable:
    """All commits of the requested repos (raises when a repo has none)."""
    since, until = _day_bounds(request)
    low, high = _utc_bounds(since, until)
    table = read_commits(request.repos, include_merges=request.include_merges, progress=progress)
    if len(table) == 0:
        names = ", ".join(str(r) for r in request.repos)
        raise WatchkeeperError(f"{names}: no commits yet; commit something first.")
    if low is not None or high is not None:
        keep = np.ones(len(table), dtype=bool)
        if low is not None:
            keep &= table.author_time >= low
        if high is not None:
            keep &= table.author_time < high
        table = table.select(keep)
    return table


def most_active(table: CommitTable, count: int = 5) -> list[str]:
    counts = table.commit_counts()
    order = np.argsort(-counts, kind="stable")[:count]
    return [f"{table.emails[i]} ({int(counts[i])} commits)" for i in order if counts[i] > 0]


def _drop_implausible(
    times: np.ndarray, now: float | None, what: str, warnings: list[str]
) -> np.ndarray:
    mask = plausible_mask(times, now)
    dropped = int((~mask).sum())
    if dropped:
        warnings.append(f"dropped {dropped} {what} with timestamps before 1990 or in the future")
    return mask


def personal_report(
    request: ActivityRequest,
    table: CommitTable | None,
    *,
    ledger_saves: EventTable | None = None,
    n_jobs: int = 1,
) -> PersonalReport:
    """One person's estimate from their commits (by `request.authors`), the events file and
    the saves the agent recorded in the ledger (`ledger_saves`)."""
    zone = resolve_zone(request.zone_name)
    since, until = _day_bounds(request)
    warnings: list[str] = []
    utc_parts: list[np.ndarray] = []
    kind_parts: list[np.ndarray] = []
    if table is not None:
        codes = table.codes_for(request.authors)
        mine = np.isin(table.author_code, codes)
        if not mine.any():
            authors = ", ".join(request.authors) or "(no identity)"
            active = "; ".join(most_active(table)) or "none"
            raise WatchkeeperError(
                f"no commits by {authors} in {', '.join(str(r) for r in request.repos)}. "
                f"Most active authors found: {active}. Pass --author EMAIL or set "
                "[identity] emails in config.toml."
            )
        commit_times = table.author_time[mine].astype(np.float64)
        keep = _drop_implausible(commit_times, request.now, "commits", warnings)
        utc_parts.append(commit_times[keep])
        kind_parts.append(np.full(int(keep.sum()), COMMIT, dtype=np.int64))
    if request.events_file is not None:
        events: EventTable = read_events(request.events_file)
        keep = _drop_implausible(events.times, request.now, "events", warnings)
        utc_parts.append(events.times[keep])
        kind_parts.append(events.kinds[keep].astype(np.int64))
    from_ledger = 0
    if ledger_saves is not None and len(ledger_saves):
        keep = _drop_implausible(ledger_saves.times, request.now, "ledger saves", warnings)
        from_ledger = int(keep.sum())
        utc_parts.append(ledger_saves.times[keep])
        kind_parts.append(ledger_saves.kinds[keep].astype(np.int64))
    utc = np.concatenate(utc_parts) if utc_parts else np.zeros(0)
    kinds = np.concatenate(kind_parts) if kind_parts else np.zeros(0, dtype=np.int64)
    if utc.size:
        # an event present in two sources (git, the events file, the ledger) counts once
        pairs = np.unique(np.stack([np.round(utc), kinds.astype(np.float64)], axis=1), axis=0)
        utc, kinds = pairs[:, 0], pairs[:, 1].astype(np.int64)
    local = to_local_seconds(utc, zone)
    if since is not None or until is not None:
        days = np.floor_divide(local, SECONDS_PER_DAY)
        inside = np.ones(local.shape, dtype=bool)
        if since is not None:
            inside &= days >= since
        if until is not None:
            inside &= days <= until
        local, kinds = local[inside], kinds[inside]
    if local.size == 0:
        raise WatchkeeperError(
            "no activity in the requested range; widen --since/--until or check --author."
        )
    if local.size == 1:
        warnings.append("only one event: the estimate rests almost entirely on the priors")
    estimate = estimate_coding_time(
        local,
        kinds,
        bin_minutes=request.bin_minutes,
        first_day=since,
        last_day=until,
        n_jobs=n_jobs,
    )
    return PersonalReport(estimate, zone, list(request.authors), warnings, from_ledger)


def team_report(request: ActivityRequest, table: CommitTable, *, n_jobs: int = 1) -> TeamReport:
    """Every author's totals. Each commit is placed in its author's own UTC offset unless
    --tz is given."""
    since, until = _day_bounds(request)
    warnings: list[str] = []
    times = table.author_time.astype(np.float64)
    keep = _drop_implausible(times, request.now, "commits", warnings)
    table = table.select(keep)
    if request.zone_name:
        local = to_local_seconds(table.author_time, resolve_zone(request.zone_name))
    else:
        local = (table.author_time + table.author_tz_minutes.astype(np.int64) * 60).astype(
            np.float64
        )
    days = np.floor_divide(local, SECONDS_PER_DAY)
    inside = np.ones(local.shape, dtype=bool)
    if since is not None:
        inside &= days >= since
    if until is not None:
        inside &= days <= until
    codes, local = table.author_code[inside], local[inside]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(table.emails) + 1))
    present = [i for i in range(len(table.emails)) if bounds[i + 1] > bounds[i]]
    members = [
        (local[order[bounds[i] : bounds[i + 1]]], np.zeros(bounds[i + 1] - bounds[i], np.int64))
        for i in present
    ]
    if not members:
        raise WatchkeeperError("no commits in the requested range; widen --since/--until.")
    team = estimate_team(
        members, bin_minutes=request.bin_minutes, first_day=since, last_day=until, n_jobs=n_jobs
    )
    rows = [
        TeamRow(
            email=table.emails[i],
            name=table.names[i],
            commits=member.n_events,
            active_days=member.active_days,
            coding_minutes=member.coding_minutes,
            git_hours_minutes=member.git_hours_minutes,
            timeout_minutes=member.timeout_minutes,
        )
        for i, member in zip(present, team.members, strict=True)
    ]
    rows.sort(key=lambda row: -row.coding_minutes)
    return TeamReport(rows, team, warnings)
