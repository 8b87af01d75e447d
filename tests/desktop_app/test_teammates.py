"""Teammates' versions in the app: who trained each version, and the tray told of newer ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from desktop_app.notifications import NotificationChoices, notification_for_event
from desktop_app.queries.models import BY_COLUMN
from tests.agent.share.people import Person, make_remote, person


@pytest.mark.gui
def test_a_pull_of_a_newer_teammate_version_shows_its_author_and_notifies(
    tmp_path: Path,
    watchkeeper_home: Path,
    start_agent: Callable[[], Any],
    make_app: Callable[..., Any],
    qtbot: QtBot,
) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    cloned = person(tmp_path, "Bob", remote)
    bob = Person("Bob", cloned.clone, watchkeeper_home)  # the app's and the agent's home
    bob.ok("train", "churn")  # Bob's own version, the current one until Ada's arrives
    ada.ok("train", "churn")
    ada.ok("push")

    start_agent()
    app = make_app()
    qtbot.waitUntil(lambda: app.agent.connected, timeout=60_000)
    page = app.window.show_page("Models")
    page.refresh()
    qtbot.waitUntil(lambda: page.table_model.total == 1, timeout=30_000)

    pulled = bob.json("pull")
    assert pulled["agent_notified"] is True
    [newer] = pulled["newer"]
    assert (newer["previous"]["version"], newer["version"], newer["current"]) == (1, 2, 2)

    def notified() -> bool:
        last = app.tray.last_notification
        return last is not None and last.kind == "pulled"

    qtbot.waitUntil(notified, timeout=30_000)
    notice = app.tray.last_notification
    assert notice.title == "churn: a newer version by Ada"
    assert notice.message.startswith(f"v2 ({newer['id'][:8]}) ended after your current v1")

    qtbot.waitUntil(lambda: page.table_model.total == 2, timeout=30_000)  # the page reloads
    model = page.table_model
    shown = {
        model.data(model.index(row, 1)): model.data(model.index(row, BY_COLUMN)) for row in range(2)
    }
    assert shown == {1: "you", 2: "Ada (pulled)"}


def test_the_pulled_notice_follows_the_stale_choice_and_names_other_models() -> None:
    event = {
        "versions": 3,
        "newer": [
            {
                "model": "churn",
                "version": 4,
                "id": "ab" * 16,
                "author": "Ada <a@x>",
                "previous": None,
                "current": 4,
            },
            {
                "model": "ltv",
                "version": 2,
                "id": "cd" * 16,
                "author": "Ada <a@x>",
                "previous": {"version": 1},
                "current": 1,
            },
        ],
    }
    title, message, kind = notification_for_event("pulled", event, NotificationChoices())
    assert (title, kind) == ("churn: a newer version by Ada", "pulled")
    assert message == (
        "v4 (abababab) is the model's first succeeded version here; v4 is now current "
        "(newer versions of ltv too)"
    )
    assert notification_for_event("pulled", event, NotificationChoices(stale=False)) is None
    assert (
        notification_for_event("pulled", {"versions": 1, "newer": []}, NotificationChoices())
        is None
    )
