"""The baselines the coding-time HMM is compared with: git-hours and a 15-minute timeout."""

from __future__ import annotations

import numpy as np

from agent.activity.coding_time.bins import day_numbers

GIT_HOURS_MAX_GAP_MINUTES = 120.0
GIT_HOURS_FIRST_COMMIT_MINUTES = 120.0
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


def git_hours_minutes_per_day(
    commit_local_times: np.ndarray, first_day: int, n_days: int
) -> np.ndarray:
    """The git-hours heuristic with its defaults, credited to the day of each commit.

    Commits are sorted; a gap to the previous commit shorter than 120 minutes counts in full,
    and the first commit of a session (a longer gap, or the very first commit) adds 120 minutes.

    >>> git_hours_minutes_per_day(np.array([0.0, 1800.0, 86400.0]), 0, 2).tolist()
    [150.0, 120.0]
    """
    times = np.sort(np.asarray(commit_local_times, dtype=np.float64))
    if times.size == 0:
        return np.zeros(n_days)
    gaps = np.diff(times) / 60.0
    credit = np.empty(times.size)
    credit[0] = GIT_HOURS_FIRST_COMMIT_MINUTES
    credit[1:] = np.where(gaps < GIT_HOURS_MAX_GAP_MINUTES, gaps, GIT_HOURS_FIRST_COMMIT_MINUTES)
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
