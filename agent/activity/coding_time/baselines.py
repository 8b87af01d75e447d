"""The baselines the coding-time HMM is compared with: git-hours and a 15-minute timeout."""

from __future__ import annotations

import numpy as np

from agent.activity.coding_time.bins import day_numbers

GIT_HOURS_MAX_GAP_MINUTES = 120.0
GIT_HOURS_SESSION_START_MINUTES = 120.0
GIT_HOURS_FIRST_COMMIT_MINUTES = GIT_HOURS_SESSION_START_MINUTES  # the old name
TIMEOUT_MINUTES = 15.0


def _per_day(
    credit_minutes: np.ndarray, day: np.ndarray, first_day: int, n_days: int
) -> np.ndarray:
    index = day - first_day
    inside = (index >= 0) & (index < n_days)
    minutes: np.ndarray = np.bincount(
        index[inside], weights=credit_minutes[inside], minlength=n_days
    )[:n_days]
    return minutes


def _git_hours_credit(commit_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, credit): commits sorted by time and what each adds, as git-hours 1.5.0 counts.

    The first commit adds nothing; each later one adds its gap to the previous commit when the
    gap is under 120 minutes, else 120 minutes (the invisible work before a session's first
    commit).
    """
    times = np.asarray(commit_times, dtype=np.float64)
    order = np.argsort(times, kind="stable")
    credit = np.zeros(times.size)
    if times.size > 1:
        gaps = np.diff(times[order]) / 60.0
        credit[1:] = np.where(
            gaps < GIT_HOURS_MAX_GAP_MINUTES, gaps, GIT_HOURS_SESSION_START_MINUTES
        )
    return order, credit


def git_hours_minutes_per_day(
    commit_times: np.ndarray,
    first_day: int,
    n_days: int,
    *,
    local_times: np.ndarray | None = None,
) -> np.ndarray:
    """git-hours (1.5.0, default options) for one author, credited to the day of each commit.

    Gaps are measured on `commit_times` (git-hours reads the committer time, in epoch seconds,
    so no time zone enters); every commit counts, merges included. A gap under 120 minutes
    counts in full, a longer gap adds 120 minutes, the very first commit adds nothing (so a
    single commit scores 0). Each amount is credited to the local day of the commit that ends
    the gap: `local_times` (the same commits' local times, in the same order; default
    `commit_times`) fix the days only.

    >>> git_hours_minutes_per_day(np.array([0.0, 1800.0, 86400.0]), 0, 2).tolist()
    [30.0, 120.0]
    """
    times = np.asarray(commit_times, dtype=np.float64)
    if times.size == 0:
        return np.zeros(n_days)
    local = times if local_times is None else np.asarray(local_times, dtype=np.float64)
    if local.shape != times.shape:
        raise ValueError("local_times and commit_times must have the same length")
    order, credit = _git_hours_credit(times)
    return _per_day(credit, day_numbers(local[order]), first_day, n_days)


def git_hours_total_minutes(commit_times: np.ndarray) -> float:
    """One author's git-hours total as the tool prints it: whole hours (rounded half up, as
    JavaScript's Math.round), in minutes. A team's total is the sum of these per-author figures.

    >>> git_hours_total_minutes(np.array([0.0, 5400.0]))
    120.0
    """
    _, credit = _git_hours_credit(np.asarray(commit_times, dtype=np.float64))
    hours = float(credit.sum()) / 60.0
    return float(np.floor(hours + 0.5)) * 60.0


def author_time_sessions_minutes_per_day(
    local_times: np.ndarray, first_day: int, n_days: int
) -> np.ndarray:
    """The variant this project used before: git-hours' rules on the author's local time, with
    120 minutes credited to the very first commit too. Kept for comparison; not git-hours.

    >>> author_time_sessions_minutes_per_day(np.array([0.0, 1800.0, 86400.0]), 0, 2).tolist()
    [150.0, 120.0]
    """
    times = np.sort(np.asarray(local_times, dtype=np.float64))
    if times.size == 0:
        return np.zeros(n_days)
    _, credit = _git_hours_credit(times)
    credit[0] = GIT_HOURS_SESSION_START_MINUTES
    return _per_day(credit, day_numbers(times), first_day, n_days)


def timeout_minutes_per_day(
    local_times: np.ndarray, first_day: int, n_days: int, timeout_minutes: float = TIMEOUT_MINUTES
) -> np.ndarray:
    """A WakaTime-style timeout: a gap between consecutive events shorter than the timeout
    counts in full (credited to the later event's day), a longer gap counts nothing.

    >>> timeout_minutes_per_day(np.array([0.0, 600.0, 4000.0]), 0, 1).tolist()
    [10.0]
    """
    times = np.sort(np.asarray(local_times, dtype=np.float64))
    if times.size < 2:
        return np.zeros(n_days)
    gaps = np.diff(times) / 60.0
    credit = np.where(gaps < timeout_minutes, gaps, 0.0)
    return _per_day(credit, day_numbers(times[1:]), first_day, n_days)
