"""Activity events counted in bins of local time, as the sequences the coding-time HMM reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SECONDS_PER_DAY = 86400
HOURS_PER_WEEK = 168
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; weekdays count from Monday = 0
COMMIT, SAVE = 0, 1
KIND_NAMES = ("commit", "save")


def day_numbers(local_times: np.ndarray) -> np.ndarray:
    """Local day numbers (days since 1970-01-01) of local times in seconds."""
    days: np.ndarray = np.floor_divide(local_times, SECONDS_PER_DAY).astype(np.int64)
    return days


def hour_of_week(local_seconds: np.ndarray) -> np.ndarray:
    """Hour of the week (Monday 00:00-01:00 is 0) of local times in seconds."""
    hours = np.floor_divide(np.asarray(local_seconds, dtype=np.int64), 3600)
    result: np.ndarray = (hours + EPOCH_WEEKDAY * 24) % HOURS_PER_WEEK
    return result


@dataclass
class BinnedActivity:
    """Event counts on the bins near activity, as sequences the HMM reads.

    Bins further than `pad_hours` from every event are left out: each stretch of kept bins is
    one sequence, and left-out bins count as away.
    """

    bin_minutes: int
    first_day: int  # local day number (days since 1970-01-01) of the first reported day
    n_days: int
    bins: np.ndarray  # (T,) absolute bin numbers (local seconds // bin seconds)
    counts: np.ndarray  # (T, D) int64 events per kind
    classes: np.ndarray  # (T,) hour of the week
    starts: np.ndarray  # (S,) first row of each sequence
    ends: np.ndarray  # (S,) one past the last row
    first_offset: np.ndarray | None = (
        None  # (T,) seconds into the bin of its first event, NaN if none
    )
    last_offset: np.ndarray | None = (
        None  # (T,) seconds into the bin of its last event, NaN if none
    )

    @property
    def lengths(self) -> np.ndarray:
        lengths: np.ndarray = self.ends - self.starts
        return lengths

    @property
    def bin_seconds(self) -> int:
        return self.bin_minutes * 60

    @property
    def day_index(self) -> np.ndarray:
        """Report-day index (0 .. n_days-1) of every kept bin."""
        days: np.ndarray = (self.bins * self.bin_seconds) // SECONDS_PER_DAY - self.first_day
        return days


def bin_events(
    local_times: np.ndarray,
    kinds: np.ndarray,
    *,
    bin_minutes: int = 5,
    first_day: int | None = None,
    last_day: int | None = None,
    n_kinds: int | None = None,
    pad_hours: float = 3.0,
) -> BinnedActivity:
    """Count events per bin and kind on the stretches of bins within `pad_hours` of an event.

    `first_day`/`last_day` (inclusive local day numbers) bound the report; by default they are
    the days of the first and last event. Events outside are ignored.
    """
    if bin_minutes < 1 or (24 * 60) % bin_minutes != 0:
        raise ValueError(
            f"bin_minutes must divide a day evenly (1, 5, 10, 15, ...), got {bin_minutes}"
        )
    times = np.asarray(local_times, dtype=np.float64)
    kinds = np.asarray(kinds, dtype=np.int64)
    if times.shape != kinds.shape:
        raise ValueError("local_times and kinds must have the same length")
    if times.size and not np.all(np.isfinite(times)):
        raise ValueError("local_times contains NaN or infinite values")
    n_kinds = int(kinds.max()) + 1 if n_kinds is None and kinds.size else (n_kinds or 1)
    if kinds.size and (kinds.min() < 0 or kinds.max() >= n_kinds):
        raise ValueError(f"kinds must lie in [0, {n_kinds})")
    days = day_numbers(times)
    if first_day is None:
        first_day = int(days.min()) if days.size else 0
    if last_day is None:
        last_day = int(days.max()) if days.size else first_day
    if last_day < first_day:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")
    inside = (days >= first_day) & (days <= last_day)
    times, kinds = times[inside], kinds[inside]
    bin_seconds = bin_minutes * 60
    bins_per_day = SECONDS_PER_DAY // bin_seconds
    low, high = first_day * bins_per_day, (last_day + 1) * bins_per_day
    event_bins = np.floor_divide(times, bin_seconds).astype(np.int64)
    n_days = last_day - first_day + 1
    if event_bins.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return BinnedActivity(
            bin_minutes,
            first_day,
            n_days,
            empty,
            np.zeros((0, n_kinds), np.int64),
            empty,
            empty,
            empty,
        )
    unique_bins = np.unique(event_bins)
    pad = max(1, round(pad_hours * 60 / bin_minutes))
    window_starts = np.maximum(unique_bins - pad, low)
    window_ends = np.minimum(unique_bins + pad + 1, high)
    opens = np.r_[True, window_starts[1:] > window_ends[:-1]]
    closes = np.r_[opens[1:], True]
    starts_abs, ends_abs = window_starts[opens], window_ends[closes]
    lengths = ends_abs - starts_abs
    ends = np.cumsum(lengths)
    starts = ends - lengths
    total = int(ends[-1])
    bins = np.arange(total, dtype=np.int64) + np.repeat(starts_abs - starts, lengths)
    rows = np.searchsorted(bins, event_bins)
    counts = np.bincount(rows * n_kinds + kinds, minlength=total * n_kinds)
    order = np.argsort(times, kind="stable")
    sorted_rows, offsets = rows[order], times[order] - event_bins[order] * bin_seconds
    first_offset = np.full(total, np.nan)
    last_offset = np.full(total, np.nan)
    first_offset[sorted_rows[::-1]] = offsets[::-1]  # the earliest event of a bin is written last
    last_offset[sorted_rows] = offsets
    return BinnedActivity(
        bin_minutes=bin_minutes,
        first_day=first_day,
        n_days=n_days,
        bins=bins,
        counts=counts.reshape(total, n_kinds).astype(np.int64),
        classes=hour_of_week(bins * bin_seconds),
        starts=starts.astype(np.int64),
        ends=ends.astype(np.int64),
        first_offset=first_offset,
        last_offset=last_offset,
    )


def subsample_sequences(activity: BinnedActivity, max_rows: int) -> BinnedActivity:
    """Every k-th sequence, k chosen so that at most about `max_rows` bins remain.

    Parameters are fitted on this evenly spread sample of a long history; posteriors and
    the Viterbi path still cover every bin.
    """
    total = activity.counts.shape[0]
    if total <= max_rows or activity.starts.size <= 1:
        return activity
    stride = int(np.ceil(total / max_rows))
    chosen = np.arange(0, activity.starts.size, stride)
    lengths = activity.lengths[chosen]
    rows = np.concatenate(
        [
            np.arange(a, b)
            for a, b in zip(activity.starts[chosen], activity.ends[chosen], strict=True)
        ]
    )
    ends = np.cumsum(lengths)
    return BinnedActivity(
        bin_minutes=activity.bin_minutes,
        first_day=activity.first_day,
        n_days=activity.n_days,
        bins=activity.bins[rows],
        counts=activity.counts[rows],
        classes=activity.classes[rows],
        starts=ends - lengths,
        ends=ends,
    )
