"""`watchkeeper coding-time`: per-repo minutes, the words around counts, the one-day HTML chart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from agent.activity.coding_time import CodingTimeEstimate
from agent.activity.coding_time.estimate import peak_hours_of
from agent.activity.coding_time_store import shown_peak_hours
from agent.cli import main
from tests.agent.activity.gitrepo import FakeCommit, build_repo

MONDAY = 1704067200  # 2024-01-01T00:00:00Z


def run(*arguments: str) -> Result:
    return CliRunner().invoke(main, ["coding-time", *arguments])


def commits_every(start: float, count: int, minutes: int) -> list[FakeCommit]:
    return [FakeCommit("me@example.com", int(start + k * minutes * 60)) for k in range(count)]


def test_by_repo_shares_each_day_among_the_repos_worked_on(tmp_path: Path) -> None:
    api = build_repo(tmp_path / "api", commits_every(MONDAY + 9 * 3600, 8, 15))
    web = build_repo(tmp_path / "web", commits_every(MONDAY + 14 * 3600, 4, 15))
    common = ("--repo", str(api), "--repo", str(web), "--author", "me@example.com", "--tz", "UTC")
    result = run(*common, "--by-repo", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    by_repo = report["by_repo"]
    names = [row["repo"] for row in by_repo["repos"]]
    assert names == [str(api.resolve()), str(web.resolve())]  # most minutes first
    assert [row["events"] for row in by_repo["repos"]] == [8, 4]
    day_total = report["days"][0]["coding_minutes"]
    [monday] = by_repo["days"]
    assert monday["date"] == "2024-01-01"
    assert sum(monday["repos"].values()) == pytest.approx(day_total, abs=0.2)
    assert monday["repos"][str(api.resolve())] > monday["repos"][str(web.resolve())] > 0
    assert "by_repo" not in json.loads(run(*common, "--json").stdout)

    text = run(*common, "--by-repo")
    assert text.exit_code == 0, text.output
    assert "Coding time per repo" in text.stdout
    assert re.search(r"api\s.*│\s+\d+ │\s+\d+% │\s+8 │", text.stdout)


def test_counts_are_worded_in_the_singular_and_the_plural(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        {"ts": MONDAY + 9 * 3600, "kind": "save"},
        {"ts": MONDAY + 9 * 3600 + 600, "kind": "commit"},
    ]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    result = run("--events", str(events), "--tz", "UTC", "--no-ledger")
    assert result.exit_code == 0, result.output
    assert "1 commit, 1 save" in result.stdout
    assert "1 saves" not in result.stdout and "1 commits" not in result.stdout


def test_a_one_day_history_draws_points_and_bars_in_the_html_report(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", commits_every(MONDAY + 9 * 3600, 4, 20))
    page = tmp_path / "report.html"
    result = run(
        "--repo", str(repo), "--author", "me@example.com", "--tz", "UTC", "--html", str(page)
    )
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    daily = text.split("<h2>Minutes per day</h2>", 1)[1].split("<h2>", 1)[0]
    assert daily.count("<circle") == 3 and daily.count("<rect") == 3  # HMM, git-hours, timeout
    assert "<polyline" not in daily
    assert "Where the time went" in text and str(repo.resolve()) in text
    assert "4 commits" in text and "0 saves" in text


def test_peak_hours_leave_out_hours_the_days_show_as_no_coding() -> None:
    heatmap = np.zeros((7, 24))
    heatmap[0, 20:22] = 0.01  # a Monday the estimate gave a few seconds of coding
    estimate = CodingTimeEstimate(
        first_day=19_723,
        n_days=1,
        bin_minutes=5,
        coding_minutes=np.array([0.02]),
        git_hours_minutes=np.array([35.0]),
        timeout_minutes=np.array([0.0]),
        sessions=np.zeros((0, 2), dtype=np.int64),
        heatmap=heatmap,
        presence=heatmap,
        peak_hours=peak_hours_of(heatmap),
        review_windows=[],
        event_counts={"commit": 2, "save": 0},
        fit=None,
    )
    assert estimate.peak_hours == [20, 21]  # what the report used to list
    assert shown_peak_hours(estimate) == []
    heatmap[0, 9] = 40.0
    assert shown_peak_hours(estimate) == [9]
