"""The baselines: git-hours' exact rules and the 15-minute timeout."""

from __future__ import annotations

import numpy as np
import pytest

from agent.activity.coding_time.baselines import (
    git_hours_minutes_per_day,
    timeout_minutes_per_day,
)
from tests.agent.activity.coding_time.history import DAY, HOUR


def test_git_hours_exact_rules() -> None:
    minute = 60.0
    commits = np.array([0, 30, 149, 300, 300 + 119.9]) * minute  # gaps 30, 119, 151, 119.9
    assert git_hours_minutes_per_day(commits, 0, 1).tolist() == pytest.approx(
        [120 + 30 + 119 + 120 + 119.9]
    )
    # unsorted input, and credit goes to each commit's own day
    commits = np.array([DAY + 10 * minute, 23.5 * HOUR, DAY + 0.5 * HOUR])
    assert git_hours_minutes_per_day(commits, 0, 2).tolist() == pytest.approx([120, 40 + 20])


def test_timeout_joins_events_closer_than_fifteen_minutes() -> None:
    minute = 60.0
    events = np.array([0, 10, 24, 40, 41, 200]) * minute  # gaps 10, 14, 16, 1, 159
    assert timeout_minutes_per_day(events, 0, 1).tolist() == pytest.approx([10 + 14 + 1])
    assert timeout_minutes_per_day(np.array([5.0]), 0, 1).tolist() == [0.0]
