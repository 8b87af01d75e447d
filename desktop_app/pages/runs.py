"""The Runs page: recent runs with their state, the live log of the selected run, and cancel."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from agent.runs.states import ACTIVE_RUN_STATES
from desktop_app.context import AppContext
from desktop_app.pages import Page
from desktop_app.queries.formatting import format_time
from desktop_app.queries.runs import RunRow, read_log_tail, recent_runs

COLUMNS = ("Run", "Model", "State", "Executor", "Host", "Started", "Elapsed", "Exit")
NO_LOG_YET = "(no log on this machine yet)"


class RunsPage(Page):
    """Runs newest first; the selected run's log follows `run_log` events from the agent."""

    title = "Runs"

    def __init__(self, context: AppContext) -> None:
        super().__init__(context)
        self.runs: list[RunRow] = []
        self.selected_run: RunRow | None = None
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        vertical = self.table.verticalHeader()
        vertical.hide()
        vertical.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vertical.setDefaultSectionSize(self.fontMetrics().height() + 8)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.setAccessibleName("Runs")
        self.table.itemSelectionChanged.connect(self._selection_changed)

        self.log_title = QLabel("Select a run to see its log.")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(50_000)
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log_view.setAccessibleName("Run log")
        self.cancel_button = QPushButton("Ca&ncel run")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_selected)

        log_side = QWidget()
        log_layout = QVBoxLayout(log_side)
        log_layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(self.log_title, 1)
        top.addWidget(self.cancel_button)
        log_layout.addLayout(top)
        log_layout.addWidget(self.log_view)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(log_side)
        splitter.setSizes([300, 400])
        QVBoxLayout(self).addWidget(splitter)

    def refresh(self) -> None:
        self.context.workers.submit(
            lambda connection: recent_runs(connection, limit=500), self.show_runs
        )

    def show_runs(self, runs: list[RunRow]) -> None:
        selected_id = self.selected_run.id if self.selected_run else None
        self.runs = runs
        self.table.blockSignals(True)
        self.table.setRowCount(len(runs))
        reselect = -1
        for row, run in enumerate(runs):
            values = (
                run.id,
                run.model,
                run.state,
                run.executor,
                run.host,
                format_time(run.started_at),
                run.elapsed,
                "" if run.exit_code is None else str(run.exit_code),
            )
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(value))
            if run.id == selected_id:
                reselect = row
        self.table.blockSignals(False)
        if reselect >= 0:
            self.table.selectRow(reselect)
            self.selected_run = runs[reselect]
            self.cancel_button.setEnabled(runs[reselect].state in ACTIVE_RUN_STATES)
        elif runs and selected_id is None:
            self.table.selectRow(0)

    def _selection_changed(self) -> None:
        rows = {index.row() for index in self.table.selectedIndexes()}
        if not rows:
            return
        run = self.runs[min(rows)]
        if self.selected_run is not None and run.id == self.selected_run.id:
            return
        self.selected_run = run
        self.cancel_button.setEnabled(run.state in ACTIVE_RUN_STATES)
        self.log_title.setText(f"Log of {run.id} ({run.model}, {run.state})")
        self.log_view.setPlainText("")
        log_path = run.log_path
        run_id = run.id

        def arrived(text: str) -> None:
            if self.selected_run is not None and self.selected_run.id == run_id:
                self.log_view.setPlainText(text or NO_LOG_YET)
                self.log_view.moveCursor(QTextCursor.MoveOperation.End)

        self.context.workers.submit(
            lambda _connection: read_log_tail(log_path), arrived, with_ledger=False
        )

    def handle_event(self, kind: str, data: object) -> None:
        if not isinstance(data, dict):
            return
        if kind == "run_log":
            self.append_log(data)
        elif kind == "run_state":
            self.refresh()

    def append_log(self, data: dict[str, Any]) -> None:
        """Append a `run_log` chunk when it belongs to the run on screen."""
        run_id = str(data.get("run") or data.get("run_id") or "")
        if self.selected_run is None or run_id != self.selected_run.id:
            return
        text = data.get("text", "")
        if not isinstance(text, str) or not text:
            return
        if self.log_view.toPlainText() == NO_LOG_YET:
            self.log_view.clear()
        cursor = self.log_view.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        self.log_view.moveCursor(QTextCursor.MoveOperation.End)

    def cancel_selected(self) -> None:
        """Ask the agent to cancel the selected run."""
        run = self.selected_run
        if run is None:
            return
        self.cancel_button.setEnabled(False)

        def cancelled(_result: object) -> None:
            self.context.show_status(f"Cancelling {run.id}…")
            self.refresh()

        def failed(message: str) -> None:
            self.context.show_status(f"Could not cancel {run.id}: {message}")
            self.cancel_button.setEnabled(True)

        self.context.agent.call("cancel", {"run": run.id}, cancelled, failed)
