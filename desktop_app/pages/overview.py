"""The Overview page: open alerts, stale models, running jobs and this week's coding time."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from desktop_app.context import AppContext
from desktop_app.pages import Page, heading
from desktop_app.queries.coding_time import overview_with_coding
from desktop_app.queries.formatting import format_minutes, format_time
from desktop_app.queries.overview import Overview


class OverviewPage(Page):
    """What needs attention now."""

    title = "Overview"
    overview_loaded = Signal(object)

    def __init__(self, context: AppContext) -> None:
        super().__init__(context)
        self.overview: Overview | None = None
        self.today_label = QLabel("Today: —")
        self.week_label = QLabel("This week: —")
        self.models_label = QLabel("Models: —")
        self.coding_note = QLabel("")
        self.coding_note.setWordWrap(True)
        self.coding_note.setEnabled(False)  # drawn in the palette's quieter text colour
        for label in (self.today_label, self.week_label, self.models_label):
            font = label.font()
            font.setPointSizeF(font.pointSizeF() * 1.3)
            label.setFont(font)

        self.alerts = QTreeWidget()
        self.alerts.setHeaderLabels(["When", "Kind", "Model", "Message"])
        self.alerts.setRootIsDecorated(False)
        self.alerts.setSelectionMode(QTreeWidget.SelectionMode.ExtendedSelection)
        self.alerts.setAccessibleName("Open alerts")
        self.ack_button = QPushButton("&Acknowledge")
        self.ack_button.setToolTip("Acknowledge the selected alerts (through the agent)")
        self.ack_button.clicked.connect(self.acknowledge_selected)

        self.stale = QTreeWidget()
        self.stale.setHeaderLabels(["Stale model", "Why"])
        self.stale.setAccessibleName("Stale models")

        self.running = QTreeWidget()
        self.running.setHeaderLabels(["Run", "Model", "Executor", "Elapsed", "Progress"])
        self.running.setRootIsDecorated(False)
        self.running.setAccessibleName("Running jobs")

        numbers = QHBoxLayout()
        for label in (self.today_label, self.week_label, self.models_label):
            numbers.addWidget(label)
        numbers.addStretch()

        alerts_header = QHBoxLayout()
        alerts_header.addWidget(heading("Open alerts"))
        alerts_header.addStretch()
        alerts_header.addWidget(self.ack_button)

        grid = QGridLayout()
        grid.addLayout(alerts_header, 0, 0, 1, 2)
        grid.addWidget(self.alerts, 1, 0, 1, 2)
        grid.addWidget(heading("Stale models"), 2, 0)
        grid.addWidget(heading("Running jobs"), 2, 1)
        grid.addWidget(self.stale, 3, 0)
        grid.addWidget(self.running, 3, 1)

        grid.setRowStretch(1, 2)
        grid.setRowStretch(3, 3)
        layout = QVBoxLayout(self)
        layout.addLayout(numbers)
        layout.addWidget(self.coding_note)
        layout.addLayout(grid)

        self.elapsed_timer = QTimer(self)
        self.elapsed_timer.setInterval(1000)
        self.elapsed_timer.timeout.connect(self._tick_elapsed)
        self.elapsed_timer.start()

    def refresh(self) -> None:
        self.context.workers.submit(overview_with_coding, self.show_overview)

    def handle_event(self, kind: str, data: object) -> None:
        if kind in ("alert", "verdicts", "run_state", "coding_time"):
            self.refresh()

    def show_overview(self, overview: Overview) -> None:
        """Fill the page from one overview query."""
        self.overview = overview
        self.show_coding_time(overview)
        self.models_label.setText(
            f"Models: {overview.model_count} ({overview.version_count:,} versions)"
        )
        self.alerts.clear()
        for alert in overview.alerts:
            item = QTreeWidgetItem(
                [
                    format_time(alert.created_at),
                    alert.kind,
                    alert.model,
                    alert.message,
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, alert.id)
            item.setToolTip(3, "\n".join(alert.reasons) or alert.message)
            self.alerts.addTopLevelItem(item)
        if not overview.alerts:
            self.alerts.addTopLevelItem(QTreeWidgetItem(["", "", "", "No open alerts"]))
        self.stale.clear()
        for verdict in overview.stale:  # the verdict, acknowledged alerts or not
            item = QTreeWidgetItem(
                [verdict.model, verdict.reasons[0] if verdict.reasons else "stale"]
            )
            item.setToolTip(0, f"{verdict.model} v{verdict.version} in {verdict.repo}")
            for reason in verdict.reasons[1:]:
                item.addChild(QTreeWidgetItem(["", reason]))
            self.stale.addTopLevelItem(item)
            item.setExpanded(True)
        for verdict in overview.never_trained:
            self.stale.addTopLevelItem(QTreeWidgetItem([verdict.model, "never trained"]))
        if not overview.stale and not overview.never_trained:
            text = "All models fresh" if overview.verdicts else "No models declared yet"
            self.stale.addTopLevelItem(QTreeWidgetItem([text, ""]))
        self.running.clear()
        for run in overview.running:
            item = QTreeWidgetItem([run.id, run.model, run.executor, run.elapsed, ""])
            self.running.addTopLevelItem(item)
            bar = QProgressBar()
            bar.setRange(0, 0)  # runs report no percentage: show activity
            bar.setMaximumHeight(14)
            bar.setAccessibleName(f"Run {run.id} in progress")
            self.running.setItemWidget(item, 4, bar)
        if not overview.running:
            self.running.addTopLevelItem(QTreeWidgetItem(["No runs in progress"]))
        for tree in (self.alerts, self.stale, self.running):
            tree.resizeColumnToContents(0)
        self.overview_loaded.emit(overview)

    def show_coding_time(self, overview: Overview) -> None:
        """Today's and this week's coding time as stored by the agent, and how current it is."""
        if overview.today_text == "today: not estimated yet":
            self.today_label.setText("Today: not estimated yet")
            self.week_label.setText("This week: —")
        else:
            provisional = " (provisional)" if overview.today_text.endswith("(provisional)") else ""
            self.today_label.setText(
                f"Today so far: {format_minutes(overview.today_minutes)}{provisional}"
            )
            self.week_label.setText(f"This week: {format_minutes(overview.week_minutes)}")
        note = f"Coding time: {overview.today_note}" if overview.today_note else ""
        self.coding_note.setText(note)
        for label in (self.today_label, self.week_label):
            label.setToolTip(note)

    def _tick_elapsed(self) -> None:
        if self.overview is None or not self.isVisible():
            return
        for index, run in enumerate(self.overview.running):
            item = self.running.topLevelItem(index)
            if item is not None:
                item.setText(3, run.elapsed)

    def selected_alert_ids(self) -> list[int]:
        ids = [item.data(0, Qt.ItemDataRole.UserRole) for item in self.alerts.selectedItems()]
        return [int(alert_id) for alert_id in ids if alert_id is not None]

    def acknowledge_selected(self) -> None:
        """Ask the agent to acknowledge the selected alerts, then re-read them."""
        ids = self.selected_alert_ids()
        if not ids:
            self.context.show_status("Select an alert to acknowledge.")
            return
        for alert_id in ids:
            self.context.agent.call(
                "ack_alert",
                {"id": alert_id},
                on_result=lambda _result: self.refresh(),
                on_error=lambda message: self.context.show_status(
                    f"Could not acknowledge: {message}"
                ),
            )
