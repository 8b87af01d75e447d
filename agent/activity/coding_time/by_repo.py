"""Coding minutes per day and repo: each bin's minutes shared among the repos of its events."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.activity.coding_time.bins import SECONDS_PER_DAY

NO_REPO = "(no repo)"
"""The label of events that name no repo (an --events file, saves outside any repo)."""


@dataclass
class RepoDays:
    """Coding minutes per reported day and repo, plus each repo's event count.

    `minutes[d, r]` is the coding time of day `first_day + d` spent on `repos[r]`; each row
    sums to that day's coding minutes (up to float rounding).
    """

    first_day: int
    repos: list[str]
    minutes: np.ndarray  # (n_days, n_repos)
    events: np.ndarray  # (n_repos,) events of each repo inside the reported days

    @property
    def totals(self) -> np.ndarray:
        """Coding minutes of each repo over all reported days."""
        totals: np.ndarray = self.minutes.sum(axis=0)
        return totals

    def order(self) -> list[int]:
        """Repo indexes, most coding minutes first (then most events, then name)."""
        return sorted(
            range(len(self.repos)),
            key=lambda r: (-round(float(self.totals[r]), 6), -int(self.events[r]), self.repos[r]),
        )


def attribute_to_repos(
    bin_numbers: np.ndarray,
    bin_minutes: np.ndarray,
    bin_seconds: int,
    first_day: int,
    n_days: int,
    event_local_times: np.ndarray,
    event_repos: list[str],
    *,
    day_minutes: np.ndarray | None = None,
) -> RepoDays:
    """Share each bin's coding minutes among repos, as WakaTime's per-project view does.

    A bin with events is shared in proportion to its events per repo. A bin without events
    (coding between two events) goes to the repos of the latest earlier bin with events in
    the same stretch of consecutive bins, or, before a stretch's first event, of the next one.
    `bin_numbers` are absolute bin numbers (local seconds // bin_seconds) and `bin_minutes` the
    coding minutes of each, as the estimator computes them.

    `day_minutes`, when given, are the day totals the views show (the estimator may raise a day
    above the sum of its bins, e.g. to its floor for a day with a commit): each day's row is
    scaled to its total, and a day whose bins hold nothing is shared by its events per repo.

    Example::

        days = attribute_to_repos(
            np.array([0, 1, 2]), np.array([5.0, 5.0, 5.0]), 300, 0, 1,
            np.array([10.0, 610.0]), ["api", "web"],
        )
        days.minutes.tolist()  # [[10.0, 5.0]]: bin 1 has no event and follows bin 0 (api)
    """
    bins = np.asarray(bin_numbers, dtype=np.int64)
    minutes = np.asarray(bin_minutes, dtype=np.float64)
    times = np.asarray(event_local_times, dtype=np.float64)
    if times.shape[0] != len(event_repos):
        raise ValueError("event_local_times and event_repos must have the same length")
    repos = sorted(set(event_repos))
    codes = np.array([repos.index(name) for name in event_repos], dtype=np.int64)
    n_repos = len(repos)
    event_days = np.floor_divide(times, SECONDS_PER_DAY).astype(np.int64) - first_day
    inside = (event_days >= 0) & (event_days < n_days)
    events = np.bincount(codes[inside], minlength=n_repos).astype(np.int64)
    result = np.zeros((n_days, n_repos))
    if bins.size == 0 or times.size == 0:
        return RepoDays(first_day, repos, result, events)
    event_bins = np.floor_divide(times, bin_seconds).astype(np.int64)
    occupied, position = np.unique(event_bins, return_inverse=True)
    counts = np.zeros((occupied.size, n_repos))
    np.add.at(counts, (position, codes), 1.0)
    shares = counts / counts.sum(axis=1, keepdims=True)
    breaks = np.r_[True, np.diff(bins) != 1]
    stretch_start = np.maximum.accumulate(np.where(breaks, np.arange(bins.size), 0))
    first_bin_of_stretch = bins[stretch_start]
    earlier = np.searchsorted(occupied, bins, side="right") - 1
    later = np.minimum(np.searchsorted(occupied, bins, side="left"), occupied.size - 1)
    earlier_in_stretch = (earlier >= 0) & (occupied[np.maximum(earlier, 0)] >= first_bin_of_stretch)
    source = np.where(earlier_in_stretch, earlier, later)
    per_bin = minutes[:, None] * shares[source]
    day_index = (bins * bin_seconds) // SECONDS_PER_DAY - first_day
    kept = (day_index >= 0) & (day_index < n_days)
    np.add.at(result, day_index[kept], per_bin[kept])
    if day_minutes is not None:
        result = _scaled_to_day_totals(result, day_minutes, event_days[inside], codes[inside])
    return RepoDays(first_day, repos, result, events)


def _scaled_to_day_totals(
    minutes: np.ndarray, day_totals: np.ndarray, event_days: np.ndarray, event_codes: np.ndarray
) -> np.ndarray:
    """`minutes` (days x repos) with each row scaled to `day_totals`; an empty row with a
    total is shared by that day's events per repo (left empty when the day has no events)."""
    totals = np.asarray(day_totals, dtype=np.float64)[: minutes.shape[0]]
    row_sums = minutes.sum(axis=1)
    scaled = minutes.copy()
    filled = row_sums > 0
    scaled[filled] *= (totals[filled] / row_sums[filled])[:, None]
    empty = ~filled & (totals > 0)
    if empty.any() and event_days.size:
        day_events = np.zeros_like(minutes)
        np.add.at(day_events, (event_days, event_codes), 1.0)
        counts = day_events.sum(axis=1)
        share = empty & (counts > 0)
        scaled[share] = day_events[share] / counts[share, None] * totals[share, None]
    return scaled
