"""One number for today in every view: a real agent stores the estimate after activity settles,
and the CLI, the HTML report, the Overview, the Coding time page and the tray all show it."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytestqt.qtbot import QtBot

from agent.activity.coding_time_store import StoredEstimate, events_recorded_since, read_stored
from agent.cli import main
from agent.config import UserConfig
from agent.daemon.watchlist import add_watch
from agent.paths import WatchkeeperPaths
from desktop_app.queries.formatting import format_minutes
from tests.agent.daemon.conftest import git, make_repo
from tests.support import wait_for

pytestmark = pytest.mark.gui


def stored_estimate(paths: WatchkeeperPaths) -> tuple[StoredEstimate | None, int]:
    connection = sqlite3.connect(f"file:{paths.ledger}?mode=ro", uri=True, timeout=10)
    try:
        stored = read_stored(connection)
        newer = events_recorded_since(connection, stored) if stored is not None else -1
        return stored, newer
    finally:
        connection.close()


def commit_at(repo: Path, moment: float, name: str) -> None:
    (repo / name).write_text(f"{moment}\n")
    git(repo, "add", "-A")
    stamp = f"{int(moment)} +0000"
    git(repo, "-c", "user.email=dev@example.com", "commit", "-q", "-m", name, "--date", stamp)


def test_every_view_shows_the_minutes_the_agent_stored_for_today(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    start_agent: Callable[[], object],
    make_app: Callable[..., object],
    qtbot: QtBot,
) -> None:
    config = UserConfig.load(paths.config)
    config.set("schedule", "coding_time_settle_seconds", 1)
    config.save()
    repo = make_repo(tmp_path / "repo")
    now = time.time()
    midnight = datetime.combine(date.today(), datetime.min.time()).timestamp()
    first = max(midnight + 60, now - 3000)
    for index in range(3):  # three commits earlier today, the last a few seconds ago at most
        commit_at(repo, first + index * (now - first) / 3, f"c{index}.py")
    add_watch(repo, data=False, config=UserConfig.load(paths.config))
    start_agent()

    def current() -> StoredEstimate | None:
        stored, newer = stored_estimate(paths)
        return stored if stored is not None and newer == 0 else None

    stored = wait_for(current, 30, "the agent to store an estimate after the commits")
    assert stored.estimate.event_counts["commit"] == 4  # the repo's first commit and three
    # Saves settle, then the agent re-estimates on its own.
    (repo / "c2.py").write_text("edited\n")
    saved = wait_for(
        lambda: (s := current()) is not None and s.trigger == "saves" and s,
        30,
        "a refresh after the saves settled",
    )
    assert saved.estimate.event_counts["save"] >= 1
    today = str(date.today())
    assert saved.dates[-1] == today
    minutes = float(saved.estimate.coding_minutes[-1])
    shown = format_minutes(minutes)

    cli = CliRunner().invoke(main, ["coding-time", "--json", "--by-repo"])
    assert cli.exit_code == 0, cli.output
    report = json.loads(cli.stdout)
    assert report["source"]["stored"] is True and report["source"]["provisional"] is False
    assert report["days"][-1] == {
        "date": today,
        "coding_minutes": round(minutes, 1),
        "git_hours_minutes": pytest.approx(
            float(saved.estimate.git_hours_minutes[-1]), abs=0.05
        ),  # --json rounds minutes to 0.1
        "timeout_minutes": pytest.approx(float(saved.estimate.timeout_minutes[-1]), abs=0.05),
    }
    assert [row["repo"] for row in report["by_repo"]["repos"]] == [str(repo.resolve())]
    text = CliRunner().invoke(main, ["coding-time", "--html", str(tmp_path / "r.html")])
    assert text.exit_code == 0, text.output
    assert f"{today} (today, so far)" in text.stdout and "stored estimate" in text.stdout
    assert "after saves settled" in (tmp_path / "r.html").read_text(encoding="utf-8")

    app = make_app()
    overview = app.window.page("Overview")  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: overview.overview is not None, timeout=60_000)
    assert overview.today_label.text() == f"Today so far: {shown}"
    assert "after saves settled" in overview.coding_note.text()
    qtbot.waitUntil(lambda: app.agent.connected, timeout=60_000)  # type: ignore[attr-defined]
    app.refresh_state()  # type: ignore[attr-defined]
    qtbot.waitUntil(
        lambda: f"today {shown} so far" in app.tray.status_action.text(),  # type: ignore[attr-defined]
        timeout=60_000,
    )
    page = app.window.show_page("Coding time")  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: page.view is not None, timeout=20_000)
    assert page.view.days_source == "stored"
    assert page.day_edit.date().toString("yyyy-MM-dd") == today  # the picker opens on today
    assert page.day_total.text().startswith(f"{shown} of coding")
    assert page.day_total.text().endswith("(today, so far)")
    assert page.repo_table.topLevelItem(0).text(0) == str(repo.resolve())
    assert page.repo_table.topLevelItem(0).text(1) == shown
    assert "after saves settled" in page.freshness.text()


def test_the_sessions_picker_opens_on_today_or_the_last_day_with_activity() -> None:
    import numpy as np

    from desktop_app.queries.coding_time import CodingTimeDays, CodingTimeView, latest_day

    today = date(2024, 3, 8)
    day_start = (today - date(1970, 1, 1)).days * 86_400
    view = CodingTimeView(days=CodingTimeDays([], [], [], []), days_source="stored")
    assert latest_day(view, today) == today  # no activity at all
    view.event_local_times = np.array(
        [day_start - 5 * 86_400 + 3600, day_start - 3 * 86_400 + 7200]
    )
    assert latest_day(view, today) == date(2024, 3, 5)
    view.event_local_times = np.append(view.event_local_times, day_start + 60.0)
    assert latest_day(view, today) == today
