"""The estimator's invariants on histories built the way people really commit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.activity.coding_time import estimate_coding_time, estimate_team
from agent.activity.coding_time.estimate import thin_repeats
from agent.activity.estimates import ActivityRequest, load_commits, personal_report, team_report
from tests.agent.activity.coding_time.history import DAY, HOUR, MONDAY, working_weeks
from tests.agent.activity.gitrepo import FakeCommit, build_repo


def _as_patch_series(times: np.ndarray) -> np.ndarray:
    """Each day's commits re-dated to 17:00 that day, three seconds apart (`git am` of a
    series whose dates a rebase refreshed)."""
    days = np.floor_divide(times, DAY)
    series = times.copy()
    for day in np.unique(days):
        on_day = days == day
        series[on_day] = day * DAY + 17 * HOUR + 3.0 * np.arange(int(on_day.sum()))
    return series


def test_repeated_commits_count_once() -> None:
    assert thin_repeats(np.array([400.0, 0.0, 30.0, 150.0, 90.0])).tolist() == [
        True,
        True,
        False,
        True,
        False,
    ]


def test_patch_series_do_not_collapse() -> None:
    times, kinds, _ = working_weeks(4, seed=4, with_saves=False)
    series = _as_patch_series(times)
    estimate = estimate_coding_time(series, kinds, first_day=MONDAY, last_day=MONDAY + 27)
    workdays = [d for d in range(28) if d % 7 < 5]
    assert np.all(estimate.coding_minutes[workdays] >= 60)  # one act of work a day, not ~0
    assert estimate.fit is not None and estimate.fit.converged


def test_every_commit_day_gets_five_minutes() -> None:
    # a sparse committer whose only commit on some days sits far from any other
    times, kinds, _ = working_weeks(3, seed=6, with_saves=True)
    lone = np.array([(MONDAY + 5) * DAY + 3 * HOUR, (MONDAY + 12) * DAY + 23.9 * HOUR])
    all_times = np.r_[times, lone]
    all_kinds = np.r_[kinds, [0, 0]]
    estimate = estimate_coding_time(all_times, all_kinds, first_day=MONDAY, last_day=MONDAY + 20)
    commit_days = np.unique(np.floor_divide(all_times[all_kinds == 0], DAY)).astype(int) - MONDAY
    assert np.all(estimate.coding_minutes[commit_days] >= 5.0)
    assert estimate.coding_minutes[5] >= 5.0 and estimate.coding_minutes[12] >= 5.0


def test_merges_never_lower_a_day() -> None:
    times, kinds, _ = working_weeks(4, seed=7, with_saves=False)
    rng = np.random.default_rng(7)
    after_commits = times[rng.random(times.size) < 0.8] + rng.uniform(30, 1200, size=1)
    days = np.unique(np.floor_divide(times, DAY))
    bursts = (days * DAY + 11 * HOUR)[:, None] + 5.0 * np.arange(6)[None, :]
    merges = np.r_[after_commits, bursts.ravel(), (MONDAY + 5) * DAY + 20 * HOUR]  # + a Saturday
    all_times = np.r_[times, merges]
    flags = np.r_[np.zeros(times.size, bool), np.ones(merges.size, bool)]
    assert flags.mean() >= 0.5  # half the commits or more are merges
    span = {"first_day": MONDAY, "last_day": MONDAY + 27}
    plain = estimate_coding_time(times, kinds, **span)
    merged = estimate_coding_time(
        all_times, np.zeros(all_times.size, int), presence_only=flags, **span
    )
    assert np.all(merged.coding_minutes >= plain.coding_minutes)
    assert merged.coding_minutes[5] >= 5.0  # the Saturday merge day
    assert merged.coding_minutes.sum() <= 1.3 * plain.coding_minutes.sum()  # not swamped


def test_fits_say_whether_they_converged() -> None:
    times, kinds, _ = working_weeks(3, seed=8, with_saves=True)
    short = estimate_coding_time(times, kinds, n_iter=2)
    assert short.fit is not None and not short.fit.converged
    summary = short.model_summary()
    assert summary["converged"] is False
    assert float(summary["change_per_bin"]) > float(summary["tolerance"])  # type: ignore[arg-type]
    full = estimate_coding_time(times, kinds)
    assert full.fit is not None and full.fit.converged
    assert full.fit.change_per_bin < full.fit.tolerance


def test_same_input_same_output() -> None:
    people = [working_weeks(2, seed=s, with_saves=s % 2 == 0)[:2] for s in range(4)]
    one = estimate_team(people, n_jobs=1)
    two = estimate_team(people, n_jobs=2)
    again = estimate_team(people, n_jobs=2)
    assert [m.coding_minutes for m in one.members] == [m.coding_minutes for m in two.members]
    assert [m.coding_minutes for m in two.members] == [m.coding_minutes for m in again.members]
    first = estimate_coding_time(*people[0])
    second = estimate_coding_time(*people[0])
    assert np.array_equal(first.coding_minutes, second.coding_minutes)
    assert np.array_equal(first.sessions, second.sessions)


def _history(seed: int) -> list[FakeCommit]:
    """Three people over three weeks: a regular committer with merges, a patch-series
    contributor (author dates seconds apart) and a one-commit author."""
    rng = np.random.default_rng(seed)
    first = MONDAY * DAY
    commits: list[FakeCommit] = []
    for day in range(21):
        if day % 7 >= 5:
            continue
        base = first + day * DAY
        moment = base + 9 * HOUR
        while moment < base + 16 * HOUR:
            commits.append(FakeCommit("ann@example.com", int(moment), "+0100"))
            moment += rng.exponential(2400)
        commits.append(FakeCommit("ann@example.com", int(base + 12 * HOUR), branch="topic"))
        commits.append(FakeCommit("ann@example.com", int(base + 12 * HOUR + 60), merge_of="topic"))
        for index in range(int(rng.integers(3, 12))):
            commits.append(FakeCommit("pat@example.com", int(base + 18 * HOUR + 3 * index)))
    commits.append(FakeCommit("once@example.com", first + 2 * DAY + 10 * HOUR))
    commits.sort(key=lambda c: c.time)
    return commits


@pytest.mark.parametrize("include_merges", [False, True])
def test_team_row_equals_own_estimate(tmp_path: Path, include_merges: bool) -> None:
    repo = build_repo(tmp_path / "repo", _history(seed=11))
    request = ActivityRequest(
        repos=[repo], authors=[], zone_name="UTC", include_merges=include_merges
    )
    table = load_commits(request)
    team = team_report(request, table, n_jobs=2)
    rows = {row.email: row for row in team.rows}
    assert set(rows) == {"ann@example.com", "pat@example.com", "once@example.com"}
    for email, row in rows.items():
        own = personal_report(
            ActivityRequest(
                repos=[repo], authors=[email], zone_name="UTC", include_merges=include_merges
            ),
            table,
        ).estimate
        mine = float(own.coding_minutes.sum())
        assert row.coding_minutes == pytest.approx(mine, rel=0.02), email
        assert row.git_hours_minutes == own.git_hours_total_minutes
        assert row.commits == own.event_counts["commit"]
    assert rows["once@example.com"].git_hours_minutes == 0.0
    assert rows["pat@example.com"].coding_minutes >= 15 * 5.0  # 15 series days, none collapsed


def test_merges_in_a_real_repo_never_lower_the_estimate(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", _history(seed=12))
    table = load_commits(ActivityRequest(repos=[repo], authors=[]))

    def daily(include_merges: bool) -> np.ndarray:
        request = ActivityRequest(
            repos=[repo],
            authors=["ann@example.com"],
            zone_name="UTC",
            include_merges=include_merges,
        )
        minutes: np.ndarray = personal_report(request, table).estimate.coding_minutes
        return minutes

    plain, merged = daily(False), daily(True)
    assert plain.shape == merged.shape
    assert np.all(merged >= plain)
