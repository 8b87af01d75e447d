"""The coding-time estimate: accuracy, sessions, review windows, edge cases, the team view."""

from __future__ import annotations

import numpy as np
import pytest

from agent.activity.coding_time import (
    AWAY,
    CODING,
    estimate_coding_time,
    estimate_team,
    git_hours_minutes_per_day,
)
from agent.activity.coding_time.estimate import review_windows_of
from tests.agent.activity.coding_time.history import DAY, HOUR, MONDAY, working_weeks


@pytest.mark.parametrize("with_saves", [False, True])
def test_estimate_is_close_to_truth_and_beats_baselines(with_saves: bool) -> None:
    times, kinds, truth = working_weeks(6, seed=1, with_saves=with_saves)
    estimate = estimate_coding_time(times, kinds, first_day=MONDAY, last_day=MONDAY + 41)
    true_daily = np.array([300.0 if d % 7 < 5 else 0.0 for d in range(42)])
    hmm_error = np.abs(estimate.coding_minutes - true_daily).mean()
    git_error = np.abs(estimate.git_hours_minutes - true_daily).mean()
    timeout_error = np.abs(estimate.timeout_minutes - true_daily).mean()
    assert estimate.coding_minutes.mean() == pytest.approx(truth, rel=0.25)
    assert hmm_error < git_error
    if with_saves:
        assert hmm_error < timeout_error
        assert hmm_error < 25
    assert estimate.coding_minutes[5] < 1 and estimate.coding_minutes[6] < 1  # the weekend
    assert estimate.fit is not None and estimate.fit.n_iter == len(estimate.fit.history)
    # coding state: the highest rate
    lambdas = estimate.fit.parameters.lambdas
    assert estimate.coding_state == CODING and lambdas[CODING].sum() > lambdas[AWAY].sum()
    # heatmap and peak hours fall in the blocks
    assert set(estimate.peak_hours) <= {9, 10, 11, 13, 14, 15}
    assert estimate.heatmap[5:].sum() < 1
    assert estimate.heatmap[0, 10] > 40  # Monday 10:00 is nearly always coding


def test_sessions_are_viterbi_coding_segments() -> None:
    times, kinds, _ = working_weeks(2, seed=2, with_saves=True)
    estimate = estimate_coding_time(times, kinds)
    sessions = estimate.sessions
    assert sessions.shape[1] == 2 and np.all(sessions[:, 1] > sessions[:, 0])
    assert 16 <= sessions.shape[0] <= 30  # two blocks on each of ten weekdays, a few splits
    lengths = (sessions[:, 1] - sessions[:, 0]) / 60
    assert np.median(lengths) == pytest.approx(150, rel=0.3)
    assert np.all(np.diff(sessions[:, 0]) > 0)


def test_review_windows_rule() -> None:
    presence = np.zeros((7, 24))
    heatmap = np.zeros((7, 24))
    presence[0, 9:17] = 55.0
    heatmap[0, 9:12] = 50.0  # deep work in the morning
    heatmap[0, 12:17] = 10.0
    presence[2, 10] = 10.0  # rarely present: not at work
    windows = review_windows_of(heatmap, presence)
    assert [(w.weekday, w.start_hour, w.end_hour) for w in windows] == [(0, 12, 17)]
    assert review_windows_of(np.zeros((7, 24)), np.zeros((7, 24))) == []


def test_single_event_and_no_event() -> None:
    one = estimate_coding_time(np.array([MONDAY * DAY + 10 * HOUR]), np.array([0]))
    assert one.n_days == 1
    assert 5 <= one.coding_minutes[0] < 240  # a day with a commit: at least 5 minutes
    assert one.git_hours_minutes.tolist() == [0.0]  # git-hours: a single commit scores 0
    none = estimate_coding_time(
        np.zeros(0), np.zeros(0, dtype=int), first_day=MONDAY, last_day=MONDAY + 2
    )
    assert none.coding_minutes.tolist() == [0.0, 0.0, 0.0] and none.fit is None


def test_team_estimates_each_member() -> None:
    busy, busy_kinds, _ = working_weeks(3, seed=5, with_saves=False)
    light = busy[::6]
    members = [
        (busy, busy_kinds),
        (light, np.zeros(light.size, dtype=int)),
        (busy[:1], busy_kinds[:1]),
    ]
    team = estimate_team(members, n_jobs=2)
    assert len(team.members) == 3 and team.team_fit is not None
    full, sparse, single = team.members
    assert full.coding_minutes > sparse.coding_minutes > single.coding_minutes >= 5
    assert full.active_days == 15 and single.active_days == 1
    assert full.git_hours_minutes == pytest.approx(
        round(git_hours_minutes_per_day(busy, MONDAY, 21).sum() / 60) * 60
    )
    # each row is the person's own estimate over the same days
    last = MONDAY + 18
    for member, (times, kinds) in zip(team.members, members, strict=True):
        own = estimate_coding_time(times, kinds, first_day=MONDAY, last_day=last)
        assert member.coding_minutes == own.coding_minutes.sum()
        assert member.converged


def test_estimates_on_a_seeded_history_stay_pinned() -> None:
    """Figures of the current model on a fixed history: a change in the math shows up here."""
    times, kinds, _ = working_weeks(2, seed=3, with_saves=True)
    estimate = estimate_coding_time(times, kinds, first_day=MONDAY, last_day=MONDAY + 13)
    assert estimate.coding_minutes[:5].tolist() == pytest.approx(
        [
            289.21478742627573,
            288.55141326101966,
            288.12981972760076,
            297.53818145010456,
            297.49997501825493,
        ],
        rel=1e-6,
    )
    assert estimate.coding_minutes.sum() == pytest.approx(2910.970117441162, rel=1e-6)
    assert estimate.git_hours_minutes.sum() == pytest.approx(3893.9838113586106, rel=1e-9)
    assert estimate.timeout_minutes.sum() == pytest.approx(2810.5133097132048, rel=1e-9)
    assert estimate.fit is not None
    assert (estimate.fit.n_iter, estimate.fit.converged) == (20, True)
    assert estimate.fit.log_likelihood == pytest.approx(-1336.6830364770453, rel=1e-6)
    assert estimate.fit.parameters.lambdas[CODING].tolist() == pytest.approx(
        [0.12548266302494296, 1.6978230687963474], rel=1e-6
    )
    assert estimate.sessions.shape == (20, 2)
    assert estimate.sessions[0].tolist() == [1704101400, 1704110100]
    assert estimate.peak_hours == [10, 14, 11]
    assert len(estimate.review_windows) == 16
    assert estimate.heatmap[0, 10] == pytest.approx(59.81480755558412, rel=1e-6)
    assert estimate.presence.sum() == pytest.approx(1644.731717775541, rel=1e-6)

    commits, commit_kinds, _ = working_weeks(2, seed=3, with_saves=False)
    team = estimate_team(
        [(times, kinds), (commits, commit_kinds), (commits[::5], commit_kinds[::5])]
    )
    assert [m.coding_minutes for m in team.members] == pytest.approx(
        [2910.970117441162, 3248.7853332448767, 2139.5458831690166], rel=1e-6
    )
    assert all(m.converged for m in team.members)


def test_commit_only_days_are_shrunk_towards_the_person_s_usual_day() -> None:
    """Commits only: a day with few commits of a steady worker is not read as a short day.
    The shrinkage keeps the total of the active days, and leaves estimates with saves alone."""
    times, kinds, _ = working_weeks(4, seed=11, with_saves=False)
    shrunk = estimate_coding_time(times, kinds)
    raw = estimate_coding_time(times, kinds, shrink_days=False)
    active = np.unique((times // DAY).astype(np.int64)) - shrunk.first_day
    # the same five hours every weekday: the commit counts vary by chance alone
    assert np.ptp(shrunk.coding_minutes[active]) < 0.5 * np.ptp(raw.coding_minutes[active])
    assert shrunk.coding_minutes.sum() == pytest.approx(raw.coding_minutes.sum(), rel=1e-9)
    # the bins follow their days: the heatmap and the per-repo split add up to the days
    per_day = np.bincount(
        (shrunk.bin_numbers * shrunk.bin_minutes * 60) // DAY - shrunk.first_day,
        weights=shrunk.bin_coding_minutes,
        minlength=shrunk.n_days,
    )
    assert per_day == pytest.approx(shrunk.coding_minutes)
    both, both_kinds, _ = working_weeks(4, seed=11, with_saves=True)
    assert np.array_equal(
        estimate_coding_time(both, both_kinds).coding_minutes,
        estimate_coding_time(both, both_kinds, shrink_days=False).coding_minutes,
    )
