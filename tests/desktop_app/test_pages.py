"""Every page over an empty and a populated ledger; the lazy Models table; compare; screenshots."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from desktop_app.main_window import PAGES
from tests.desktop_app.conftest import SMALL_VERSIONS

pytestmark = pytest.mark.gui
REPO_ROOT = Path(__file__).resolve().parents[2]


def show_all_pages(app: object) -> dict[str, object]:
    window = app.window  # type: ignore[attr-defined]
    shown = {}
    for title, _ in PAGES:
        page = window.show_page(title)
        assert app.workers.wait_idle(20)  # type: ignore[attr-defined]
        assert window.current_page is page
        assert not window.grab().isNull()
        shown[title] = page
    return shown


def test_every_page_renders_with_an_empty_ledger(make_app: Callable[..., object]) -> None:
    app = make_app()
    pages = show_all_pages(app)
    assert app.workers.last_error == ""  # type: ignore[attr-defined]
    overview = pages["Overview"]
    assert overview.alerts.topLevelItem(0).text(3) == "No open alerts"  # type: ignore[attr-defined]
    assert overview.running.topLevelItem(0).text(0) == "No runs in progress"  # type: ignore[attr-defined]
    assert pages["Models"].table_model.rowCount() == 0  # type: ignore[attr-defined]
    assert pages["Runs"].table.rowCount() == 0  # type: ignore[attr-defined]
    assert "No data watched" in pages["Data"].source_list.item(0).text()  # type: ignore[attr-defined]
    assert "0 days" in pages["Coding time"].summary.text()  # type: ignore[attr-defined]
    assert pages["Settings"].repos.count() == 0  # type: ignore[attr-defined]


def test_every_page_renders_with_a_populated_ledger(
    populated_ledger: Path, make_app: Callable[..., object]
) -> None:
    app = make_app()
    pages = show_all_pages(app)
    assert app.workers.last_error == ""  # type: ignore[attr-defined]
    overview = pages["Overview"]
    assert overview.alerts.topLevelItemCount() == 3  # type: ignore[attr-defined]
    assert {overview.stale.topLevelItem(i).text(0) for i in range(2)} == {"churn", "fraud"}  # type: ignore[attr-defined]
    assert overview.running.topLevelItem(0).text(0).startswith("r")  # type: ignore[attr-defined]
    models = pages["Models"]
    assert models.table_model.total == SMALL_VERSIONS  # type: ignore[attr-defined]
    assert models.detail is not None and models.detail.label in models.detail_view.toPlainText()  # type: ignore[attr-defined]
    assert pages["Runs"].table.rowCount() == 500  # type: ignore[attr-defined]
    data = pages["Data"]
    assert data.source_list.count() == 2  # type: ignore[attr-defined]
    assert data.snapshots.rowCount() == 30  # type: ignore[attr-defined]
    assert data.changes.topLevelItemCount() == 3  # type: ignore[attr-defined]
    assert "age" in data.drift_label.text()  # type: ignore[attr-defined]
    coding = pages["Coding time"]
    assert coding.view is not None and coding.view.event_count > 0  # type: ignore[attr-defined]
    assert coding.view.heatmap.sum() > 0  # type: ignore[attr-defined]
    assert "Peak hours: " in coding.peak_label.text()  # type: ignore[attr-defined]
    # How many sessions today depends on the hour the suite runs at: one early in the day.
    assert re.search(r"\b\d+ sessions?\b", coding.day_total.text())  # type: ignore[attr-defined]


def test_models_table_fetches_lazily_filters_and_sorts(
    populated_ledger: Path, make_app: Callable[..., object], qtbot: QtBot
) -> None:
    app = make_app()
    page = app.window.show_page("Models")  # type: ignore[attr-defined]
    model = page.table_model
    app.workers.wait_idle(20)  # type: ignore[attr-defined]
    assert model.total == SMALL_VERSIONS
    assert model.rowCount() == model.fetch_step < SMALL_VERSIONS
    assert model.canFetchMore(model.index(-1, -1).parent())
    model.fetchMore(model.index(-1, -1).parent())
    assert model.rowCount() == 2 * model.fetch_step

    far_row = model.rowCount() - 1
    assert model.row_values(far_row) is None  # its window is read in a worker, not here
    qtbot.waitUntil(lambda: model.row_values(far_row) is not None, timeout=5000)

    with sqlite3.connect(populated_ledger) as connection:
        expected = connection.execute(
            "SELECT COUNT(*) FROM model_versions mv JOIN models m ON m.id = mv.model_id"
            " WHERE m.name LIKE '%ranker%' AND mv.status = 'failed'"
        ).fetchone()[0]
    page.filter_box.setText("ranker")
    page.status_box.setCurrentText("failed")
    qtbot.waitUntil(lambda: model.total == expected, timeout=5000)
    app.workers.wait_idle(10)  # type: ignore[attr-defined]
    assert expected > 0
    assert all(
        model.row_values(row)[0].startswith("ranker") and model.row_values(row)[2] == "failed"
        for row in range(model.rowCount())
    )

    page.filter_box.clear()
    page.status_box.setCurrentIndex(0)
    page.table.horizontalHeader().setSortIndicator(1, Qt.SortOrder.AscendingOrder)
    qtbot.waitUntil(lambda: model.total == SMALL_VERSIONS and model.sort_column == 1, timeout=5000)
    app.workers.wait_idle(10)  # type: ignore[attr-defined]
    versions = [model.row_values(row)[1] for row in range(50)]
    assert versions == sorted(versions) and versions[0] == 1


def test_compare_two_versions_side_by_side(
    populated_ledger: Path, make_app: Callable[..., object], qtbot: QtBot
) -> None:
    app = make_app()
    page = app.window.show_page("Models")  # type: ignore[attr-defined]
    app.workers.wait_idle(20)  # type: ignore[attr-defined]
    page.table.selectRow(0)
    page.table.selectionModel().select(
        page.table_model.index(1, 0),
        page.table.selectionModel().SelectionFlag.Select
        | page.table.selectionModel().SelectionFlag.Rows,
    )
    qtbot.waitUntil(lambda: page.compare_button.isEnabled(), timeout=5000)
    qtbot.waitUntil(lambda: len(page.details) >= 2, timeout=5000)
    page.compare_selected()
    qtbot.waitUntil(lambda: page.compare_dialog is not None, timeout=5000)
    dialog = page.compare_dialog
    qtbot.addWidget(dialog)
    labels = [dialog.table.horizontalHeaderItem(c).text() for c in (1, 2)]
    ids = page.selected_version_ids()
    assert labels == [page.details[ids[0]].label, page.details[ids[1]].label]
    fields = [dialog.table.item(row, 0).text() for row in range(dialog.table.rowCount())]
    assert "commit" in fields and "train command" in fields
    assert dialog.differences >= 1  # different models at least differ in their start time


def test_keyboard_moves_between_pages(make_app: Callable[..., object], qtbot: QtBot) -> None:
    app = make_app()
    window = app.window  # type: ignore[attr-defined]
    with qtbot.waitActive(window):
        window.activateWindow()
    window.sidebar.setFocus()
    qtbot.keyClick(window.sidebar, Qt.Key.Key_Down)
    assert window.current_page.title == "Models"
    qtbot.keyClick(window.sidebar, Qt.Key.Key_5, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page.title == "Coding time"


def test_screenshot_command_renders_every_page(
    populated_ledger: Path, tmp_path: Path, watchkeeper_home: Path
) -> None:
    out = tmp_path / "shots"
    environment = {
        **os.environ,
        "WATCHKEEPER_HOME": str(watchkeeper_home),
        "QT_QPA_PLATFORM": "offscreen",
    }
    result = subprocess.run(
        [sys.executable, "-m", "agent", "app", "--screenshot", str(out)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    names = sorted(path.name for path in out.glob("*.png"))
    assert names == [
        "01-overview.png",
        "02-models.png",
        "02a-models-columns.png",
        "02b-models-artifacts.png",
        "02c-models-metric-chart.png",
        "02d-models-learning-curves.png",
        "02e-models-compare.png",
        "03-runs.png",
        "04-data.png",
        "05-coding-time.png",
        "06-settings.png",
        "tray-icons.png",
    ]
    assert all((out / name).stat().st_size > 2_000 for name in names)


def test_data_page_charts_column_drift_of_the_folder_now_against_a_snapshot(
    tmp_path: Path, make_app: Callable[..., object], qtbot: QtBot, watchkeeper_home: Path
) -> None:
    from agent.data.fingerprint import fingerprint
    from agent.data.snapshots import record_snapshot
    from agent.ledger import open_ledger

    folder = tmp_path / "churn-data"
    folder.mkdir()
    rows = "\n".join(f"{20 + i % 30},{'Paris' if i % 2 else 'Oslo'}" for i in range(400))
    (folder / "train.csv").write_text("age,city\n" + rows + "\n")
    db = open_ledger(watchkeeper_home / "ledger.db")
    try:
        record_snapshot(db, fingerprint(folder))
    finally:
        db.close()
    shifted = "\n".join(f"{60 + i % 30},{'Lima' if i % 3 else 'Oslo'}" for i in range(400))
    (folder / "train.csv").write_text("age,city\n" + shifted + "\n")

    app = make_app()
    page = app.window.show_page("Data")  # type: ignore[attr-defined]
    qtbot.waitUntil(
        lambda: "against the selected snapshot" in page.drift_heading.text(), timeout=60_000
    )
    app.workers.wait_idle(10)  # type: ignore[attr-defined]
    assert page.source_list.item(0).text().startswith(str(folder))
    assert "2/2 columns drifted" in page.drift_label.text()
    bars = page.drift_chart.bars.opts
    assert len(bars["height"]) == 2 and bars["brushes"] == ["#ef4444", "#ef4444"]


def test_run_log_events_follow_the_selected_run_only(
    populated_ledger: Path, make_app: Callable[..., object], qtbot: QtBot
) -> None:
    app = make_app()
    page = app.window.show_page("Runs")  # type: ignore[attr-defined]
    app.workers.wait_idle(10)  # type: ignore[attr-defined]
    selected = page.selected_run
    assert selected is not None and selected.state == "running"
    assert page.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: page.log_view.toPlainText() != "", timeout=5_000)
    assert page.log_view.toPlainText() == "(no log on this machine yet)"  # a remote run's log
    app.window.dispatch_event("run_log", {"run": selected.id, "offset": 0, "text": "epoch 8/12\n"})  # type: ignore[attr-defined]
    app.window.dispatch_event("run_log", {"run": "another-run", "offset": 0, "text": "noise\n"})  # type: ignore[attr-defined]
    assert page.log_view.toPlainText() == "epoch 8/12\n"


def test_charts_follow_a_switch_to_a_dark_palette(
    make_app: Callable[..., object], qtbot: QtBot
) -> None:
    from PySide6.QtGui import QColor, QPalette
    from PySide6.QtWidgets import QApplication

    app = make_app()
    page = app.window.show_page("Coding time")  # type: ignore[attr-defined]
    original = QApplication.palette()
    dark = QPalette(original)
    dark.setColor(QPalette.ColorRole.Base, QColor("#1e1e1e"))
    dark.setColor(QPalette.ColorRole.Text, QColor("#e0e0e0"))
    try:
        QApplication.setPalette(dark)
        qtbot.waitUntil(
            lambda: page.daily.widget.backgroundBrush().color().name() == "#1e1e1e",
            timeout=5_000,
        )
        axis = page.daily.widget.getPlotItem().getAxis("left")
        assert axis.textPen().color().name() == "#e0e0e0"
    finally:
        QApplication.setPalette(original)


def test_a_corrupt_ledger_is_named_in_the_status_bar_and_left_alone(
    make_app: Callable[..., object], qtbot: QtBot, paths: object
) -> None:
    ledger = paths.ledger  # type: ignore[attr-defined]
    ledger.write_bytes(b"this is not a database\n" * 10)
    app = make_app()
    qtbot.waitUntil(
        lambda: "not a SQLite database" in app.window.status_label.text(),  # type: ignore[attr-defined]
        timeout=5_000,
    )
    assert str(ledger) in app.window.status_label.text()  # type: ignore[attr-defined]
    assert ledger.read_bytes() == b"this is not a database\n" * 10


def test_retrain_is_offered_for_trained_models_but_not_for_built_in_ones(
    populated_ledger: Path, make_app: Callable[..., object], qtbot: QtBot
) -> None:
    with sqlite3.connect(populated_ledger) as connection:
        newest_repo = connection.execute(
            "SELECT m.repo_id FROM model_versions v JOIN models m ON m.id = v.model_id "
            "ORDER BY v.id DESC LIMIT 1"
        ).fetchone()[0]
        connection.execute(
            "UPDATE repos SET path = 'builtin:watchkeeper' WHERE id = ?", [newest_repo]
        )
    app = make_app()
    page = app.window.show_page("Models")  # type: ignore[attr-defined]
    app.workers.wait_idle(20)  # type: ignore[attr-defined]
    repos_of_rows = []
    for row in range(page.table_model.rowCount()):
        page.table.selectRow(row)
        version_id = page.table_model.version_id(row)
        qtbot.waitUntil(lambda v=version_id: v in page.details, timeout=5000)
        page.show_detail(page.details[version_id])
        repos_of_rows.append((page.details[version_id].repo_path, page.retrain_button.isEnabled()))
        if len({path for path, _ in repos_of_rows}) > 1:
            break
    assert ("builtin:watchkeeper", False) in repos_of_rows
    assert any(enabled for path, enabled in repos_of_rows if path != "builtin:watchkeeper")


def test_data_page_shows_sizes_in_the_units_the_cli_prints(
    tmp_path: Path, make_app: Callable[..., object], qtbot: QtBot, watchkeeper_home: Path
) -> None:
    from click.testing import CliRunner

    from agent.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"\x01" * (3 * 1024 * 1024 + 512 * 1024))
    printed = CliRunner().invoke(main, ["data", "snapshot", str(folder)])
    assert printed.exit_code == 0, printed.output
    assert "3.5 MiB" in printed.output

    app = make_app()
    page = app.window.show_page("Data")  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: page.snapshots.rowCount() == 1, timeout=60_000)
    assert page.snapshots.item(0, 2).text() == "3.5 MiB"
