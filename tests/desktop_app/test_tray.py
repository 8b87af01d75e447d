"""The tray: icons per state, notifications and their wording, and a real tray host under Xvfb."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from agent.config import UserConfig
from desktop_app.notifications import NotificationChoices, notification_for_event
from desktop_app.tray import TRAY_STATES, WatchkeeperTray, state_icon
from tests.support import require

pytestmark = pytest.mark.gui
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_each_state_has_its_own_icon_at_every_size(qtbot: QtBot) -> None:
    images = {state: state_icon(state).pixmap(32, 32).toImage() for state in TRAY_STATES}
    assert len({image.pixelColor(16, 6).name() for image in images.values()}) == len(TRAY_STATES)
    for state in TRAY_STATES:
        sizes = {(size.width(), size.height()) for size in state_icon(state).availableSizes()}
        assert {(16, 16), (22, 22), (64, 64), (128, 128)} <= sizes


def test_state_and_status_line_show_in_icon_tooltip_and_menu(qtbot: QtBot) -> None:
    tray = WatchkeeperTray()
    tray.set_state("running", "3 models · 1 running")
    assert tray.state == "running"
    assert tray.status_action.text() == "3 models · 1 running"
    assert tray.icon.toolTip() == "Watchkeeper — 3 models · 1 running"
    assert not tray.status_action.isEnabled()
    texts = [action.text() for action in tray.menu.actions() if action.isVisible()]
    assert texts == ["Open Watchkeeper", "3 models · 1 running", "", "Pause watching", "Quit"]
    tray.set_state("offline", "agent not running · 3 models")
    texts = [action.text() for action in tray.menu.actions() if action.isVisible()]
    assert "Start the agent" in texts
    assert not tray.pause_action.isEnabled()


def test_notifications_are_recorded_without_a_tray_host(qtbot: QtBot) -> None:
    tray = WatchkeeperTray()
    assert not tray.visible
    tray.notify("Run failed: churn (r1)", "exit code 3", "run_failed")
    assert tray.last_notification is not None
    assert tray.last_notification.title == "Run failed: churn (r1)"


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        (
            "alert",
            {"kind": "stale", "model": "churn", "message": "m", "reasons": ["params changed"]},
            ("churn is stale", "params changed", "stale"),
        ),
        (
            "alert",
            {"kind": "drift", "model": "churn", "message": "2/5 columns drifted: age"},
            ("churn is stale: data drift", "2/5 columns drifted: age", "drift"),
        ),
        (
            "run_state",
            {"run": "r7", "model": "churn", "state": "failed", "exit_code": 3},
            ("Run failed: churn (r7)", "exit code 3", "run_failed"),
        ),
        (
            "run_state",
            {
                "run": "r7",
                "model": "churn",
                "state": "succeeded",
                "metrics": {"auc": 0.91234},
                "version": 4,
            },
            ("Run finished: churn (r7)", "auc=0.9123 → version 4", "run_finished"),
        ),
        ("run_state", {"run": "r7", "model": "churn", "state": "running"}, None),
        ("run_log", {"run": "r7", "text": "epoch 1"}, None),
    ],
)
def test_which_events_notify_and_how_they_read(kind: str, data: Any, expected: Any) -> None:
    assert notification_for_event(kind, data, NotificationChoices()) == expected


def test_notification_choices_silence_kinds_and_round_trip_through_config(
    watchkeeper_home: Path,
) -> None:
    config = UserConfig.load(watchkeeper_home / "config.toml")
    NotificationChoices(stale=False, drift=True, daily_summary=True, daily_summary_hour=9).save(
        config
    )
    choices = NotificationChoices.from_config(UserConfig.load(watchkeeper_home / "config.toml"))
    assert (choices.stale, choices.daily_summary, choices.daily_summary_hour) == (False, True, 9)
    stale = {"kind": "stale", "model": "churn", "reasons": ["x"]}
    assert notification_for_event("alert", stale, choices) is None


def test_daily_summary_comes_once_at_the_chosen_hour(
    make_app: Callable[..., Any], qtbot: QtBot, watchkeeper_home: Path
) -> None:
    config = UserConfig.load(watchkeeper_home / "config.toml")
    NotificationChoices(daily_summary=True, daily_summary_hour=18).save(config)
    app = make_app()
    assert not app.maybe_daily_summary(datetime(2026, 3, 2, 17, 59))
    assert app.maybe_daily_summary(datetime(2026, 3, 2, 18, 1))
    qtbot.waitUntil(lambda: app.tray.last_notification is not None, timeout=5_000)
    assert app.tray.last_notification.title == "Coding time today"
    assert app.tray.last_notification.message == "0h 00m of coding so far"
    assert not app.maybe_daily_summary(datetime(2026, 3, 2, 18, 30))


TRAY_CHILD = textwrap.dedent(
    """\
    import json, time
    from PySide6.QtWidgets import QApplication, QSystemTrayIcon
    from desktop_app.tray import WatchkeeperTray

    app = QApplication([])

    def pump(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)

    deadline = time.monotonic() + 15
    while not QSystemTrayIcon.isSystemTrayAvailable() and time.monotonic() < deadline:
        pump(0.1)
    result = {"available": QSystemTrayIcon.isSystemTrayAvailable()}
    tray = WatchkeeperTray()
    tray.set_state("stale", "1 models · 1 stale")
    tray.show()
    pump(1.0)
    result["visible"] = tray.visible
    result["geometry"] = list(tray.icon.geometry().getRect())
    tray.notify("churn is stale", "data files modified: data/train.csv", "stale")
    pump(1.0)
    result["shown"] = [w.metaObject().className() for w in app.topLevelWidgets() if w.isVisible()]
    print(json.dumps(result))
    """
)


@pytest.fixture
def xvfb_with_tray() -> Iterator[str]:
    """A virtual X screen with trayer as its system tray; yields the DISPLAY."""
    require(
        bool(shutil.which("Xvfb") and shutil.which("trayer")),
        "Xvfb and trayer",
        "apt-get install xvfb trayer libxcb-cursor0 libxkbcommon-x11-0",
    )
    read_end, write_end = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    with os.fdopen(read_end) as display_pipe:
        display = ":" + display_pipe.readline().strip()
    trayer = subprocess.Popen(
        ["trayer", "--edge", "bottom", "--align", "left"],
        env={**os.environ, "DISPLAY": display},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield display
    finally:
        for process in (trayer, xvfb):
            process.terminate()
            process.wait(timeout=10)


def test_a_real_tray_host_shows_the_icon_and_a_notification(xvfb_with_tray: str) -> None:
    environment = {**os.environ, "DISPLAY": xvfb_with_tray, "QT_QPA_PLATFORM": "xcb"}
    environment.pop("WAYLAND_DISPLAY", None)
    result = subprocess.run(
        [sys.executable, "-c", TRAY_CHILD],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["available"] is True
    assert report["visible"] is True
    _x, _y, width, height = report["geometry"]
    assert width > 0 and height > 0  # the tray host embedded and placed the icon
    assert "QBalloonTip" in report["shown"]  # the notification balloon is on screen
