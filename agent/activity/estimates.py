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
    TeamMember,
    estimate_coding_time,
    estimate_team,
    is_automated_identity,
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
    bots_as_people: bool = False  # estimate automated identities like anyone else


@dataclass
class PersonalReport:
    """A person's estimate with what the report prints around it."""

    estimate: CodingTimeEstimate
    zone: ZoneInfo
    authors: list[str]
    warnings: list[str] = field(default_factory=list)
    ledger_saves: int = 0
    automated: bool = False  # the identity is a bot's: no coding time

    def to_json(self) -> dict[str, object]:
        """The documented JSON shape of `watchkeeper coding-time --json`."""
        estimate = self.estimate
        shape: dict[str, object] = {
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
        if self.automated:
            shape["automated"] = True  # a bot's identity: no coding time
        return shape


@dataclass
class TeamRow:
    email: str
    name: str
    commits: int
    active_days: int
    coding_minutes: float
    git_hours_minutes: float
    timeout_minutes: float
    automated: bool = False  # a bot's identity: reported with 0 coding minutes


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
                    "automated": row.automated,
                }
                for row in self.rows
            ],
            "model": {
                "log_likelihood": None if fit is None else round(fit.log_likelihood, 4),
                "n_iter": 0 if fit is None else fit.n_iter,
                "converged": not self.team.unconverged,
                "unconverged_authors": len(self.team.unconverged),
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
    # merges are always read: git-hours counts them; the HMM reads them only with --include-merges
    table = read_commits(request.repos, include_merges=True, progress=progress)
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
    automated = False
    merge_flags = np.zeros(0, dtype=bool)
    git_hours_utc = git_hours_local = None
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
        automated = not request.bots_as_people and all(
            is_automated_identity(table.names[code], table.emails[code]) for code in codes
        )
        if automated:
            warnings.append(
                f"{', '.join(table.emails[code] for code in codes)} is an automated identity "
                "(a bot, by its name or email): reported with 0 coding minutes; "
                "--bots-as-people estimates it like a person"
            )
        keep = _drop_implausible(
            table.author_time[mine].astype(np.float64), request.now, "commits", warnings
        )
        mine[np.flatnonzero(mine)[~keep]] = False
        merges = table.is_merge & mine
        git_hours_utc = table.commit_time[mine].astype(np.float64)
        git_hours_local = to_local_seconds(table.commit_time[mine], zone)
        if not request.include_merges:
            mine &= ~table.is_merge
        commit_times = table.author_time[mine].astype(np.float64)
        merge_flags = merges[mine]
        utc_parts.append(commit_times)
        kind_parts.append(np.full(commit_times.size, COMMIT, dtype=np.int64))
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
    merge = np.zeros(utc.shape, dtype=bool)
    merge[: merge_flags.size] = merge_flags
    if utc.size:
        # an event present in two sources (git, the events file, the ledger) counts once; a
        # commit that is also a merge keeps the merge flag only when no plain commit shares it
        keys = np.stack([np.round(utc), kinds.astype(np.float64)], axis=1)
        order = np.lexsort((merge, keys[:, 1], keys[:, 0]))
        keys, merge = keys[order], merge[order]
        first = np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)]
        utc, kinds, merge = keys[first, 0], keys[first, 1].astype(np.int64), merge[first]
    local = to_local_seconds(utc, zone)
    if since is not None or until is not None:
        days = np.floor_divide(local, SECONDS_PER_DAY)
        inside = np.ones(local.shape, dtype=bool)
        if since is not None:
            inside &= days >= since
        if until is not None:
            inside &= days <= until
        local, kinds, merge = local[inside], kinds[inside], merge[inside]
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
        presence_only=merge if merge.any() else None,
        git_hours_times=None
        if git_hours_utc is None or git_hours_local is None
        else (git_hours_utc, git_hours_local),
        automated=automated,
    )
    fit = estimate.fit
    if fit is not None and not fit.converged:
        warnings.append(
            f"the fit stopped after {fit.n_iter} iterations before converging (last change "
            f"{fit.change_per_bin:.2g} per bin, tolerance {fit.tolerance:g}); the estimate may "
            "still move a little"
        )
    return PersonalReport(
        estimate, zone, list(request.authors), warnings, from_ledger, automated=automated
    )


def team_report(request: ActivityRequest, table: CommitTable, *, n_jobs: int = 1) -> TeamReport:
    """Every author's totals. Each commit is placed in its author's own UTC offset unless
    --tz is given."""
    since, until = _day_bounds(request)
    warnings: list[str] = []
    times = table.author_time.astype(np.float64)
    keep = _drop_implausible(times, request.now, "commits", warnings)
    table = table.select(keep)
    if request.zone_name:
        zone = resolve_zone(request.zone_name)
        local = to_local_seconds(table.author_time, zone)
        commit_local = to_local_seconds(table.commit_time, zone)
    else:
        shift = table.author_tz_minutes.astype(np.int64) * 60
        local = (table.author_time + shift).astype(np.float64)
        commit_local = (table.commit_time + shift).astype(np.float64)
    days = np.floor_divide(local, SECONDS_PER_DAY)
    inside = np.ones(local.shape, dtype=bool)
    if since is not None:
        inside &= days >= since
    if until is not None:
        inside &= days <= until
    codes = table.author_code[inside]
    local, commit_local = local[inside], commit_local[inside]
    commit_utc = table.commit_time[inside].astype(np.float64)
    is_merge = table.is_merge[inside]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(table.emails) + 1))
    members: list[TeamMember] = []
    counted: list[int] = []
    present: list[int] = []
    for i in range(len(table.emails)):
        rows_of = order[bounds[i] : bounds[i + 1]]
        if rows_of.size == 0:
            continue
        merges = is_merge[rows_of]
        fitted = rows_of if request.include_merges else rows_of[~merges]
        present.append(i)
        counted.append(int(fitted.size))
        members.append(
            TeamMember(
                local_times=local[fitted],
                kinds=np.zeros(fitted.size, np.int64),
                presence_only=is_merge[fitted] if is_merge[fitted].any() else None,
                git_hours_times=(commit_utc[rows_of], commit_local[rows_of]),
                automated=not request.bots_as_people
                and is_automated_identity(table.names[i], table.emails[i]),
            )
        )
    if not members:
        raise WatchkeeperError("no commits in the requested range; widen --since/--until.")
    team = estimate_team(
        members, bin_minutes=request.bin_minutes, first_day=since, last_day=until, n_jobs=n_jobs
    )
    unconverged = team.unconverged
    if unconverged:
        worst = max(team.members[i].change_per_bin for i in unconverged)
        warnings.append(
            f"{len(unconverged)} of {len(team.members)} authors' fits stopped at the iteration "
            f"limit before converging (largest last change {worst:.2g} per bin, "
            f"tolerance 1e-05)"
        )
    rows = [
        TeamRow(
            email=table.emails[i],
            name=table.names[i],
            commits=commits,
            active_days=member.active_days,
            coding_minutes=member.coding_minutes,
            git_hours_minutes=member.git_hours_minutes,
            timeout_minutes=member.timeout_minutes,
            automated=member.automated,
        )
        for i, commits, member in zip(present, counted, team.members, strict=True)
    ]
    rows.sort(key=lambda row: -row.coding_minutes)
    return TeamReport(rows, team, warnings)
