"""The baselines: git-hours' exact rules (as git-hours 1.5.0) and the 15-minute timeout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from agent.activity.coding_time.baselines import (
    author_time_sessions_minutes_per_day,
    git_hours_minutes_per_day,
    git_hours_total_minutes,
    timeout_minutes_per_day,
)
from agent.activity.estimates import ActivityRequest, load_commits, personal_report, team_report
from tests.agent.activity.coding_time.history import DAY, HOUR


def test_git_hours_exact_rules() -> None:
    minute = 60.0
    commits = np.array([0, 30, 149, 300, 300 + 119.9]) * minute  # gaps 30, 119, 151, 119.9
    # the first commit adds nothing; a gap of 120 minutes or more adds 120
    assert git_hours_minutes_per_day(commits, 0, 1).tolist() == pytest.approx(
        [30 + 119 + 120 + 119.9]
    )
    assert git_hours_minutes_per_day(np.array([0.0, 120 * minute]), 0, 1).tolist() == [120.0]
    # unsorted input, and credit goes to each commit's own day
    commits = np.array([DAY + 10 * minute, 23.5 * HOUR, DAY + 0.5 * HOUR])
    assert git_hours_minutes_per_day(commits, 0, 2).tolist() == pytest.approx([0, 40 + 20])
    # a single commit scores 0; the total is whole hours, rounded half up
    assert git_hours_minutes_per_day(np.array([5.0]), 0, 1).tolist() == [0.0]
    assert git_hours_total_minutes(np.array([5.0])) == 0.0
    assert git_hours_total_minutes(np.array([0.0, 90 * minute])) == 120.0
    assert git_hours_total_minutes(np.array([0.0, 89 * minute])) == 60.0
    # the old variant (author time, first-commit credit) keeps its own name
    assert author_time_sessions_minutes_per_day(np.array([0.0, 1800.0]), 0, 1).tolist() == [150.0]


def test_git_hours_gaps_do_not_depend_on_time_zones() -> None:
    utc = np.array([0.0, 3600.0]) + 10 * DAY + 23 * HOUR
    shifted = utc + np.array([0.0, 2 * HOUR])  # second commit written in another zone
    days = git_hours_minutes_per_day(utc, 10, 2, local_times=shifted)
    assert days.tolist() == [0.0, 60.0]  # 60 minutes, credited to the later commit's local day


def _git(repo: Path, *args: str, author: tuple[str, str, str], committer: str) -> None:
    name, email, author_date = author
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_AUTHOR_DATE": author_date,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_COMMITTER_DATE": committer,
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)


def test_git_hours_on_a_real_repository(tmp_path: Path) -> None:
    """Values worked out by hand, by git-hours 1.5.0's rules, on a repo built with known times.

    ann (committer times, UTC):  09:00, 09:40 (+0200 zone), 13:00 (a merge), 13:50 (author
    time a day earlier: a rebased commit), next day 10:00.
        gaps: 40 -> 40; 200 -> 120; 50 -> 50; 1210 -> 120. Total 330 min = 5.5 h -> 6 h.
        Day 1 gets 40 + 120 + 50 = 210, day 2 gets 120.
    bob: one commit -> 0.
    """
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    ann = ("Ann", "ann@example.com")
    day1 = 1704096000  # 2024-01-01T08:00:00Z

    def commit(who: tuple[str, str], author: str, committer: str, message: str) -> None:
        (repo / f"{message}.txt").write_text(message)
        _git(repo, "add", f"{message}.txt", author=(*who, author), committer=committer)
        _git(repo, "commit", "-q", "-m", message, author=(*who, author), committer=committer)

    commit(ann, f"@{day1 + 3600} +0000", f"@{day1 + 3600} +0000", "one")  # 09:00Z
    _git(repo, "checkout", "-q", "-b", "side", author=(*ann, f"@{day1}"), committer=f"@{day1}")
    commit(ann, f"@{day1 + 6000} +0200", f"@{day1 + 6000} +0200", "two")  # 09:40Z, +0200
    _git(repo, "checkout", "-q", "main", author=(*ann, f"@{day1}"), committer=f"@{day1}")
    commit(("Bob", "bob@example.com"), f"@{day1 + 7200} +0000", f"@{day1 + 7200} +0000", "bob")
    merge_at = f"@{day1 + 5 * 3600} +0000"  # 13:00Z
    _git(
        repo,
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "merge side",
        "side",
        author=(*ann, merge_at),
        committer=merge_at,
    )
    commit(ann, f"@{day1 + 6 * 3600 - DAY} +0000", f"@{day1 + 5 * 3600 + 3000} +0000", "three")
    commit(ann, f"@{day1 + DAY + 2 * 3600} +0000", f"@{day1 + DAY + 2 * 3600} +0000", "four")
    request = ActivityRequest(repos=[repo], authors=["ann@example.com"], zone_name="UTC")
    table = load_commits(request)
    assert int(table.is_merge.sum()) == 1
    report = personal_report(request, table)
    estimate = report.estimate
    ann_days = dict(zip(estimate.dates, estimate.git_hours_minutes.tolist(), strict=True))
    assert ann_days["2024-01-01"] == pytest.approx(210.0)
    assert ann_days["2024-01-02"] == pytest.approx(120.0)
    assert estimate.git_hours_total_minutes == 360.0  # 5.5 h rounds up to 6 h
    team = team_report(ActivityRequest(repos=[repo], authors=[], zone_name="UTC"), table)
    by_email = {row.email: row for row in team.rows}
    assert by_email["ann@example.com"].git_hours_minutes == 360.0
    assert by_email["bob@example.com"].git_hours_minutes == 0.0
    # without --tz the team view puts days in each author's zone; gaps stay the same
    team_local = team_report(ActivityRequest(repos=[repo], authors=[]), table)
    assert {r.email: r.git_hours_minutes for r in team_local.rows}["ann@example.com"] == 360.0


def test_timeout_joins_events_closer_than_fifteen_minutes() -> None:
    minute = 60.0
    events = np.array([0, 10, 24, 40, 41, 200]) * minute  # gaps 10, 14, 16, 1, 159
    assert timeout_minutes_per_day(events, 0, 1).tolist() == pytest.approx([10 + 14 + 1])
    assert timeout_minutes_per_day(np.array([5.0]), 0, 1).tolist() == [0.0]
