"""Coding minutes per day shared among repos by the events of each bin."""

from __future__ import annotations

import numpy as np
import pytest

from agent.activity.coding_time import estimate_coding_time
from agent.activity.coding_time.by_repo import attribute_to_repos

DAY = 19_723  # 2024-01-01, a Monday
BIN = 300


def test_bins_with_events_are_shared_by_their_events_and_gaps_follow_the_earlier_repo() -> None:
    start = DAY * 86_400 + 9 * 3600
    bins = np.arange(start // BIN, start // BIN + 6)
    minutes = np.full(6, 5.0)
    # bin 0: two api events and one web event; bins 1-2 empty; bin 3: web; bins 4-5 empty
    times = np.array([start + 10, start + 20, start + 30, start + 3 * BIN + 5], dtype=float)
    days = attribute_to_repos(bins, minutes, BIN, DAY, 1, times, ["api", "api", "web", "web"])
    api, web = days.repos.index("api"), days.repos.index("web")
    # bin 0 splits 2:1, bins 1-2 follow bin 0's split, bins 3-5 are web's
    assert days.minutes[0, api] == pytest.approx(3 * 5.0 * 2 / 3)
    assert days.minutes[0, web] == pytest.approx(3 * 5.0 / 3 + 3 * 5.0)
    assert days.events.tolist() == [2, 2]
    assert days.order() == [web, api]


def test_bins_before_a_stretch_first_event_go_to_the_next_event_not_to_an_earlier_stretch() -> None:
    morning = DAY * 86_400 + 8 * 3600
    evening = DAY * 86_400 + 20 * 3600
    bins = np.r_[
        np.arange(morning // BIN, morning // BIN + 2), np.arange(evening // BIN, evening // BIN + 3)
    ]
    minutes = np.full(5, 5.0)
    times = np.array([morning + 1, evening + 2 * BIN + 1], dtype=float)
    days = attribute_to_repos(bins, minutes, BIN, DAY, 1, times, ["api", "web"])
    assert days.minutes[0].tolist() == pytest.approx([10.0, 15.0])


def test_per_repo_minutes_add_up_to_the_estimate_of_every_day() -> None:
    rng = np.random.default_rng(7)
    times, repos = [], []
    for day in range(10):
        for start_hour, repo in ((9, "api"), (14, "web"), (16, "api")):
            base = (DAY + day) * 86_400 + start_hour * 3600
            stamps = base + np.sort(rng.uniform(0, 5400, size=12))
            times.extend(stamps)
            repos.extend([repo] * stamps.size)
    local = np.array(times)
    kinds = np.ones(local.size, dtype=np.int64)
    estimate = estimate_coding_time(local, kinds)
    days = attribute_to_repos(
        estimate.bin_numbers,
        estimate.bin_coding_minutes,
        estimate.bin_minutes * 60,
        estimate.first_day,
        estimate.n_days,
        local,
        repos,
    )
    assert days.minutes.sum(axis=1) == pytest.approx(estimate.coding_minutes, abs=1e-6)
    api, web = days.repos.index("api"), days.repos.index("web")
    assert days.totals[api] > days.totals[web] > 0  # two api sessions a day against one


def test_no_events_or_no_bins_give_zero_minutes() -> None:
    days = attribute_to_repos(np.zeros(0, np.int64), np.zeros(0), BIN, DAY, 3, np.zeros(0), [])
    assert days.minutes.shape == (3, 0) and days.repos == []
    with pytest.raises(ValueError, match="same length"):
        attribute_to_repos(np.zeros(0, np.int64), np.zeros(0), BIN, DAY, 1, np.zeros(2), ["a"])


def test_day_totals_above_their_bins_are_shared_like_the_bins_or_by_the_days_events() -> None:
    start = DAY * 86_400 + 9 * 3600
    # day 0: one bin of 2 minutes in api, shown as 5 (a floor); day 1: no coding bins at all,
    # shown as 5, with one web event and three api events
    bins = np.array([start // BIN])
    times = np.array([start + 5, start + 86_400, start + 86_400 + 60, start + 86_400 + 120, 0.0])
    repos = ["api", "web", "api", "api", "api"]
    times[-1] = start + 86_400 + 180
    days = attribute_to_repos(
        bins, np.array([2.0]), BIN, DAY, 2, times, repos, day_minutes=np.array([5.0, 5.0])
    )
    api, web = days.repos.index("api"), days.repos.index("web")
    assert days.minutes[0].tolist() == pytest.approx([5.0, 0.0] if api == 0 else [0.0, 5.0])
    assert days.minutes[1, api] == pytest.approx(3.75)
    assert days.minutes[1, web] == pytest.approx(1.25)
    unscaled = attribute_to_repos(bins, np.array([2.0]), BIN, DAY, 2, times, repos)
    assert unscaled.minutes.sum(axis=1).tolist() == pytest.approx([2.0, 0.0])


def test_per_repo_minutes_match_floored_commit_days_of_the_estimate() -> None:
    rng = np.random.default_rng(3)
    times, kinds, repos = [], [], []
    for day in range(14):
        base = (DAY + day) * 86_400 + 10 * 3600
        stamps = base + np.sort(rng.uniform(0, 7200, size=30))
        times.extend(stamps)
        kinds.extend([1] * stamps.size)
        repos.extend(["api"] * stamps.size)
    lone_day = (DAY + 20) * 86_400 + 15 * 3600
    times.extend([lone_day, lone_day + 35 * 60])
    kinds.extend([0, 0])
    repos.extend(["web", "web"])
    local = np.array(times)
    estimate = estimate_coding_time(local, np.array(kinds, dtype=np.int64))
    days = attribute_to_repos(
        estimate.bin_numbers,
        estimate.bin_coding_minutes,
        estimate.bin_minutes * 60,
        estimate.first_day,
        estimate.n_days,
        local,
        repos,
        day_minutes=estimate.coding_minutes,
    )
    assert days.minutes.sum(axis=1) == pytest.approx(estimate.coding_minutes, abs=1e-6)
    lone = DAY + 20 - estimate.first_day
    assert estimate.coding_minutes[lone] >= 5.0
    assert days.minutes[lone, days.repos.index("web")] == pytest.approx(
        estimate.coding_minutes[lone]
    )
