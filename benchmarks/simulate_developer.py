"""Simulated developers with known coding time, for measuring coding-time estimators.

A developer's day is drawn from a profile: whether they work (workdays, weekends, holidays),
when they arrive and leave, meetings, coding sessions with heavy-tailed lengths separated by
breaks, and sometimes a late-night session. While coding they save files every few minutes
(with occasional reading pauses) and commit now and then, often at the end of a session; a few
commits happen outside coding (merges during a meeting, quick fixes). The ground truth is the
set of coding intervals. Times are UTC epoch seconds; the developer lives at a fixed UTC offset.

`simulate_alternating` is a second generator with a different structure (coding and other
work alternating back to back, Poisson commits with fix-ups, no session-end commits), so that
an estimator is not judged on one generator's assumptions only.

`WorkflowProfile` takes a developer of either generator and rewrites how their commits reach
the history, as real workflows do: squashing each session's commits with `rebase -i` (the
first commit's author date survives, the commit date is the rebase), sending a day's work as
a patch series (author dates seconds apart at the end of the day, applied days later with
`git am`), or merging a lot (a merge after most commits and bursts of merges). `BotProfile`
is an automated account: bursts of commits seconds apart at scheduled times, no coding at all.
Each developer has author times, committer times and merge flags for its commits.

Run it to print a summary of each profile:  .venv/bin/python benchmarks/simulate_developer.py
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

DAY = 86400
MINUTE = 60
START_EPOCH = 1704067200  # 2024-01-01T00:00:00Z, a Monday


@dataclass(frozen=True)
class DeveloperProfile:
    """The habits of one kind of developer (times in hours or minutes as named)."""

    name: str = "office"
    workdays: tuple[int, ...] = (0, 1, 2, 3, 4)  # Monday = 0
    utc_offset_minutes: int = 60
    arrival_hour: float = 9.0
    arrival_sd_hours: float = 0.7
    workday_hours: float = 8.5
    workday_sd_hours: float = 1.0
    holiday_probability: float = 0.04  # single days off
    vacation_weeks_per_quarter: float = 0.5  # whole weeks off
    weekend_work_probability: float = 0.08
    late_night_probability: float = 0.07
    meetings_per_day: float = 1.5
    meeting_minutes: tuple[float, float] = (25.0, 70.0)
    session_median_minutes: float = 50.0
    session_sigma: float = 0.8  # lognormal: heavy right tail
    break_mean_minutes: float = 15.0
    commit_gap_minutes: float = 40.0  # mean gap between commits while coding
    commit_at_end_probability: float = 0.5
    stray_commits_per_day: float = 0.3  # commits outside coding
    save_gap_minutes: float = 3.0
    reading_pause_probability: float = 0.04  # per save: a 8-25 minute pause without saves


PROFILES: dict[str, DeveloperProfile] = {
    "office": DeveloperProfile(),
    "night_owl": DeveloperProfile(
        name="night_owl",
        utc_offset_minutes=-300,
        arrival_hour=13.0,
        arrival_sd_hours=1.5,
        workday_hours=9.0,
        late_night_probability=0.35,
        meetings_per_day=0.5,
        session_median_minutes=80.0,
        commit_gap_minutes=25.0,
    ),
    "rare_committer": DeveloperProfile(
        name="rare_committer",
        utc_offset_minutes=330,
        commit_gap_minutes=110.0,
        commit_at_end_probability=0.3,
        session_median_minutes=40.0,
        meetings_per_day=2.5,
        save_gap_minutes=5.0,
    ),
    "part_timer": DeveloperProfile(
        name="part_timer",
        workdays=(1, 3),
        utc_offset_minutes=-480,
        arrival_hour=10.0,
        workday_hours=5.0,
        weekend_work_probability=0.25,
        holiday_probability=0.1,
        session_median_minutes=35.0,
        commit_gap_minutes=20.0,
        stray_commits_per_day=0.1,
    ),
}


@dataclass
class SimulatedDeveloper:
    """Events and ground truth for one simulated developer."""

    profile: DeveloperProfile | AlternatingProfile
    days: int
    event_times: np.ndarray  # UTC epoch seconds (author times for commits), sorted
    event_kinds: np.ndarray  # 0 = commit, 1 = save
    coding_intervals: list[tuple[float, float]] = field(default_factory=list)
    commit_times: np.ndarray | None = None  # committer time of every event (saves: own time)
    merge_flags: np.ndarray | None = None  # True for merge commits

    @property
    def committed_at(self) -> np.ndarray:
        """Committer time of every event (the event's own time unless a workflow moved it)."""
        return self.event_times if self.commit_times is None else self.commit_times

    @property
    def is_merge(self) -> np.ndarray:
        """Merge flag of every event."""
        if self.merge_flags is None:
            return np.zeros(self.event_times.shape, dtype=bool)
        return self.merge_flags

    @property
    def local_start(self) -> int:
        """Local midnight of the first simulated day, as epoch + offset seconds."""
        return START_EPOCH

    def truth_minutes_per_day(self) -> np.ndarray:
        """Ground-truth coding minutes per local day."""
        minutes = np.zeros(self.days)
        offset = self.profile.utc_offset_minutes * MINUTE
        for start, end in self.coding_intervals:
            local_start, local_end = start + offset - START_EPOCH, end + offset - START_EPOCH
            day = int(local_start // DAY)
            while local_start < local_end and day < self.days:
                cut = min(local_end, (day + 1) * DAY)
                if day >= 0:
                    minutes[day] += (cut - local_start) / MINUTE
                local_start, day = cut, day + 1
        return minutes


def _lognormal_minutes(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(median * np.exp(sigma * rng.standard_normal()))


def _simulate_block(
    rng: np.random.Generator,
    profile: DeveloperProfile,
    start: float,
    end: float,
    meetings: list[tuple[float, float]],
    intervals: list[tuple[float, float]],
    times: list[float],
    kinds: list[int],
) -> None:
    """Fill [start, end) (local minutes from the day's midnight) with sessions and breaks."""
    now = start
    while now < end:
        blocking = [m for m in meetings if m[0] <= now < m[1]]
        if blocking:
            now = blocking[0][1]
            continue
        next_meeting = min((m[0] for m in meetings if m[0] > now), default=end)
        length = _lognormal_minutes(rng, profile.session_median_minutes, profile.session_sigma)
        session_end = min(now + max(length, 5.0), next_meeting, end)
        if session_end - now >= 3.0:
            intervals.append((now, session_end))
            _emit_session_events(rng, profile, now, session_end, times, kinds)
        now = session_end + rng.exponential(profile.break_mean_minutes)


def _emit_session_events(
    rng: np.random.Generator,
    profile: DeveloperProfile,
    start: float,
    end: float,
    times: list[float],
    kinds: list[int],
) -> None:
    moment = start + rng.exponential(profile.save_gap_minutes)
    while moment < end:
        times.append(moment)
        kinds.append(1)
        gap = rng.lognormal(np.log(profile.save_gap_minutes) - 0.18, 0.6)
        if rng.random() < profile.reading_pause_probability:
            gap += rng.uniform(8.0, 25.0)
        moment += gap
    moment = start + rng.exponential(profile.commit_gap_minutes)
    while moment < end:
        times.append(moment)
        kinds.append(0)
        moment += rng.exponential(profile.commit_gap_minutes)
    if rng.random() < profile.commit_at_end_probability:
        times.append(end - rng.uniform(0.0, 2.0))
        kinds.append(0)


def simulate(profile: DeveloperProfile, days: int, seed: int) -> SimulatedDeveloper:
    """Draw `days` days of a developer with the given profile."""
    rng = np.random.default_rng(seed)
    intervals_local: list[tuple[float, float]] = []
    times_local: list[float] = []
    kinds: list[int] = []
    vacation_days: set[int] = set()
    for quarter_start in range(0, days, 91):
        for _ in range(rng.poisson(profile.vacation_weeks_per_quarter)):
            first = quarter_start + int(rng.integers(0, 91))
            vacation_days.update(range(first - first % 7, first - first % 7 + 7))
    for day in range(days):
        weekday = day % 7
        base = day * 24 * 60.0
        works = weekday in profile.workdays
        if works and (day in vacation_days or rng.random() < profile.holiday_probability):
            works = False
        if not works and weekday not in profile.workdays:
            works = rng.random() < profile.weekend_work_probability
            hours = rng.uniform(1.0, 4.0) if works else 0.0
        else:
            hours = max(1.0, rng.normal(profile.workday_hours, profile.workday_sd_hours))
        if works:
            arrival = 60 * float(
                np.clip(rng.normal(profile.arrival_hour, profile.arrival_sd_hours), 0.0, 23.0)
            )
            leave = min(arrival + 60 * hours, 24 * 60 - 1)
            meetings = []
            for _ in range(
                rng.poisson(
                    profile.meetings_per_day * (leave - arrival) / (60 * profile.workday_hours)
                )
            ):
                meeting_start = rng.uniform(arrival, leave)
                meeting_length = rng.uniform(*profile.meeting_minutes)
                meetings.append((meeting_start, min(meeting_start + meeting_length, leave)))
            lunch = arrival + 60 * rng.uniform(3.0, 4.5)
            if leave - arrival > 6 * 60:
                meetings.append((lunch, lunch + rng.uniform(30.0, 60.0)))
            meetings.sort()
            before = len(intervals_local)
            _simulate_block(
                rng,
                profile,
                base + arrival,
                base + leave,
                [(base + a, base + b) for a, b in meetings],
                intervals_local,
                times_local,
                kinds,
            )
            del before
            for _ in range(rng.poisson(profile.stray_commits_per_day)):
                moment = base + rng.uniform(arrival, leave)
                if not any(a <= moment < b for a, b in intervals_local[-40:]):
                    times_local.append(moment)
                    kinds.append(0)
        if rng.random() < profile.late_night_probability * (1.0 if works else 0.3):
            start = base + 60 * rng.uniform(21.0, 23.0)
            _simulate_block(
                rng,
                profile,
                start,
                start + 60 * rng.uniform(0.5, 2.5),
                [],
                intervals_local,
                times_local,
                kinds,
            )
    offset_seconds = profile.utc_offset_minutes * MINUTE
    to_utc = START_EPOCH - offset_seconds
    times = np.asarray(times_local) * MINUTE + to_utc
    order = np.argsort(times, kind="stable")
    return SimulatedDeveloper(
        profile=profile,
        days=days,
        event_times=times[order],
        event_kinds=np.asarray(kinds, dtype=np.int8)[order],
        coding_intervals=[(a * MINUTE + to_utc, b * MINUTE + to_utc) for a, b in intervals_local],
    )


@dataclass(frozen=True)
class AlternatingProfile:
    """A second, structurally different generator: at work the developer alternates between
    coding and other work with gamma-distributed lengths; commits are a Poisson process while
    coding (some followed by a quick fix-up commit) and rare otherwise; saves are a gamma
    renewal process while coding. No session-end commits, no lunch, no reading pauses."""

    name: str = "alternating"
    utc_offset_minutes: int = 0
    coding_mean_minutes: float = 45.0
    other_mean_minutes: float = 25.0
    duration_shape: float = 2.0
    commit_gap_minutes: float = 40.0
    fixup_probability: float = 0.2
    other_commits_per_hour: float = 0.1
    save_gap_minutes: float = 2.5
    weekend_work_probability: float = 0.1
    holiday_probability: float = 0.05


ALTERNATING_PROFILES: dict[str, AlternatingProfile] = {
    "alternating": AlternatingProfile(),
    "alt_rare_commits": AlternatingProfile(name="alt_rare_commits", commit_gap_minutes=90.0),
    "alt_short_breaks": AlternatingProfile(
        name="alt_short_breaks",
        other_mean_minutes=10.0,
        save_gap_minutes=6.0,
        utc_offset_minutes=540,
    ),
    "alt_erratic": AlternatingProfile(
        name="alt_erratic", duration_shape=0.7, utc_offset_minutes=-300
    ),
}


def simulate_alternating(profile: AlternatingProfile, days: int, seed: int) -> SimulatedDeveloper:
    """Draw `days` days of an alternating developer (see AlternatingProfile)."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    kinds: list[int] = []
    intervals: list[tuple[float, float]] = []
    for day in range(days):
        weekday = day % 7
        if weekday >= 5 and rng.random() > profile.weekend_work_probability:
            continue
        if rng.random() < profile.holiday_probability:
            continue
        start = rng.normal(9.0, 1.0) * 60
        length = rng.normal(8.5, 1.0) * 60 if weekday < 5 else rng.uniform(60.0, 180.0)
        end = min(start + length, 24 * 60 - 1)
        base = day * 24 * 60.0
        now, coding = start, bool(rng.random() < 0.5)
        while now < end:
            mean = profile.coding_mean_minutes if coding else profile.other_mean_minutes
            stop = min(now + rng.gamma(profile.duration_shape, mean / profile.duration_shape), end)
            if coding:
                intervals.append((base + now, base + stop))
                moment = now + rng.exponential(profile.commit_gap_minutes)
                while moment < stop:
                    times.append(base + moment)
                    kinds.append(0)
                    if rng.random() < profile.fixup_probability:
                        times.append(base + moment + rng.uniform(0.5, 3.0))
                        kinds.append(0)
                    moment += rng.exponential(profile.commit_gap_minutes)
                moment = now + rng.gamma(2.0, profile.save_gap_minutes / 2)
                while moment < stop:
                    times.append(base + moment)
                    kinds.append(1)
                    moment += rng.gamma(2.0, profile.save_gap_minutes / 2)
            elif profile.other_commits_per_hour > 0:
                moment = now + rng.exponential(60.0 / profile.other_commits_per_hour)
                while moment < stop:
                    times.append(base + moment)
                    kinds.append(0)
                    moment += rng.exponential(60.0 / profile.other_commits_per_hour)
            now, coding = stop, not coding
    to_utc = START_EPOCH - profile.utc_offset_minutes * MINUTE
    event_times = np.asarray(times) * MINUTE + to_utc
    order = np.argsort(event_times, kind="stable")
    return SimulatedDeveloper(
        profile=profile,  # type: ignore[arg-type]
        days=days,
        event_times=event_times[order],
        event_kinds=np.asarray(kinds, dtype=np.int8)[order],
        coding_intervals=[(a * MINUTE + to_utc, b * MINUTE + to_utc) for a, b in intervals],
    )


@dataclass(frozen=True)
class WorkflowProfile:
    """A developer of `base` whose commits reach the history through `workflow`: "squash"
    (rebase -i: each session's commits become one, with the first's author date and a commit
    date a few minutes after the session), "patch_series" (each day's commits re-dated to the
    end of the day, seconds apart, and applied one to five days later) or "merges" (a merge
    commit after most commits, and one or two bursts of several merges a day)."""

    name: str
    base: DeveloperProfile | AlternatingProfile
    workflow: str

    @property
    def utc_offset_minutes(self) -> int:
        return self.base.utc_offset_minutes


@dataclass(frozen=True)
class BotProfile:
    """An automated account: bursts of commits seconds apart at scheduled times (a nightly
    run and a few runs over the day), every day. It never codes."""

    name: str = "bot"
    utc_offset_minutes: int = 0
    runs_per_day: float = 3.0
    commits_per_run: float = 3.0
    author_name: str = "release-bot"  # named as real histories name their bots
    author_email: str = "41898282+release-bot[bot]@users.noreply.github.com"


WORKFLOW_PROFILES: dict[str, WorkflowProfile | BotProfile] = {
    "squasher": WorkflowProfile("squasher", PROFILES["office"], "squash"),
    "patch_series": WorkflowProfile(
        "patch_series",
        dataclasses.replace(PROFILES["office"], utc_offset_minutes=-300),
        "patch_series",
    ),
    "merger": WorkflowProfile("merger", ALTERNATING_PROFILES["alternating"], "merges"),
    "bot": BotProfile(),
}


def _apply_workflow(
    developer: SimulatedDeveloper, profile: WorkflowProfile, rng: np.random.Generator
) -> SimulatedDeveloper:
    times = developer.event_times.astype(np.float64)
    kinds = developer.event_kinds.astype(np.int8)
    commits = np.flatnonzero(kinds == 0)
    committed = times.copy()
    merges = np.zeros(times.size, dtype=bool)
    keep = np.ones(times.size, dtype=bool)
    offset = profile.utc_offset_minutes * MINUTE
    if profile.workflow == "squash":
        starts = np.array([a for a, _ in developer.coding_intervals])
        ends = np.array([b for _, b in developer.coding_intervals])
        session = np.searchsorted(starts, times[commits], side="right") - 1
        inside = (session >= 0) & (times[commits] < ends[np.maximum(session, 0)])
        for index in np.unique(session[inside]):
            members = commits[inside & (session == index)]
            keep[members[1:]] = False  # squashed into the first, which keeps its author date
            committed[members[0]] = ends[index] + rng.uniform(1.0, 10.0) * MINUTE
    elif profile.workflow == "patch_series":
        day = np.floor_divide(times[commits] + offset, DAY)
        for value in np.unique(day):
            members = commits[day == value]
            sent = times[members].max() + rng.uniform(5.0, 30.0) * MINUTE
            times[members] = sent + 2.0 * np.arange(members.size)
            committed[members] = times[members] + rng.uniform(1.0, 5.0) * DAY
    elif profile.workflow == "merges":
        extra: list[float] = []
        for moment in times[commits]:
            if rng.random() < 0.8:
                extra.append(moment + rng.uniform(0.5, 20.0) * MINUTE)
        work_days = np.unique(np.floor_divide(times[commits] + offset, DAY))
        for value in work_days:
            for _ in range(int(rng.integers(1, 3))):
                start = value * DAY - offset + rng.uniform(9.0, 17.0) * 3600
                extra.extend(start + 5.0 * np.arange(int(rng.integers(3, 9))))
        added = np.asarray(extra, dtype=np.float64)
        times = np.r_[times, added]
        committed = np.r_[committed, added]
        kinds = np.r_[kinds, np.zeros(added.size, dtype=np.int8)]
        merges = np.r_[merges, np.ones(added.size, dtype=bool)]
        keep = np.r_[keep, np.ones(added.size, dtype=bool)]
    else:
        raise ValueError(f"unknown workflow {profile.workflow!r}")
    times, committed, kinds, merges = times[keep], committed[keep], kinds[keep], merges[keep]
    order = np.argsort(times, kind="stable")
    return SimulatedDeveloper(
        profile=profile,  # type: ignore[arg-type]
        days=developer.days,
        event_times=times[order],
        event_kinds=kinds[order],
        coding_intervals=developer.coding_intervals,
        commit_times=committed[order],
        merge_flags=merges[order],
    )


def simulate_bot(profile: BotProfile, days: int, seed: int) -> SimulatedDeveloper:
    """Draw `days` days of a bot (see BotProfile): commits only, no coding."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    for day in range(days):
        base = START_EPOCH + day * DAY - profile.utc_offset_minutes * MINUTE
        runs = [3.0, *rng.uniform(0.0, 24.0, rng.poisson(profile.runs_per_day - 1))]
        for hour in runs:
            start = base + hour * 3600 + rng.uniform(0.0, 600.0)
            count = 1 + rng.poisson(profile.commits_per_run - 1)
            times.extend(start + rng.uniform(1.0, 20.0, count).cumsum())
    event_times = np.sort(np.asarray(times, dtype=np.float64))
    return SimulatedDeveloper(
        profile=profile,  # type: ignore[arg-type]
        days=days,
        event_times=event_times,
        event_kinds=np.zeros(event_times.size, dtype=np.int8),
        coding_intervals=[],
    )


def draw(
    profile: DeveloperProfile | AlternatingProfile | WorkflowProfile | BotProfile,
    days: int,
    seed: int,
) -> SimulatedDeveloper:
    """Simulate with whichever generator the profile belongs to."""
    if isinstance(profile, BotProfile):
        return simulate_bot(profile, days, seed)
    if isinstance(profile, WorkflowProfile):
        developer = draw(profile.base, days, seed)
        return _apply_workflow(developer, profile, np.random.default_rng(seed + 7919))
    if isinstance(profile, AlternatingProfile):
        return simulate_alternating(profile, days, seed)
    return simulate(profile, days, seed)


def identity_of(
    profile: DeveloperProfile | AlternatingProfile | WorkflowProfile | BotProfile,
) -> tuple[str, str]:
    """(author name, email) the developer commits under: a bot's own, else one from the kind."""
    if isinstance(profile, BotProfile):
        return profile.author_name, profile.author_email
    return profile.name.replace("_", " ").title(), f"{profile.name}@example.com"


def random_profile(seed: int) -> DeveloperProfile:
    """A profile with every habit drawn at random around plausible values."""
    rng = np.random.default_rng(seed)
    base = DeveloperProfile()
    return dataclasses.replace(
        base,
        name=f"random-{seed}",
        utc_offset_minutes=int(rng.choice([-480, -300, 0, 60, 120, 330, 540])),
        arrival_hour=float(rng.uniform(7.0, 14.0)),
        workday_hours=float(rng.uniform(5.0, 10.0)),
        late_night_probability=float(rng.uniform(0.0, 0.3)),
        meetings_per_day=float(rng.uniform(0.0, 3.0)),
        session_median_minutes=float(rng.uniform(25.0, 100.0)),
        session_sigma=float(rng.uniform(0.5, 1.1)),
        break_mean_minutes=float(rng.uniform(5.0, 30.0)),
        commit_gap_minutes=float(rng.uniform(15.0, 120.0)),
        commit_at_end_probability=float(rng.uniform(0.1, 0.8)),
        stray_commits_per_day=float(rng.uniform(0.0, 0.8)),
        save_gap_minutes=float(rng.uniform(1.5, 6.0)),
    )


if __name__ == "__main__":
    everyone: dict[str, DeveloperProfile | AlternatingProfile | WorkflowProfile | BotProfile] = {
        **PROFILES,
        **ALTERNATING_PROFILES,
        **WORKFLOW_PROFILES,
    }
    for kind, profile in everyone.items():
        developer = draw(profile, days=90, seed=1)
        truth = developer.truth_minutes_per_day()
        commits = int((developer.event_kinds == 0).sum())
        saves = int((developer.event_kinds == 1).sum())
        print(
            f"{kind:15s} coding {truth.mean():6.1f} min/day  commits {commits:5d}  "
            f"saves {saves:6d}  sessions {len(developer.coding_intervals)}"
        )
