"""Binning: hour of the week, padded stretches around events, argument checks, subsampling."""

from __future__ import annotations

import numpy as np
import pytest

from agent.activity.coding_time.bins import (
    HOURS_PER_WEEK,
    BinnedActivity,
    bin_events,
    hour_of_week,
    subsample_sequences,
)
from tests.agent.activity.coding_time.history import DAY, HOUR, MONDAY, working_weeks


def test_hour_of_week_starts_monday_midnight() -> None:
    monday = MONDAY * DAY
    assert hour_of_week(np.array([monday, monday + 3599, monday + 25 * HOUR])).tolist() == [
        0,
        0,
        25,
    ]
    assert hour_of_week(np.array([monday - 1])).tolist() == [HOURS_PER_WEEK - 1]


def test_binning_keeps_padded_stretches_around_events() -> None:
    times = MONDAY * DAY + np.array([10 * HOUR, 10 * HOUR + 60, 11 * HOUR, 20 * HOUR])
    activity = bin_events(times, np.array([0, 1, 0, 0]), bin_minutes=5, pad_hours=1.0)
    assert activity.n_days == 1 and activity.first_day == MONDAY
    assert activity.counts.sum(axis=0).tolist() == [3, 1]
    assert activity.starts.tolist() == [0, 37]  # 9:00-12:05 and 19:00-21:05 in 5-minute bins
    assert activity.lengths.tolist() == [37, 25]
    row = int(np.searchsorted(activity.bins, (MONDAY * DAY + 10 * HOUR) // 300))
    assert activity.counts[row].tolist() == [1, 1]
    assert set(activity.classes.tolist()) == {9, 10, 11, 12, 19, 20, 21}


def test_binning_validates_arguments() -> None:
    with pytest.raises(ValueError, match="bin_minutes must divide a day"):
        bin_events(np.array([0.0]), np.array([0]), bin_minutes=7)
    with pytest.raises(ValueError, match="NaN"):
        bin_events(np.array([np.nan]), np.array([0]))
    with pytest.raises(ValueError, match="last_day"):
        bin_events(np.array([0.0]), np.array([0]), first_day=5, last_day=4)


def test_subsample_keeps_whole_sequences() -> None:
    times, kinds, _ = working_weeks(4, seed=4, with_saves=False)
    activity = bin_events(times, kinds)
    sample = subsample_sequences(activity, activity.counts.shape[0] // 3)
    assert isinstance(sample, BinnedActivity)
    assert sample.counts.shape[0] <= activity.counts.shape[0] // 3 + activity.lengths.max()
    assert sample.starts[0] == 0 and sample.ends[-1] == sample.counts.shape[0]
    assert set(sample.bins.tolist()) <= set(activity.bins.tolist())
