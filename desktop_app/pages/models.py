"""The Models page: every version in a lazy table with param and metric columns, a version's
lineage, names and artifacts, charts across versions and steps, compare, and Retrain."""

from __future__ import annotations

import html
import json
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from agent.errors import WatchkeeperError
from agent.runs.states import TERMINAL_RUN_STATES, VERSION_STATUSES
from desktop_app.context import AppContext
from desktop_app.models_table import ModelVersionsTableModel
from desktop_app.pages import Page, model_views
from desktop_app.queries import models as model_queries
from desktop_app.queries.formatting import format_time
from desktop_app.queries.models import ExtraColumn, ModelChoice, VersionDetail

STATUSES = ("", *VERSION_STATUSES)
ALL_MODELS = "all models"
DEFAULT_EXTRA_COLUMNS = 16  # params and metrics shown before the user picks
ONE_MODEL_HIDDEN_COLUMNS = (0, 4, 5, 6, 7)  # Model, Dirty, Metrics, Executor, Host


def names_html(detail: VersionDetail) -> str:
    """Marks, aliases, tags and notes; aliases and tags link to their removal."""
    e = html.escape
    marks = [
        *(["current version"] if detail.current else []),
        *(["experiment"] if detail.experiment else []),
    ]
    aliases = " ".join(
        f"<b>@{e(alias)}</b> <a href='remove-alias:{e(alias)}'>×</a>" for alias in detail.aliases
    )
    tags = " ".join(
        f"{e(key)}={e(value)} <a href='remove-tag:{e(key)}'>×</a>"
        for key, value in detail.tags.items()
    )
    notes = "".join(
        f"<li>{e(format_time(note['at']))}: {e(note['text'])}</li>" for note in detail.notes
    )
    rows = [
        ("marks", ", ".join(marks) or "—"),
        ("aliases", aliases or "—"),
        ("tags", tags or "—"),
    ]
    cells = "".join(
        f"<tr><td><b>{key}</b>&nbsp;&nbsp;</td><td>{value}</td></tr>" for key, value in rows
    )
    notes_part = f"<ul>{notes}</ul>" if notes else "<p><i>no notes</i></p>"
    return f"<h3>Names</h3><table cellspacing='2'>{cells}</table><h3>Notes</h3>{notes_part}"


def detail_html(detail: VersionDetail) -> str:
    """The version's lineage, params, metrics and artifacts as simple HTML."""
    e = html.escape

    def table(rows: list[tuple[str, str]]) -> str:
        if not rows:
            return "<p><i>none</i></p>"
        cells = "".join(
            f"<tr><td><b>{e(key)}</b>&nbsp;&nbsp;</td><td>{e(value)}</td></tr>"
            for key, value in rows
        )
        return f"<table cellspacing='2'>{cells}</table>"

    commit = detail.commit_sha[:12] or "—"
    if detail.dirty:
        commit += f" + uncommitted diff {detail.diff_hash[:12]}"
    lineage = [
        ("repo", detail.repo_path),
        ("commit", commit),
        ("command", detail.train_command),
        (
            "by",
            (detail.author or "you")
            + (f" (pulled from {detail.pulled_from})" if detail.pulled_from else ""),
        ),
        ("executor", f"{detail.executor} on {detail.host}" if detail.host else detail.executor),
        ("run", detail.run_id),
        ("started", format_time(detail.started_at)),
        ("ended", format_time(detail.ended_at)),
        ("exit code", "" if detail.exit_code is None else str(detail.exit_code)),
    ]
    data_rows = []
    for dep, entry in detail.data.items():
        fingerprint = entry.get("fingerprint", "") if isinstance(entry, dict) else str(entry)
        snapshot = entry.get("snapshot_id", "") if isinstance(entry, dict) else ""
        taken = detail.snapshots.get(dep, "")
        data_rows.append((dep, f"snapshot {snapshot} ({taken}) {str(fingerprint)[:16]}"))
    extra = (
        f"<h3>Other final values</h3><pre>{e(json.dumps(detail.metrics_extra, indent=1))}</pre>"
        if detail.metrics_extra
        else ""
    )
    steps = (
        f"<p>Step metrics: {e(', '.join(detail.step_metrics))} (see Learning curves)</p>"
        if detail.step_metrics
        else ""
    )
    return (
        f"<h2>{e(detail.label)} <small>{e(detail.status)}</small></h2>"
        f"{names_html(detail)}"
        f"<h3>Lineage</h3>{table(lineage)}"
        f"<h3>Data</h3>{table(data_rows)}"
        f"<h3>Code</h3>{table([(k, str(v)[:16]) for k, v in detail.code.items()])}"
        f"<h3>Params</h3>{table([(k, json.dumps(v)) for k, v in detail.params.items()])}"
        f"<h3>Metrics</h3>{table([(k, str(v)) for k, v in detail.metrics.items()])}{extra}{steps}"
        f"<h3>Artifacts</h3>{table([(k, str(v)[:16]) for k, v in detail.artifacts.items()])}"
    )


class ModelsPage(Page):
    """The ledger's model versions with filter, sort, detail, names, charts, compare, retrain."""

    title = "Models"

    def __init__(self, context: AppContext) -> None:
        super().__init__(context)
        self.table_model = ModelVersionsTableModel(context.workers)
        self.detail: VersionDetail | None = None
        self.details: dict[int, VersionDetail] = {}
        self.models: list[ModelChoice] = []
        self.column_choices: dict[int, list[ExtraColumn]] = {}  # model id -> its shown columns
        self.compare_dialog: model_views.CompareDialog | None = None
        self._shown_verdicts: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._keep_selected: tuple[int | None, list[int]] = (None, [])
        self._reloading = False  # between reload_keeping_selection and the table's `loaded`
        self._writes: deque[Callable[[], None]] = deque()  # ledger changes, applied in order
        self._writing = False

        self.filter_box = QLineEdit()
        self.filter_box.setPlaceholderText("Filter by model, commit, executor or host (Ctrl+F)")
        self.filter_box.setClearButtonEnabled(True)
        self.status_box = QComboBox()
        self.status_box.addItems(["any status", *STATUSES[1:]])
        self.status_box.setAccessibleName("Status filter")
        self.model_box = QComboBox()
        self.model_box.addItem(ALL_MODELS)
        self.model_box.setAccessibleName("Model")
        self.model_box.setToolTip("One model's versions, with its params and metrics as columns")
        self.columns_button = QToolButton()
        self.columns_button.setText("Columns")
        self.columns_button.setToolTip("The params and metrics shown as columns for this model")
        self.columns_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.columns_menu = QMenu(self.columns_button)
        self.columns_button.setMenu(self.columns_menu)
        self.columns_button.setEnabled(False)
        self.count_label = QLabel("")
        self.filter_timer = QTimer(self)
        self.filter_timer.setSingleShot(True)
        self.filter_timer.setInterval(250)
        self.filter_timer.timeout.connect(self.apply_filter)
        self.filter_box.textChanged.connect(self.filter_timer.start)
        self.status_box.currentIndexChanged.connect(self.apply_filter)
        self.model_box.currentIndexChanged.connect(self._model_chosen)
        QShortcut(QKeySequence.StandardKey.Find, self, self.filter_box.setFocus)

        self.table = QTableView()
        self.table.setModel(self.table_model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setAccessibleName("Model versions")
        vertical = self.table.verticalHeader()
        vertical.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vertical.setDefaultSectionSize(self.fontMetrics().height() + 8)
        vertical.hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        header.setSortIndicator(-1, Qt.SortOrder.DescendingOrder)
        header.sortIndicatorChanged.connect(self.table_model.sort)
        self._size_columns()
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.table_model.loaded.connect(self._table_loaded)
        self.table_model.modelReset.connect(self._size_columns)

        self.detail_view = QTextBrowser()
        self.detail_view.setOpenLinks(False)
        self.detail_view.setAccessibleName("Version detail")
        self.detail_view.setHtml("<p>Select a version to see its lineage.</p>")
        self.detail_view.anchorClicked.connect(lambda url: self._link_clicked(url.toString()))
        self.alias_button = QPushButton("&Alias…")
        self.alias_button.setToolTip("Name this version MODEL@ALIAS (an alias moves)")
        self.alias_button.clicked.connect(self._ask_alias)
        self.tag_button = QPushButton("&Tag…")
        self.tag_button.setToolTip("Tag this version with key=value")
        self.tag_button.clicked.connect(self._ask_tag)
        self.note_button = QPushButton("&Note…")
        self.note_button.setToolTip("Add a dated note to this version")
        self.note_button.clicked.connect(self._ask_note)
        self.open_folder_button = QPushButton("Open artifact &folder")
        self.open_folder_button.clicked.connect(self.open_artifact_folder)
        self.compare_button = QPushButton("&Compare")
        self.compare_button.setToolTip("Select two or more versions (Ctrl+click) to compare")
        self.compare_button.clicked.connect(self.compare_selected)
        self.executor_box = QComboBox()
        self.executor_box.setAccessibleName("Executor for retraining")
        self.retrain_button = QPushButton("&Retrain")
        self.retrain_button.clicked.connect(self.retrain_selected)
        for button in (
            self.open_folder_button,
            self.compare_button,
            self.retrain_button,
            self.alias_button,
            self.tag_button,
            self.note_button,
        ):
            button.setEnabled(False)

        self.artifacts = model_views.ArtifactPanel(context)
        self.metric_chart: model_views.MetricChartPanel | None = None  # built when first shown
        self.curves: model_views.LearningCurvesPanel | None = None
        detail_tab = QWidget()
        detail_layout = QVBoxLayout(detail_tab)
        detail_layout.setContentsMargins(0, 0, 0, 0)
        detail_layout.addWidget(self.detail_view)
        names = QHBoxLayout()
        for button in (self.alias_button, self.tag_button, self.note_button):
            names.addWidget(button)
        names.addStretch()
        names.addWidget(self.open_folder_button)
        detail_layout.addLayout(names)
        self.tabs = QTabWidget()
        self.tabs.addTab(detail_tab, "Detail")
        self.tabs.addTab(self.artifacts, "Artifacts")
        self.tabs.addTab(QLabel("Loading the chart…"), "Metric chart")
        self.tabs.addTab(QLabel("Loading the chart…"), "Learning curves")
        self.tabs.currentChanged.connect(self._tab_changed)

        filters = QHBoxLayout()
        filters.addWidget(self.filter_box, 1)
        filters.addWidget(self.status_box)
        filters.addWidget(self.model_box)
        filters.addWidget(self.columns_button)
        filters.addWidget(self.count_label)
        actions = QHBoxLayout()
        actions.addWidget(self.compare_button)
        actions.addStretch()
        actions.addWidget(QLabel("on"))
        actions.addWidget(self.executor_box)
        actions.addWidget(self.retrain_button)
        detail_side = QWidget()
        side_layout = QVBoxLayout(detail_side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.tabs)
        side_layout.addLayout(actions)
        splitter = QSplitter()
        splitter.addWidget(self.table)
        splitter.addWidget(detail_side)
        splitter.setSizes([700, 460])
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(splitter, 1)
        self.fill_executors()

    # ---------------------------------------------------------------- loading

    def refresh(self) -> None:
        self.table_model.reload()
        self.fill_executors()
        self.context.workers.submit(model_queries.model_choices, self._models_arrived)

    def handle_event(self, kind: str, data: object) -> None:
        run_ended = (
            kind == "run_state"
            and isinstance(data, dict)
            and data.get("state") in TERMINAL_RUN_STATES
        )
        verdicts_changed = (
            kind == "verdicts" and isinstance(data, dict) and self._verdicts_changed(data)
        )
        if run_ended or verdicts_changed or kind == "pulled":  # pulled: teammates' versions
            self.reload_keeping_selection()
        if kind == "run_steps" and isinstance(data, dict) and self.curves is not None:
            self.curves.add_points(data)

    def _verdicts_changed(self, data: dict[str, Any]) -> bool:
        """Remember the verdicts an event carries; True when one differs from what is shown."""
        changed = False
        for entry in data.get("models") or []:
            key = (str(entry.get("repo")), str(entry.get("model")))
            value = (entry.get("verdict"), entry.get("version_id"))
            changed = changed or self._shown_verdicts.get(key) != value
            self._shown_verdicts[key] = value
        return changed

    def fill_executors(self) -> None:
        """Local plus every remote configured in config.toml."""
        current = self.executor_box.currentText()
        remotes = sorted(self.context.load_config().section("remotes"))
        self.executor_box.clear()
        self.executor_box.addItems(["local", *remotes])
        if current:
            self.executor_box.setCurrentText(current)

    def apply_filter(self) -> None:
        status = self.status_box.currentText()
        self.table_model.set_filter(
            self.filter_box.text(), "" if status == "any status" else status
        )

    def reload_keeping_selection(self) -> None:
        """Re-read the table; the versions selected now stay selected where still shown."""
        current = self.table.currentIndex()
        current_id = self.table_model.version_id(current.row()) if current.isValid() else None
        selected = self.selected_version_ids()
        if selected:  # else an earlier reload, still on its way, holds the selection to keep
            self._keep_selected = (current_id, selected)
        self._reloading = True
        self.table_model.reload()

    def _table_loaded(self) -> None:
        self.count_label.setText(f"{self.table_model.total:,} versions")
        current_id, kept = self._keep_selected
        self._keep_selected = (None, [])
        self._reloading = False
        if self.table.selectionModel().hasSelection():
            return  # chosen while the rows were being read again: that choice wins
        rows = [row for row in map(self.table_model.row_of, kept) if row is not None]
        if rows:
            selection = self.table.selectionModel()
            selection.clearSelection()
            current_row = self.table_model.row_of(current_id) if current_id else None
            self.table.setCurrentIndex(self.table_model.index(current_row or rows[0], 0))
            for row in rows:
                selection.select(
                    self.table_model.index(row, 0),
                    selection.SelectionFlag.Select | selection.SelectionFlag.Rows,
                )
            return
        if self.table_model.total and not self.table.selectionModel().hasSelection():
            self.table.setCurrentIndex(self.table_model.index(0, 0))
            self.table.selectRow(0)

    def _size_columns(self) -> None:
        header = self.table.horizontalHeader()
        widths = (120, 60, 90, 100, 50, 200, 70, 110, 130, 80, 130)
        for column in range(self.table_model.columnCount()):
            header.resizeSection(column, widths[column] if column < len(widths) else 80)

    # ---------------------------------------------------------------- models and columns

    def _models_arrived(self, models: list[ModelChoice]) -> None:
        self.models = models
        chosen = self.model_box.currentText()
        self.model_box.blockSignals(True)
        self.model_box.clear()
        self.model_box.addItem(ALL_MODELS)
        for model in models:
            self.model_box.addItem(model.label, model.id)
        index = self.model_box.findText(chosen)
        self.model_box.setCurrentIndex(max(index, 0))
        self.model_box.blockSignals(False)
        self._model_chosen()

    def chosen_model(self) -> ModelChoice | None:
        model_id = self.model_box.currentData()
        return next((model for model in self.models if model.id == model_id), None)

    def choose_model(self, name: str) -> None:
        """Show one model's versions with its param and metric columns (ALL_MODELS: all)."""
        self.model_box.setCurrentIndex(max(self.model_box.findText(name), 0))

    def _model_chosen(self) -> None:
        model = self.chosen_model()
        self.columns_button.setEnabled(model is not None)
        # One model: its name, and the columns its own params and metrics replace, step aside.
        for column in ONE_MODEL_HIDDEN_COLUMNS:
            self.table.setColumnHidden(column, model is not None)
        if model is None:
            self.table_model.set_model(None, [])
        else:
            self.table_model.set_model(model.id, self.columns_for(model))
            self._fill_columns_menu(model)
        if self.metric_chart is not None:
            self.metric_chart.show_model(model or self._model_of_detail())

    def columns_for(self, model: ModelChoice) -> list[ExtraColumn]:
        """The columns chosen for this model; at first its params, then its metrics."""
        if model.id not in self.column_choices:
            every = [
                *(ExtraColumn("param", name) for name in model.params),
                *(ExtraColumn("metric", name) for name in model.metrics),
            ]
            self.column_choices[model.id] = every[:DEFAULT_EXTRA_COLUMNS]
        return self.column_choices[model.id]

    def set_columns(self, model: ModelChoice, columns: list[ExtraColumn]) -> None:
        """Show exactly these params and metrics as columns while `model` is chosen."""
        self.column_choices[model.id] = list(columns)
        if self.chosen_model() is model:
            self.table_model.set_model(model.id, list(columns))
            self._fill_columns_menu(model)

    def _fill_columns_menu(self, model: ModelChoice) -> None:
        self.columns_menu.clear()
        shown = self.columns_for(model)
        for kind, names in (("param", model.params), ("metric", model.metrics)):
            self.columns_menu.addSection(f"{kind}s")
            for name in names:
                column = ExtraColumn(kind, name)
                action = QAction(name, self.columns_menu)
                action.setCheckable(True)
                action.setChecked(column in shown)
                action.toggled.connect(lambda on, c=column, m=model: self._toggle_column(m, c, on))
                self.columns_menu.addAction(action)

    def _toggle_column(self, model: ModelChoice, column: ExtraColumn, shown: bool) -> None:
        columns = [c for c in self.columns_for(model) if c != column]
        if shown:
            every = [
                *(ExtraColumn("param", n) for n in model.params),
                *(ExtraColumn("metric", n) for n in model.metrics),
            ]
            columns = [c for c in every if c in columns or c == column]
        self.set_columns(model, columns)

    def _model_of_detail(self) -> ModelChoice | None:
        if self.detail is None:
            return None
        return next((m for m in self.models if m.id == self.detail.model_id), None)

    # ---------------------------------------------------------------- tabs

    def _tab_changed(self, index: int) -> None:
        title = self.tabs.tabText(index)
        if title == "Metric chart":
            if self.metric_chart is None:
                self.metric_chart = model_views.MetricChartPanel(self.context)
                self._replace_tab(index, self.metric_chart, title)
            self.metric_chart.show_model(self.chosen_model() or self._model_of_detail())
        elif title == "Learning curves":
            if self.curves is None:
                self.curves = model_views.LearningCurvesPanel(self.context)
                self._replace_tab(index, self.curves, title)
            self._show_curves()

    def _replace_tab(self, index: int, widget: QWidget, title: str) -> None:
        self.tabs.blockSignals(True)
        placeholder = self.tabs.widget(index)
        self.tabs.removeTab(index)
        self.tabs.insertTab(index, widget, title)
        self.tabs.setCurrentIndex(index)
        self.tabs.blockSignals(False)
        if placeholder is not None:
            placeholder.deleteLater()

    def show_tab(self, title: str) -> QWidget:
        """Switch the side panel to a tab (building its chart the first time)."""
        index = next(i for i in range(self.tabs.count()) if self.tabs.tabText(i) == title)
        if self.tabs.currentIndex() != index:
            self.tabs.setCurrentIndex(index)
        else:
            self._tab_changed(index)
        widget = self.tabs.widget(index)
        assert widget is not None
        return widget

    def _show_curves(self) -> None:
        if self.curves is None or self.tabs.currentWidget() is not self.curves:
            return
        ids = self.selected_version_ids()[: model_views.MAX_CURVES]
        if all(version_id in self.details for version_id in ids):
            self.curves.show_versions([self.details[version_id] for version_id in ids])

    # ---------------------------------------------------------------- selection

    def selected_version_ids(self) -> list[int]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        ids = [self.table_model.version_id(row) for row in rows]
        return [version_id for version_id in ids if version_id is not None]

    def _selection_changed(self) -> None:
        ids = self.selected_version_ids()
        self.compare_button.setEnabled(len(ids) >= 2)
        self.compare_button.setText(f"&Compare {len(ids)}" if len(ids) >= 2 else "&Compare")
        if not ids:
            return
        current: QModelIndex = self.table.currentIndex()
        version_id = self.table_model.version_id(current.row()) if current.isValid() else ids[0]
        if self._reloading:
            # Chosen while the rows are read again: the reset that brings them clears the
            # selection, and this choice, not the one the reload started with, is put back.
            self._keep_selected = (version_id, ids)
        wanted = {version_id, *ids[: model_views.MAX_CURVES]}
        for missing in wanted:
            if missing is not None and missing not in self.details:
                self._load_detail(missing)
        if version_id in self.details:
            self.show_detail(self.details[version_id])
        self._show_curves()

    def _load_detail(self, version_id: int) -> None:
        def arrived(detail: VersionDetail | None) -> None:
            if detail is None:
                return
            self.details[version_id] = detail
            current = self.table.currentIndex()
            if current.isValid() and self.table_model.version_id(current.row()) == version_id:
                self.show_detail(detail)
            self._show_curves()

        self.context.workers.submit(
            lambda connection: model_queries.version_detail(connection, version_id), arrived
        )

    def show_detail(self, detail: VersionDetail) -> None:
        self.detail = detail
        self.detail_view.setHtml(detail_html(detail))
        self.open_folder_button.setEnabled(bool(detail.artifacts))
        for button in (self.alias_button, self.tag_button, self.note_button):
            button.setEnabled(True)
        self.artifacts.show_version(detail)
        if self.metric_chart is not None and self.chosen_model() is None:
            self.metric_chart.show_model(self._model_of_detail())
        from agent.ledger.queries import is_builtin_repo  # the ledger library loads on demand

        # Built-in models (the coding-time HMM) are refitted by the agent's schedule, not trained.
        self.retrain_button.setEnabled(not is_builtin_repo(detail.repo_path))

    # ---------------------------------------------------------------- names

    def _ask_alias(self) -> None:
        if self.detail is None:
            return
        alias, ok = QInputDialog.getText(
            self, "Alias", f"Name {self.detail.label} as {self.detail.model}@…", text="champion"
        )
        if ok and alias.strip():
            self.set_alias(alias.strip())

    def _ask_tag(self) -> None:
        if self.detail is None:
            return
        text, ok = QInputDialog.getText(self, "Tag", f"Tag {self.detail.label} (key=value)")
        if ok and text.strip():
            self.add_tag(text.strip())

    def _ask_note(self) -> None:
        if self.detail is None:
            return
        text, ok = QInputDialog.getMultiLineText(self, "Note", f"Note on {self.detail.label}")
        if ok:
            self.add_note(text)

    def _link_clicked(self, link: str) -> None:
        kind, _, name = link.partition(":")
        if kind == "remove-alias":
            self.remove_alias(name)
        elif kind == "remove-tag":
            self.remove_tag(name)

    def set_alias(self, alias: str) -> None:
        """Point MODEL@alias at the shown version (the alias moves if it exists)."""
        from agent.ledger.versions import set_alias

        self._write(
            lambda db, version: set_alias(db, version, alias),
            lambda version: f"{version['model']}@{alias} now names v{version['version']}.",
        )

    def remove_alias(self, alias: str) -> None:
        from agent.ledger.versions import remove_alias

        self._write(
            lambda db, version: remove_alias(db, version["model_id"], version["model"], alias),
            lambda version: f"Removed alias {version['model']}@{alias} (its history is kept).",
        )

    def add_tag(self, text: str) -> None:
        """Tag the shown version with `key=value` (a key set again takes the new value)."""
        from agent.ledger.versions import parse_tag, set_tag

        def write(db: Any, version: dict[str, Any]) -> None:
            key, value = parse_tag(text)
            set_tag(db, version["id"], key, value)

        self._write(write, lambda version: f"Tagged {version['label']}: {text}.")

    def remove_tag(self, key: str) -> None:
        from agent.ledger.versions import remove_tag

        self._write(
            lambda db, version: remove_tag(db, version["id"], key),
            lambda version: f"Removed tag {key} of {version['label']}.",
        )

    def add_note(self, text: str) -> None:
        from agent.ledger.versions import add_note

        self._write(
            lambda db, version: add_note(db, version["id"], text),
            lambda version: f"Noted on {version['label']}.",
        )

    def _write(self, change: Any, said: Any) -> None:
        """Apply a change to the shown version through the ledger functions the CLI uses, in a
        worker; then show the version and the table as they are now."""
        if self.detail is None:
            return
        detail = self.detail
        version = {
            "id": detail.id,
            "model": detail.model,
            "model_id": detail.model_id,
            "version": detail.version,
            "status": detail.status,
            "label": detail.label,
        }
        ledger = self.context.paths.ledger

        def write(_connection: object) -> str:
            from agent.ledger import ledger_errors, open_ledger, write_transaction

            try:
                db = open_ledger(ledger)
                try:
                    with ledger_errors(ledger), write_transaction(db):
                        change(db, version)
                finally:
                    db.close()
            except WatchkeeperError as error:
                return f"Could not change {detail.label}: {error}"
            return str(said(version))

        def done(message: str) -> None:
            self.context.show_status(message)
            self.details.pop(detail.id, None)
            self._load_detail(detail.id)
            self.reload_keeping_selection()
            self._writing = False
            self._next_write()

        def start() -> None:
            self.context.workers.submit(write, done, done, with_ledger=False)

        self._writes.append(start)
        self._next_write()

    def _next_write(self) -> None:
        """Start the next queued change once the one before it is done (the user's order)."""
        if self._writes and not self._writing:
            self._writing = True
            self._writes.popleft()()

    # ---------------------------------------------------------------- actions

    def artifact_folder(self) -> Path | None:
        """The store folder holding the selected version's first artifact (None if not here)."""
        if self.detail is None or not self.detail.artifacts:
            return None
        from agent.ledger.artifacts import ArtifactStore  # the ledger library loads on demand

        digest = str(next(iter(self.detail.artifacts.values())))
        try:
            artifact = ArtifactStore(self.context.paths.artifacts).path(digest)
        except WatchkeeperError as error:
            self.context.show_status(str(error))
            return None
        if not artifact.exists():
            self.context.show_status(f"{artifact} is not on this machine.")
            return None
        return artifact.parent

    def open_artifact_folder(self) -> None:
        folder = self.artifact_folder()
        if folder is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def compare_selected(self) -> None:
        """Open the comparison of the selected versions (read in a worker; the dialog is
        `self.compare_dialog` once it is open)."""
        ids = self.selected_version_ids()
        if len(ids) < 2:
            self.context.show_status("Select two or more versions to compare.")
            return

        def read(connection: Any) -> tuple[dict[str, Any], list[VersionDetail]]:
            details = [model_queries.version_detail(connection, i) for i in ids]
            report = model_queries.comparison_report(connection, ids)
            return report, [detail for detail in details if detail is not None]

        def arrived(result: tuple[dict[str, Any], list[VersionDetail]]) -> None:
            report, details = result
            self.compare_dialog = model_views.CompareDialog(report, details, self)
            self.compare_dialog.open()

        self.context.workers.submit(read, arrived)

    def retrain_selected(self) -> None:
        """Send `train` for the selected version's model on the chosen executor."""
        if self.detail is None:
            return
        executor = self.executor_box.currentText() or "local"
        params: dict[str, Any] = {"model": self.detail.model}
        if self.detail.repo_path:
            params["repo"] = self.detail.repo_path
        if executor != "local":
            params["remote"] = executor
        model = self.detail.model
        self.context.show_status(f"Asking the agent to retrain {model} on {executor}…")
        self.context.agent.call(
            "train",
            params,
            on_result=lambda result: self.context.show_status(
                f"Retraining {model}: run {_run_id(result)} started on {executor}."
            ),
            on_error=lambda message: self.context.show_status(
                f"Could not retrain {model}: {message}"
            ),
        )


def _run_id(result: Any) -> str:
    if isinstance(result, dict):
        return str(result.get("run") or result.get("run_id") or result.get("id") or "")
    return str(result or "")
