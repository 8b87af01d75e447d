"""The Models page: every version in a lazy table, a version's lineage, compare and Retrain."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QFont, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from agent.errors import WatchkeeperError
from agent.runs.states import TERMINAL_RUN_STATES, VERSION_STATUSES
from desktop_app.context import AppContext
from desktop_app.models_table import ModelVersionsTableModel
from desktop_app.pages import Page
from desktop_app.queries import models as model_queries
from desktop_app.queries.formatting import format_time
from desktop_app.queries.models import VersionDetail

STATUSES = ("", *VERSION_STATUSES)


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
    return (
        f"<h2>{e(detail.label)} <small>{e(detail.status)}</small></h2>"
        f"<h3>Lineage</h3>{table(lineage)}"
        f"<h3>Data</h3>{table(data_rows)}"
        f"<h3>Code</h3>{table([(k, str(v)[:16]) for k, v in detail.code.items()])}"
        f"<h3>Params</h3>{table([(k, json.dumps(v)) for k, v in detail.params.items()])}"
        f"<h3>Metrics</h3>{table([(k, str(v)) for k, v in detail.metrics.items()])}"
        f"<h3>Artifacts</h3>{table([(k, str(v)[:16]) for k, v in detail.artifacts.items()])}"
    )


class CompareDialog(QDialog):
    """Two versions side by side; rows that differ are bold."""

    def __init__(self, first: VersionDetail, second: VersionDetail, parent: QWidget) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Compare {first.label} and {second.label}")
        rows = model_queries.compare_versions(first, second)
        self.table = QTableWidget(len(rows), 3)
        self.table.setHorizontalHeaderLabels(["", first.label, second.label])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.differences = 0
        for row, (key, left, right) in enumerate(rows):
            items = [QTableWidgetItem(key), QTableWidgetItem(left), QTableWidgetItem(right)]
            if left != right:
                self.differences += 1
                for item in items:
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
            for column, item in enumerate(items):
                self.table.setItem(row, column, item)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"{self.differences} of {len(rows)} fields differ"))
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(760, 520)


class ModelsPage(Page):
    """The ledger's model versions with filter, sort, detail, compare and retrain."""

    title = "Models"

    def __init__(self, context: AppContext) -> None:
        super().__init__(context)
        self.table_model = ModelVersionsTableModel(context.workers)
        self.detail: VersionDetail | None = None
        self.details: dict[int, VersionDetail] = {}
        self._shown_verdicts: dict[tuple[str, str], tuple[Any, Any]] = {}

        self.filter_box = QLineEdit()
        self.filter_box.setPlaceholderText("Filter by model, commit, executor or host (Ctrl+F)")
        self.filter_box.setClearButtonEnabled(True)
        self.status_box = QComboBox()
        self.status_box.addItems(["any status", *STATUSES[1:]])
        self.status_box.setAccessibleName("Status filter")
        self.count_label = QLabel("")
        self.filter_timer = QTimer(self)
        self.filter_timer.setSingleShot(True)
        self.filter_timer.setInterval(250)
        self.filter_timer.timeout.connect(self.apply_filter)
        self.filter_box.textChanged.connect(self.filter_timer.start)
        self.status_box.currentIndexChanged.connect(self.apply_filter)
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
        for column, width in enumerate((120, 60, 90, 100, 50, 200, 70, 110, 130, 80)):
            header.resizeSection(column, width)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.table_model.loaded.connect(self._table_loaded)

        self.detail_view = QTextBrowser()
        self.detail_view.setOpenLinks(False)
        self.detail_view.setAccessibleName("Version detail")
        self.detail_view.setHtml("<p>Select a version to see its lineage.</p>")
        self.open_folder_button = QPushButton("Open artifact &folder")
        self.open_folder_button.clicked.connect(self.open_artifact_folder)
        self.compare_button = QPushButton("&Compare two")
        self.compare_button.setToolTip("Select two versions (Ctrl+click) and compare them")
        self.compare_button.clicked.connect(self.compare_selected)
        self.executor_box = QComboBox()
        self.executor_box.setAccessibleName("Executor for retraining")
        self.retrain_button = QPushButton("&Retrain")
        self.retrain_button.clicked.connect(self.retrain_selected)
        for button in (self.open_folder_button, self.compare_button, self.retrain_button):
            button.setEnabled(False)

        filters = QHBoxLayout()
        filters.addWidget(self.filter_box, 1)
        filters.addWidget(self.status_box)
        filters.addWidget(self.count_label)
        actions = QHBoxLayout()
        actions.addWidget(self.open_folder_button)
        actions.addWidget(self.compare_button)
        actions.addStretch()
        actions.addWidget(QLabel("on"))
        actions.addWidget(self.executor_box)
        actions.addWidget(self.retrain_button)
        detail_side = QWidget()
        detail_layout = QVBoxLayout(detail_side)
        detail_layout.setContentsMargins(0, 0, 0, 0)
        detail_layout.addWidget(self.detail_view)
        detail_layout.addLayout(actions)
        splitter = QSplitter()
        splitter.addWidget(self.table)
        splitter.addWidget(detail_side)
        splitter.setSizes([700, 420])
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(splitter, 1)
        self.fill_executors()

    # ---------------------------------------------------------------- loading

    def refresh(self) -> None:
        self.table_model.reload()
        self.fill_executors()

    def handle_event(self, kind: str, data: object) -> None:
        if (
            kind == "run_state"
            and isinstance(data, dict)
            and data.get("state") in TERMINAL_RUN_STATES
        ) or (kind == "verdicts" and isinstance(data, dict) and self._verdicts_changed(data)):
            self.table_model.reload()

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

    def _table_loaded(self) -> None:
        self.count_label.setText(f"{self.table_model.total:,} versions")
        if self.table_model.total and not self.table.selectionModel().hasSelection():
            self.table.setCurrentIndex(self.table_model.index(0, 0))
            self.table.selectRow(0)

    # ---------------------------------------------------------------- selection

    def selected_version_ids(self) -> list[int]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        ids = [self.table_model.version_id(row) for row in rows]
        return [version_id for version_id in ids if version_id is not None]

    def _selection_changed(self) -> None:
        ids = self.selected_version_ids()
        self.compare_button.setEnabled(len(ids) == 2)
        if not ids:
            return
        current: QModelIndex = self.table.currentIndex()
        version_id = self.table_model.version_id(current.row()) if current.isValid() else ids[0]
        for wanted in {version_id, *ids[:2]}:
            if wanted is not None and wanted not in self.details:
                self._load_detail(wanted)
        if version_id in self.details:
            self.show_detail(self.details[version_id])

    def _load_detail(self, version_id: int) -> None:
        def arrived(detail: VersionDetail | None) -> None:
            if detail is None:
                return
            self.details[version_id] = detail
            current = self.table.currentIndex()
            if current.isValid() and self.table_model.version_id(current.row()) == version_id:
                self.show_detail(detail)

        self.context.workers.submit(
            lambda connection: model_queries.version_detail(connection, version_id), arrived
        )

    def show_detail(self, detail: VersionDetail) -> None:
        self.detail = detail
        self.detail_view.setHtml(detail_html(detail))
        self.open_folder_button.setEnabled(bool(detail.artifacts))
        from agent.ledger.queries import is_builtin_repo  # the ledger library loads on demand

        # Built-in models (the coding-time HMM) are refitted by the agent's schedule, not trained.
        self.retrain_button.setEnabled(not is_builtin_repo(detail.repo_path))

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

    def compare_selected(self) -> CompareDialog | None:
        """Open the side-by-side comparison of the two selected versions."""
        ids = self.selected_version_ids()
        if len(ids) != 2 or not all(version_id in self.details for version_id in ids):
            self.context.show_status("Select exactly two versions to compare.")
            return None
        dialog = CompareDialog(self.details[ids[0]], self.details[ids[1]], self)
        dialog.open()
        return dialog

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
