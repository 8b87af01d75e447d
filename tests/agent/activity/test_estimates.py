"""Time zones, dates and the gathering of a person's activity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.activity.estimates import (
    ActivityRequest,
    local_iso,
    parse_day,
    personal_report,
    resolve_zone,
    to_local_seconds,
)
from agent.activity.git_log import read_commits
from agent.errors import WatchkeeperError
from tests.agent.activity.gitrepo import FakeCommit, build_repo


def test_zone_names_and_system_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert str(resolve_zone("Asia/Kolkata")) == "Asia/Kolkata"
    with pytest.raises(WatchkeeperError, match="unknown time zone"):
        resolve_zone("Not/AZone")
    monkeypatch.setenv("TZ", "America/Denver")
    assert str(resolve_zone(None)) == "America/Denver"


def test_local_seconds_follow_daylight_saving() -> None:
    berlin = resolve_zone("Europe/Berlin")
    winter, summer = 1704110400, 1719835200  # 2024-01-01 12:00Z and 2024-07-01 12:00Z
    local = to_local_seconds(np.array([winter, summer]), berlin)
    assert (local - np.array([winter, summer])).tolist() == [3600.0, 7200.0]
    assert local_iso(local[1], berlin) == "2024-07-01T14:00:00+02:00"


def test_dates_parse_to_day_numbers() -> None:
    assert parse_day("1970-01-02", "--since") == 1
    with pytest.raises(WatchkeeperError, match="--until 'soon': expected a date"):
        parse_day("soon", "--until")


def test_commit_in_git_and_events_file_counts_once(tmp_path: Path) -> None:
    moment = 1704099600  # 2024-01-01 09:00Z
    repo = build_repo(
        tmp_path / "repo",
        [FakeCommit("me@example.com", moment), FakeCommit("me@example.com", moment + 1800)],
    )
    events = tmp_path / "events.jsonl"
    events.write_text(
        f'{{"ts": {moment}, "kind": "commit"}}\n{{"ts": {moment + 600}, "kind": "save"}}\n'
    )
    request = ActivityRequest(
        repos=[repo], authors=["me@example.com"], events_file=events, zone_name="UTC"
    )
    report = personal_report(request, read_commits([repo]))
    assert report.estimate.event_counts == {"commit": 2, "save": 1}
    assert report.estimate.git_hours_minutes.tolist() == [30.0]
