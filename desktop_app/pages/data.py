"""The Data page: watched sources, their snapshots over time, what changed, and column drift."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
)

from desktop_app.charts import DriftChart, SnapshotHistoryChart, follow_palette
from desktop_app.context import AppContext
from desktop_app.pages import Page, heading
from desktop_app.queries import data as data_queries
from desktop_app.queries.data import ColumnDriftRow, DataSourceRow, SnapshotChange
from desktop_app.queries.formatting import format_size, format_time


class DataPage(Page):
    """Data sources and how they changed."""

    title = "Data"

    def __init__(self, context: AppContext) -> None:
        super().__init__(context)
        self.sources: list[DataSourceRow] = []
        self.source_list = QListWidget()
        self.source_list.setAccessibleName("Watched data")
        self.source_list.currentRowChanged.connect(self._source_changed)
        self.snapshots = QTableWidget(0, 4)
        self.snapshots.setHorizontalHeaderLabels(["Taken", "Files", "Size", "Fingerprint"])
        self.snapshots.verticalHeader().hide()
        self.snapshots.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.snapshots.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.snapshots.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.snapshots.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents
        )
        self.snapshots.setAccessibleName("Snapshots")
        self.snapshots.itemSelectionChanged.connect(self._snapshot_changed)
        self.changes = QTreeWidget()
        self.changes.setHeaderLabels(["What changed since the snapshot before"])
        self.changes.setAccessibleName("What changed")
        self.history_chart = SnapshotHistoryChart()
        self.drift_chart = DriftChart()
        self.drift_heading = heading("Column drift (latest alert)")
        self.drift_label = QLabel("No drift recorded.")
        self.drift_label.setWordWrap(True)

        grid = QGridLayout(self)
        grid.addWidget(heading("Watched data"), 0, 0)
        grid.addWidget(self.source_list, 1, 0)
        grid.addWidget(heading("Snapshots over time"), 0, 1)
        grid.addWidget(self.history_chart.widget, 1, 1)
        grid.addWidget(self.snapshots, 2, 0)
        grid.addWidget(self.changes, 2, 1)
        grid.addWidget(self.drift_heading, 3, 0, 1, 2)
        grid.addWidget(self.drift_label, 4, 0)
        grid.addWidget(self.drift_chart.widget, 4, 1)
        grid.setColumnStretch(1, 2)
        grid.setColumnStretch(0, 1)
        grid.setRowStretch(1, 3)
        grid.setRowStretch(2, 2)
        grid.setRowStretch(4, 3)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:  # the system switched light or dark
            for chart in (self.history_chart, self.drift_chart):
                follow_palette(chart.widget)
        super().changeEvent(event)

    def refresh(self) -> None:
        self.context.workers.submit(data_queries.data_sources, self.show_sources)
        self.context.workers.submit(data_queries.latest_drift, self.show_drift)

    def handle_event(self, kind: str, data: object) -> None:
        if kind in ("snapshot", "alert"):
            self.refresh()

    def show_sources(self, sources: list[DataSourceRow]) -> None:
        current = self.source_list.currentRow()
        self.sources = sources
        self.source_list.clear()
        for source in sources:
            item = QListWidgetItem(f"{source.path}\n{len(source.snapshots)} snapshots")
            item.setToolTip(f"{source.kind}: {source.path}")
            self.source_list.addItem(item)
        if not sources:
            self.source_list.addItem("No data watched yet: add a folder under Settings.")
        elif 0 <= current < len(sources):
            self.source_list.setCurrentRow(current)
        else:
            self.source_list.setCurrentRow(0)

    def _source_changed(self, row: int) -> None:
        if not 0 <= row < len(self.sources):
            return
        snapshots = self.sources[row].snapshots
        self.history_chart.set_snapshots(snapshots)
        self.snapshots.setRowCount(len(snapshots))
        for index, (snapshot_id, taken, files, size, fingerprint) in enumerate(reversed(snapshots)):
            values = (
                format_time(taken),
                str(files),
                format_size(size),
                fingerprint[:16],
            )
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setData(Qt.ItemDataRole.UserRole, snapshot_id)
                self.snapshots.setItem(index, column, item)
        if snapshots:
            self.snapshots.selectRow(0)

    def _snapshot_changed(self) -> None:
        rows = {index.row() for index in self.snapshots.selectedIndexes()}
        source_row = self.source_list.currentRow()
        if not rows or not 0 <= source_row < len(self.sources):
            return
        newest_first = list(reversed(self.sources[source_row].snapshots))
        row = min(rows)
        source = self.sources[source_row]
        selected = newest_first[row][0]
        if Path(source.path).exists():
            self.context.workers.submit(
                lambda connection: data_queries.drift_since_snapshot(
                    connection, selected, source.path
                ),
                lambda drift: self.show_drift(drift, since_snapshot=True),
                lambda message: self.drift_label.setText(f"Drift not computed: {message}"),
            )
        if row + 1 >= len(newest_first):
            self.show_change(None)
            return
        newer, older = newest_first[row][0], newest_first[row + 1][0]
        self.context.workers.submit(
            lambda connection: data_queries.snapshot_change(connection, older, newer),
            self.show_change,
        )

    def show_change(self, change: SnapshotChange | None) -> None:
        self.changes.clear()
        if change is None:
            self.changes.addTopLevelItem(QTreeWidgetItem(["The first snapshot of this source"]))
            return
        for label, paths in (
            ("Added", change.added),
            ("Removed", change.removed),
            ("Modified", change.modified),
        ):
            group = QTreeWidgetItem([f"{label} ({len(paths)})"])
            for path in paths[:500]:
                group.addChild(QTreeWidgetItem([path]))
            self.changes.addTopLevelItem(group)
            group.setExpanded(bool(paths) and len(paths) <= 20)

    def show_drift(
        self, drift: tuple[str, list[ColumnDriftRow]], *, since_snapshot: bool = False
    ) -> None:
        message, columns = drift
        self.drift_heading.setText(
            "Column drift: the data now against the selected snapshot"
            if since_snapshot
            else "Column drift (latest alert)"
        )
        self.drift_chart.set_columns(columns)
        if not columns:
            self.drift_label.setText(message or "No drift recorded.")
            return
        lines = [message, ""] + [
            f"{'⚠ ' if column.drifted else ''}{column.column}: {column.test} "
            f"{column.statistic:.3g} (threshold {column.threshold:g})"
            for column in columns
        ]
        self.drift_label.setText("\n".join(lines))
