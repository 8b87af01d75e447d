"""The Models page on versions made by real training runs: param and metric columns, names,
artifacts, charts across versions and steps (live from the agent), and compare."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PySide6.QtCore import Qt, QUrl
from pytestqt.qtbot import QtBot

from agent.cli import main
from agent.paths import WatchkeeperPaths
from tests.agent.daemon.conftest import make_repo
from tests.desktop_app.conftest import PYTHON

STEPS = 20
TRAIN = textwrap.dedent(
    """\
    import json, os, pathlib, sys, time

    lr, gate = float(sys.argv[1]), sys.argv[2]
    with open(os.environ["WK_METRICS"], "a", buffering=1) as steps:
        for step in range(1, STEPS + 1):
            loss = 1 / (1 + lr * step)
            steps.write(json.dumps({"step": step, "loss": loss, "acc": 1 - loss}) + "\\n")
            if gate and step == 5:
                deadline = time.time() + 60
                while not pathlib.Path(os.environ["WK_RUN_DIR"], gate).exists():
                    if time.time() > deadline:
                        raise SystemExit(gate + " never came")
                    time.sleep(0.02)
    pathlib.Path("model.txt").write_text(f"weights for lr={lr}")
    json.dump({"loss": loss, "acc": 1 - loss, "confusion": [[5, 1], [2, 7]]},
              open("metrics.json", "w"))
    """
).replace("STEPS", str(STEPS))
SPEC = textwrap.dedent(
    f"""\
    [models.churn]
    train = "{PYTHON} train.py {{lr}} {{gate}}"
    deps = ["train.py"]
    outs = ["model.txt"]
    metrics = "metrics.json"
    params = {{ lr = 0.1, gate = "" }}
    """
)
# lr of versions 1, 2, 3: the declared value, then two experiments.
LEARNING_RATES = (0.1, 0.5, 0.01)


def final_loss(lr: float) -> float:
    return 1 / (1 + lr * STEPS)


@pytest.fixture
def churn_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"train.py": TRAIN, "watchkeeper.toml": SPEC})


@pytest.fixture
def three_versions(churn_repo: Path, paths: WatchkeeperPaths) -> Path:
    """churn v1 (declared lr), v2 and v3 (experiments), trained for real; v2 promoted."""
    from agent.ledger import open_ledger
    from agent.runs.training import train

    db = open_ledger(paths.ledger)
    try:
        for lr in LEARNING_RATES:
            pairs = [] if lr == LEARNING_RATES[0] else [f"lr={lr}"]
            result = train(churn_repo, "churn", param_pairs=pairs, db=db, paths=paths)
            assert result.status == "succeeded", result.log_tail
    finally:
        db.close()
    promoted = CliRunner().invoke(main, ["models", "promote", "churn@2"])
    assert promoted.exit_code == 0, promoted.output
    return churn_repo


def open_models(make_app: Callable[..., Any], qtbot: QtBot, model: str = "churn") -> Any:
    app = make_app()
    page = app.window.show_page("Models")
    qtbot.waitUntil(lambda: page.model_box.findText(model) > 0, timeout=60_000)
    page.choose_model(model)
    app.workers.wait_idle(20)
    return app, page


def column_of(page: Any, heading: str) -> int:
    model = page.table_model
    headings = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    return headings.index(heading)


def shown_rows(page: Any, *headings: str) -> list[tuple[Any, ...]]:
    model = page.table_model
    columns = [column_of(page, heading) for heading in headings]
    return [
        tuple(model.data(model.index(row, column)) for column in columns)
        for row in range(model.rowCount())
    ]


def select_rows(page: Any, rows: list[int]) -> None:
    selection = page.table.selectionModel()
    page.table.selectRow(rows[0])
    for row in rows[1:]:
        selection.select(
            page.table_model.index(row, 0),
            selection.SelectionFlag.Select | selection.SelectionFlag.Rows,
        )


def test_param_and_metric_columns_sort_and_mark_experiments_and_the_current_version(
    three_versions: Path, make_app: Callable[..., Any], qtbot: QtBot
) -> None:
    app, page = open_models(make_app, qtbot)
    assert [(c.kind, c.name) for c in page.table_model.extra_columns] == [
        ("param", "gate"),
        ("param", "lr"),
        ("metric", "acc"),
        ("metric", "loss"),
    ]  # the confusion matrix is no metric: only numbers are
    qtbot.waitUntil(lambda: bool(page.table_model.current_ids), timeout=60_000)
    assert shown_rows(page, "Version", "lr", "Names") == [
        (3, "0.01", "experiment"),
        (2, "0.5", "current experiment"),
        (1, "0.1", ""),
    ]

    page.table.horizontalHeader().setSortIndicator(
        column_of(page, "loss"), Qt.SortOrder.AscendingOrder
    )
    qtbot.waitUntil(lambda: page.table_model.sort_column == column_of(page, "loss"), timeout=5000)
    app.workers.wait_idle(10)
    assert [row[0] for row in shown_rows(page, "Version")] == [2, 1, 3]
    assert [row[0] for row in shown_rows(page, "loss")] == [
        f"{final_loss(lr):.4g}" for lr in (0.5, 0.1, 0.01)
    ]

    # Columns are chosen per model: hiding lr and acc keeps the others, in order.
    churn = page.chosen_model()
    page.set_columns(churn, [c for c in page.columns_for(churn) if c.name not in ("lr", "acc")])
    app.workers.wait_idle(10)
    headings = [
        page.table_model.headerData(c, Qt.Orientation.Horizontal)
        for c in range(page.table_model.columnCount())
    ]
    assert headings[-2:] == ["gate", "loss"]
    page.choose_model("all models")
    app.workers.wait_idle(10)
    assert page.table_model.extra_columns == []
    page.choose_model("churn")
    assert [c.name for c in page.table_model.extra_columns] == ["gate", "loss"]


def test_aliases_tags_and_notes_are_edited_through_the_ledger_functions_the_cli_uses(
    three_versions: Path, paths: WatchkeeperPaths, make_app: Callable[..., Any], qtbot: QtBot
) -> None:
    app, page = open_models(make_app, qtbot)
    select_rows(page, [2])  # v1
    qtbot.waitUntil(lambda: page.detail is not None and page.detail.version == 1, timeout=5000)
    statuses: list[str] = []
    app.window.context.show_status = statuses.append

    page.set_alias("champion")
    page.add_tag("dataset=v2")
    page.add_note("baseline for Q3")
    app.workers.wait_idle(10)
    qtbot.waitUntil(
        lambda: page.detail.version == 1 and bool(page.detail.notes and page.detail.tags),
        timeout=5000,
    )
    assert page.detail.aliases == ["champion"]
    assert page.detail.tags == {"dataset": "v2"}
    assert [note["text"] for note in page.detail.notes] == ["baseline for Q3"]
    assert "@champion" in page.detail_view.toPlainText()
    shown = CliRunner().invoke(main, ["models", "aliases", "churn", "--json"])
    assert [(a["alias"], a["version"]) for a in json.loads(shown.output)] == [("champion", 1)]
    qtbot.waitUntil(lambda: ("", "@champion") in shown_rows(page, "gate", "Names"), timeout=5000)

    # Refusals come back as one line in the status bar, and change nothing.
    page.set_alias("7")
    page.add_tag("no-equals-sign")
    page.add_note("   ")
    qtbot.waitUntil(lambda: len([s for s in statuses if "Could not" in s]) == 3, timeout=5000)
    refusals = [s for s in statuses if "Could not" in s]
    assert "is a version number" in refusals[0] and "\n" not in refusals[0]
    assert "write it as key=value" in refusals[1]
    assert "the note is empty" in refusals[2]

    # The × links beside an alias and a tag remove them; the alias keeps its history.
    page.detail_view.anchorClicked.emit(QUrl("remove-alias:champion"))
    page._link_clicked("remove-tag:dataset")
    qtbot.waitUntil(lambda: not page.detail.aliases and not page.detail.tags, timeout=5000)
    history = json.loads(CliRunner().invoke(main, ["models", "aliases", "churn", "--json"]).output)
    assert [(a["alias"], a["version"], a["moved_at"] is not None) for a in history] == [
        ("champion", 1, True)
    ]


def test_save_as_copies_an_artifact_checked_against_its_digest(
    three_versions: Path,
    paths: WatchkeeperPaths,
    tmp_path: Path,
    make_app: Callable[..., Any],
    qtbot: QtBot,
) -> None:
    from agent.ledger.artifacts import ArtifactStore

    _app, page = open_models(make_app, qtbot)
    select_rows(page, [1])  # v2
    qtbot.waitUntil(lambda: page.detail is not None and page.detail.version == 2, timeout=5000)
    page.show_tab("Artifacts")
    panel = page.artifacts
    qtbot.waitUntil(lambda: panel.table.item(0, 1).text() != "…", timeout=5000)
    assert panel.table.item(0, 0).text() == "model.txt"
    assert panel.table.item(0, 1).text() == "18 B"  # "weights for lr=0.5"
    messages: list[str] = []
    target = tmp_path / "out" / "churn-v2.txt"
    target.parent.mkdir()
    panel.save_as("model.txt", target, messages.append)
    qtbot.waitUntil(lambda: bool(messages), timeout=5000)
    assert target.read_text() == "weights for lr=0.5"
    assert messages[0].startswith("Saved model.txt of churn@2 to ")

    # A damaged store file is refused: nothing is written, the message says why.
    stored = ArtifactStore(paths.artifacts).path(page.detail.artifacts["model.txt"])
    stored.chmod(0o600)
    stored.write_text("tampered")
    damaged = tmp_path / "out" / "damaged.txt"
    messages.clear()
    panel.save_as("model.txt", damaged, messages.append)
    qtbot.waitUntil(lambda: bool(messages), timeout=5000)
    assert "is damaged in the store" in messages[0] and "\n" not in messages[0]
    assert not damaged.exists()


def test_compare_any_number_of_versions_with_differing_params_marked(
    three_versions: Path, make_app: Callable[..., Any], qtbot: QtBot
) -> None:
    _app, page = open_models(make_app, qtbot)
    select_rows(page, [0, 1, 2])
    qtbot.waitUntil(lambda: page.compare_button.text() == "&Compare 3", timeout=5000)
    page.compare_selected()
    qtbot.waitUntil(lambda: page.compare_dialog is not None, timeout=5000)
    dialog = page.compare_dialog
    qtbot.addWidget(dialog)
    table = dialog.columns_table
    headings = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headings == ["version", "names", "status", "gate", "≠ lr", "acc", "loss"]
    assert table.horizontalHeaderItem(4).font().bold()
    assert not table.horizontalHeaderItem(3).font().bold()  # gate is "" everywhere
    table.sortItems(headings.index("loss"), Qt.SortOrder.AscendingOrder)
    assert [table.item(row, 0).text() for row in range(3)] == ["churn@2", "churn@1", "churn@3"]
    assert table.item(0, 1).text() == "current experiment"
    assert dialog.table.columnCount() == 4  # the field-by-field view: one column per version


def test_metric_chart_marks_experiments_and_the_promoted_version(
    three_versions: Path, make_app: Callable[..., Any], qtbot: QtBot
) -> None:
    _app, page = open_models(make_app, qtbot)
    panel = page.show_tab("Metric chart")
    panel.metric_box.setCurrentText("loss")
    qtbot.waitUntil(
        lambda: panel.loaded_key is not None and panel.loaded_key[1] == "loss", timeout=5000
    )
    chart = panel.chart
    x, y = chart.line.getData()
    assert list(x) == [1.0, 2.0, 3.0]
    assert list(y) == pytest.approx([final_loss(lr) for lr in LEARNING_RATES])
    assert sorted(chart.experiments.data["x"]) == [2.0, 3.0]
    assert list(chart.promoted.data["x"]) == [2.0]
    assert list(chart.current.data["x"]) == [2.0]


def test_learning_curves_overlay_the_selected_versions(
    three_versions: Path, make_app: Callable[..., Any], qtbot: QtBot
) -> None:
    app, page = open_models(make_app, qtbot)
    select_rows(page, [0, 2])  # v3 and v1
    panel = page.show_tab("Learning curves")
    qtbot.waitUntil(lambda: len(panel.loaded_ids) == 2, timeout=60_000)
    assert panel.metric_box.currentText() == "acc"
    panel.metric_box.setCurrentText("loss")
    qtbot.waitUntil(
        lambda: bool(panel.chart.curves) and panel.metric_box.currentText() == "loss", timeout=5000
    )
    app.workers.wait_idle(10)
    labels = sorted(curve.name() for curve in panel.chart.curves.values())
    assert labels == ["churn@1", "churn@3"]
    for version_id in panel.chart.curves:
        steps, values = panel.chart.points[version_id]
        lr = LEARNING_RATES[page.details[version_id].version - 1]
        assert list(steps) == [float(step) for step in range(1, STEPS + 1)]
        assert values[-1] == pytest.approx(final_loss(lr))
    assert panel.note.text() == f"2 curves, {2 * STEPS} points"


def test_a_running_versions_curve_grows_from_the_agents_run_steps_events(
    churn_repo: Path,
    paths: WatchkeeperPaths,
    start_agent: Callable[[], Any],
    make_app: Callable[..., Any],
    qtbot: QtBot,
) -> None:
    from agent.client import AgentClient

    start_agent()
    app = make_app()
    qtbot.waitUntil(lambda: app.agent.connected, timeout=60_000)
    page = app.window.show_page("Models")
    with AgentClient.connect(paths.socket) as client:
        run_id = client.call("train", model="churn", repo=str(churn_repo), params={"gate": "go"})[
            "run"
        ]

    # The version exists while it runs; its first five points arrive before the gate.
    def recorded() -> bool:
        with sqlite3.connect(paths.ledger) as connection:
            return connection.execute("SELECT count(*) FROM model_versions").fetchone()[0] == 1

    qtbot.waitUntil(recorded, timeout=60_000)
    page.refresh()
    qtbot.waitUntil(lambda: page.table_model.total == 1, timeout=60_000)
    page.table.selectRow(0)
    panel = page.show_tab("Learning curves")
    qtbot.waitUntil(lambda: panel.runs.get(run_id) is not None, timeout=60_000)
    qtbot.waitUntil(lambda: panel.metric_box.findText("loss") >= 0, timeout=60_000)
    panel.metric_box.setCurrentText("loss")

    def points() -> int:
        version_id = panel.runs.get(run_id)
        return len(panel.chart.points[version_id][0]) if version_id in panel.chart.points else 0

    qtbot.waitUntil(lambda: points() == 5, timeout=60_000)
    assert page.details[panel.runs[run_id]].status == "running"
    (paths.runs / run_id / "go").touch()
    qtbot.waitUntil(lambda: points() == STEPS, timeout=30_000)
    steps, values = panel.chart.points[panel.runs[run_id]]
    assert list(steps) == [float(step) for step in range(1, STEPS + 1)]
    assert values[-1] == pytest.approx(final_loss(0.1))
    with sqlite3.connect(paths.ledger) as connection:
        stored = connection.execute("SELECT sum(points) FROM step_metrics WHERE name = 'loss'")
        assert stored.fetchone()[0] == STEPS


def test_a_row_chosen_while_the_table_is_read_again_stays_chosen(
    three_versions: Path, make_app: Callable[..., Any], qtbot: QtBot
) -> None:
    app, page = open_models(make_app, qtbot)
    select_rows(page, [2])  # version 1
    qtbot.waitUntil(lambda: page.detail is not None and page.detail.version == 1, timeout=60_000)
    chosen: list[int] = []

    def choose_version_3_once() -> None:
        # the rows were reset by the reload below: the user picks another one before the
        # reload has finished reading every id
        if not chosen:
            chosen.append(3)
            page.table.selectRow(0)

    page.table_model.modelReset.connect(choose_version_3_once)
    page.reload_keeping_selection()
    qtbot.waitUntil(lambda: bool(chosen), timeout=60_000)
    app.workers.wait_idle(20)
    qtbot.waitUntil(lambda: page.detail is not None and page.detail.version == 3, timeout=60_000)
    assert page.selected_version_ids() == [page.table_model.version_id(0)]
