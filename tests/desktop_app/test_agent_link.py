"""The app against the real agent: retrain, alerts to the tray, acknowledge, restarts, start it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from agent.ledger import open_ledger
from agent.paths import WatchkeeperPaths

pytestmark = pytest.mark.gui
REPO_ROOT = Path(__file__).resolve().parents[2]


def record_events(app: Any) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    app.agent.event_received.connect(lambda kind, data: events.append((kind, data)))
    return events


def test_retrain_sends_train_to_the_real_agent_and_shows_the_result(
    trained_repo: Path,
    start_agent: Callable[[], Any],
    make_app: Callable[..., Any],
    qtbot: QtBot,
    paths: WatchkeeperPaths,
) -> None:
    start_agent()
    app = make_app()
    events = record_events(app)
    qtbot.waitUntil(lambda: app.agent.connected, timeout=60_000)
    assert app.window.banner.isHidden()
    page = app.window.show_page("Models")
    qtbot.waitUntil(lambda: page.detail is not None, timeout=60_000)
    assert page.detail.label == "churn@1"
    assert page.executor_box.currentText() == "local"

    qtbot.mouseClick(page.retrain_button, Qt.MouseButton.LeftButton)

    def finished() -> Any:
        return next(
            (
                data
                for kind, data in events
                if kind == "run_state" and data.get("state") == "succeeded"
            ),
            None,
        )

    qtbot.waitUntil(lambda: finished() is not None, timeout=60_000)
    run_id = finished()["run"]
    assert "Retraining churn: run " + run_id in app.window.status_label.text()
    db = open_ledger(paths.ledger)
    try:
        row = db.execute(
            "SELECT version, status FROM model_versions WHERE run_id = ?", [run_id]
        ).fetchone()
    finally:
        db.close()
    assert tuple(row) == (2, "succeeded")

    qtbot.waitUntil(
        lambda: (
            app.tray.last_notification is not None
            and app.tray.last_notification.kind == "run_finished"
        ),
        timeout=60_000,
    )
    notice = app.tray.last_notification
    assert notice.title == f"Run finished: churn ({run_id})"
    assert notice.message == "loss=0.25 → version 2"  # the first metric the ledger holds

    qtbot.waitUntil(lambda: page.table_model.total == 2, timeout=60_000)
    page.table.selectRow(0)
    qtbot.waitUntil(lambda: page.detail is not None and page.detail.version == 2, timeout=60_000)
    folder = page.artifact_folder()
    assert folder is not None and folder.parent == paths.artifacts
    assert page.open_folder_button.isEnabled()
    runs = app.window.show_page("Runs")
    qtbot.waitUntil(lambda: runs.table.rowCount() == 2, timeout=60_000)
    row_of_run = next(r for r in range(2) if runs.table.item(r, 0).text() == run_id)
    runs.table.selectRow(row_of_run)
    qtbot.waitUntil(lambda: "epoch 2 rows 3" in runs.log_view.toPlainText(), timeout=60_000)


def status_verdicts(repo: Path) -> dict[str, str]:
    """`watchkeeper status --json` run in the repo: each model's state."""
    from click.testing import CliRunner

    from agent.cli import main

    cwd = Path.cwd()
    os.chdir(repo)
    try:
        result = CliRunner().invoke(main, ["status", "--json"], catch_exceptions=False)
    finally:
        os.chdir(cwd)
    report = json.loads(result.stdout)
    return {m["model"]: m["state"] for r in report["repos"] for m in r["models"]}


def stale_tree_models(overview: Any) -> list[str]:
    tree = overview.stale
    return [tree.topLevelItem(i).text(0) for i in range(tree.topLevelItemCount())]


def test_a_stale_model_shows_stale_everywhere_until_fixed_not_until_acknowledged(
    trained_repo: Path,
    start_agent: Callable[[], Any],
    make_app: Callable[..., Any],
    qtbot: QtBot,
    paths: WatchkeeperPaths,
) -> None:
    start_agent()
    app = make_app()
    qtbot.waitUntil(lambda: app.agent.connected, timeout=60_000)
    overview = app.window.pages["Overview"]
    qtbot.waitUntil(lambda: stale_tree_models(overview) == ["All models fresh"], timeout=60_000)
    assert status_verdicts(trained_repo) == {"churn": "fresh"}

    code = trained_repo / "train.py"
    original = code.read_text()
    code.write_text(original + "# tuned\n")
    qtbot.waitUntil(lambda: app.tray.last_notification is not None, timeout=15_000)
    notice = app.tray.last_notification
    assert (notice.title, notice.kind) == ("churn is stale", "stale")
    assert "train.py" in notice.message
    qtbot.waitUntil(lambda: app.tray.state == "stale", timeout=60_000)
    assert stale_tree_models(overview) == ["churn"]
    assert status_verdicts(trained_repo) == {"churn": "stale"}
    assert "1 stale" in app.tray.status_action.text()

    # Acknowledging hides the alert, not the staleness.
    qtbot.waitUntil(lambda: overview.alerts.topLevelItem(0).text(1) == "stale", timeout=60_000)
    overview.alerts.topLevelItem(0).setSelected(True)
    qtbot.mouseClick(overview.ack_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: overview.alerts.topLevelItem(0).text(3) == "No open alerts", timeout=60_000
    )
    assert app.tray.state == "stale" and stale_tree_models(overview) == ["churn"]
    assert status_verdicts(trained_repo) == {"churn": "stale"}

    # Reverting the change makes it fresh everywhere and resolves the alert.
    code.write_text(original)
    qtbot.waitUntil(lambda: app.tray.state == "fresh", timeout=15_000)
    assert stale_tree_models(overview) == ["All models fresh"]
    assert status_verdicts(trained_repo) == {"churn": "fresh"}
    db = open_ledger(paths.ledger)
    try:
        [(state, resolution)] = db.execute(
            "SELECT acknowledged_at IS NOT NULL, resolution FROM alerts"
        ).fetchall()
    finally:
        db.close()
    assert state == 1 and resolution == "change reverted"


def test_the_app_survives_the_agent_restarting(
    start_agent: Callable[[], Any], make_app: Callable[..., Any], qtbot: QtBot
) -> None:
    first = start_agent()
    app = make_app()
    events = record_events(app)
    qtbot.waitUntil(lambda: app.agent.connected, timeout=60_000)

    first.stop()
    qtbot.waitUntil(lambda: not app.agent.connected, timeout=60_000)
    assert not app.window.banner.isHidden()
    assert app.tray.state == "offline" or app.window.agent_label.text() == "agent: not running"

    second = start_agent()
    qtbot.waitUntil(lambda: app.agent.connected, timeout=60_000)
    assert app.window.banner.isHidden()
    qtbot.waitUntil(lambda: second.server.subscriber_count >= 1, timeout=60_000)
    second.server.publish("snapshot", {"source": "/data", "modified": ["a.csv"]})
    qtbot.waitUntil(
        lambda: ("snapshot", {"source": "/data", "modified": ["a.csv"]}) in events, timeout=60_000
    )
    replies: list[Any] = []
    app.agent.call("status", {}, replies.append)
    qtbot.waitUntil(lambda: bool(replies), timeout=60_000)
    assert replies[0]["subscribers"] >= 1


def test_without_an_agent_the_app_says_so_and_starts_one(
    make_app: Callable[..., Any], qtbot: QtBot, paths: WatchkeeperPaths
) -> None:
    app = make_app()
    errors: list[str] = []
    app.agent.call("status", {}, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5_000)
    assert errors == ["the agent is not running"]
    qtbot.waitUntil(lambda: not app.window.banner.isHidden(), timeout=5_000)
    try:
        qtbot.mouseClick(app.window.banner.button, Qt.MouseButton.LeftButton)
        assert app.agent_process_started
        qtbot.waitUntil(lambda: app.agent.connected, timeout=30_000)
        assert app.window.banner.isHidden()
    finally:
        subprocess.run(
            [sys.executable, "-m", "agent", "agent", "stop"],
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=30,
        )
    qtbot.waitUntil(lambda: not app.agent.connected, timeout=60_000)


def test_a_new_user_flow_from_the_app_alone(
    tmp_path: Path,
    start_agent: Callable[[], Any],
    make_app: Callable[..., Any],
    qtbot: QtBot,
    paths: WatchkeeperPaths,
) -> None:
    """Watch a repo and its data, see the model go stale, retrain it, read the log and version."""
    from agent.runs.training import train
    from tests.agent.daemon.conftest import make_repo
    from tests.desktop_app.conftest import MODEL_SPEC, TRAIN_SCRIPT

    spec = MODEL_SPEC.replace('deps = ["train.py"]', 'deps = ["train.py", "data/train.csv"]')
    repo = make_repo(
        tmp_path / "repo",
        {
            "train.py": TRAIN_SCRIPT,
            "watchkeeper.toml": spec,
            ".gitignore": "data/\n",
            "data/train.csv": "age,city\n31,Paris\n42,Oslo\n",
        },
    )
    db = open_ledger(paths.ledger)
    try:
        assert train(repo, "churn", db=db, paths=paths).status == "succeeded"
    finally:
        db.close()
    start_agent()
    app = make_app()
    qtbot.waitUntil(lambda: app.agent.connected, timeout=60_000)

    settings = app.window.show_page("Settings")
    settings.add_watch(str(repo), data=False)
    qtbot.waitUntil(lambda: settings.repos.count() == 1, timeout=60_000)
    settings.add_watch(str(repo / "data"), data=True)
    qtbot.waitUntil(lambda: settings.data.count() == 1, timeout=60_000)
    assert settings.repos.item(0).text() == str(repo)

    with (repo / "data" / "train.csv").open("a") as handle:
        handle.write("57,Lima\n")
    qtbot.waitUntil(
        lambda: any(n.kind in ("stale", "drift") for n in app.tray.notifications), timeout=30_000
    )
    notice = next(n for n in app.tray.notifications if n.kind in ("stale", "drift"))
    assert notice.title.startswith("churn is stale")
    assert "data/train.csv" in notice.message
    overview = app.window.pages["Overview"]
    qtbot.waitUntil(lambda: app.tray.state == "stale", timeout=60_000)
    assert overview.stale.topLevelItem(0).text(0) == "churn"

    models = app.window.show_page("Models")
    qtbot.waitUntil(lambda: models.detail is not None, timeout=60_000)
    qtbot.mouseClick(models.retrain_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: app.tray.last_notification.kind == "run_finished", timeout=60_000)
    qtbot.waitUntil(lambda: models.table_model.total == 2, timeout=60_000)
    # The retrained version is fresh: the tray, the Overview and the Models table say so.
    qtbot.waitUntil(lambda: app.tray.state == "fresh", timeout=15_000)
    assert overview.stale.topLevelItem(0).text(0) == "All models fresh"
    qtbot.waitUntil(
        lambda: models.table_model.row_values(0)[:3] == ("churn", 2, "fresh"), timeout=60_000
    )
    assert models.table_model.row_values(1)[:3] == ("churn", 1, "succeeded")

    runs = app.window.show_page("Runs")
    qtbot.waitUntil(lambda: runs.table.rowCount() == 2, timeout=60_000)
    runs.table.selectRow(0)
    qtbot.waitUntil(lambda: "rows 4" in runs.log_view.toPlainText(), timeout=60_000)

    data = app.window.show_page("Data")
    qtbot.waitUntil(lambda: data.source_list.count() >= 1 and bool(data.sources), timeout=60_000)
    coding = app.window.show_page("Coding time")
    qtbot.waitUntil(lambda: coding.view is not None, timeout=60_000)


def test_pause_watching_in_the_tray_pauses_the_real_agent(
    start_agent: Callable[[], Any], make_app: Callable[..., Any], qtbot: QtBot
) -> None:
    service = start_agent()
    app = make_app()
    qtbot.waitUntil(lambda: app.agent.connected, timeout=60_000)
    assert not app.tray.pause_action.isChecked()

    app.tray.pause_action.trigger()
    qtbot.waitUntil(lambda: service.paused, timeout=60_000)
    qtbot.waitUntil(lambda: app.paused, timeout=60_000)
    assert "Watching paused." in app.window.status_label.text()

    app.tray.pause_action.trigger()
    qtbot.waitUntil(lambda: not service.paused, timeout=60_000)
    qtbot.waitUntil(lambda: not app.paused, timeout=60_000)

    # A pause made by another client shows in the app once it (re)connects.
    service.stop()
    qtbot.waitUntil(lambda: not app.agent.connected, timeout=60_000)
    second = start_agent()
    second.pause_watching()
    qtbot.waitUntil(lambda: app.agent.connected, timeout=60_000)
    qtbot.waitUntil(lambda: app.tray.pause_action.isChecked(), timeout=60_000)
    assert app.paused
