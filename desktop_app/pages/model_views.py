"""The Models page's panels: artifacts with Save as…, the metric chart, learning curves, compare."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from agent.errors import WatchkeeperError
from desktop_app.context import AppContext
from desktop_app.queries import models as model_queries
from desktop_app.queries.formatting import format_size, format_time
from desktop_app.queries.models import VersionDetail

MAX_CURVES = 12  # the most selected versions whose learning curves are overlaid


def _bold(item: QTableWidgetItem) -> None:
    font = QFont(item.font())
    font.setBold(True)
    item.setFont(font)


class SortableItem(QTableWidgetItem):
    """A cell that sorts numbers as numbers and puts empty cells last."""

    def __init__(self, text: str, key: Any = None) -> None:
        super().__init__(text)
        self.key = key

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine = self.key if self.key is not None else self.text()
        theirs = getattr(other, "key", None)
        theirs = theirs if theirs is not None else other.text()
        if isinstance(mine, int | float) and isinstance(theirs, int | float):
            return mine < theirs
        return (isinstance(mine, str), str(mine)) < (isinstance(theirs, str), str(theirs))


def _cell(value: Any) -> SortableItem:
    if value is None:
        return SortableItem("—", "")
    if isinstance(value, bool):
        return SortableItem(str(value).lower(), int(value))
    if isinstance(value, float):
        return SortableItem(f"{value:.4g}", value)
    if isinstance(value, int):
        return SortableItem(str(value), value)
    return SortableItem(value if isinstance(value, str) else json.dumps(value), None)


def compare_fields(details: Sequence[VersionDetail]) -> list[tuple[str, list[str]]]:
    """Rows (field, one value per version) comparing any number of versions."""

    def flat(detail: VersionDetail) -> dict[str, str]:
        values = {
            "status": detail.status,
            "commit": detail.commit_sha[:12] + (" (dirty)" if detail.dirty else ""),
            "train command": detail.train_command,
            "executor": f"{detail.executor} {detail.host}".strip(),
            "started": format_time(detail.started_at),
        }
        values.update({f"param {k}": json.dumps(v) for k, v in detail.params.items()})
        values.update({f"metric {k}": str(v) for k, v in detail.metrics.items()})
        for dep, entry in detail.data.items():
            fingerprint = entry.get("fingerprint", "") if isinstance(entry, dict) else str(entry)
            values[f"data {dep}"] = str(fingerprint)[:16]
        values.update({f"code {k}": str(v)[:16] for k, v in detail.code.items()})
        values.update({f"artifact {k}": str(v)[:16] for k, v in detail.artifacts.items()})
        return values

    flats = [flat(detail) for detail in details]
    keys = list(dict.fromkeys(key for values in flats for key in values))
    return [(key, [values.get(key, "—") for values in flats]) for key in keys]


class CompareDialog(QDialog):
    """Any number of versions side by side.

    The first tab has one row per version with params and metrics as sortable columns; the
    params that differ between the versions are bold and marked ≠, as `models compare` prints
    them. The second tab lists every recorded field, rows that differ in bold.
    """

    def __init__(
        self, report: dict[str, Any], details: Sequence[VersionDetail], parent: QWidget
    ) -> None:
        super().__init__(parent)
        labels = [detail.label for detail in details]
        self.setWindowTitle("Compare " + ", ".join(labels[:6]) + ("…" if len(labels) > 6 else ""))
        self.report = report
        self.differing = set(report["differing_params"])
        self.columns_table = self._columns_table(report)
        rows = compare_fields(details)
        self.table = QTableWidget(len(rows), 1 + len(details))
        self.table.setHorizontalHeaderLabels(["", *labels])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.differences = 0
        for row, (key, values) in enumerate(rows):
            items = [QTableWidgetItem(key), *(QTableWidgetItem(value) for value in values)]
            if len(set(values)) > 1:
                self.differences += 1
                for item in items:
                    _bold(item)
            for column, item in enumerate(items):
                self.table.setItem(row, column, item)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.columns_table, "Params and metrics")
        self.tabs.addTab(self.table, "All fields")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        differing = ", ".join(sorted(self.differing)) or "none"
        layout.addWidget(
            QLabel(
                f"{len(details)} versions; params that differ: {differing}; "
                f"{self.differences} of {len(rows)} fields differ"
            )
        )
        layout.addWidget(self.tabs)
        layout.addWidget(buttons)
        self.resize(900, 560)

    def _columns_table(self, report: dict[str, Any]) -> QTableWidget:
        params, metrics = report["params"], report["metrics"]
        headings = ["version", "names", "status", *params, *metrics]
        table = QTableWidget(len(report["versions"]), len(headings))
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.verticalHeader().hide()
        for column, heading in enumerate(headings):
            is_param = 3 <= column < 3 + len(params)
            marked = is_param and heading in self.differing
            item = QTableWidgetItem(f"≠ {heading}" if marked else heading)
            item.setToolTip(
                ("param" if is_param else "metric" if column >= 3 else "")
                + f" {heading}"
                + (" (differs between the versions)" if marked else "")
            )
            if marked:
                _bold(item)
            table.setHorizontalHeaderItem(column, item)
        for row, entry in enumerate(report["versions"]):
            names = [
                *(["current"] if entry["current"] else []),
                *(["experiment"] if entry["experiment"] else []),
                *(f"@{alias}" for alias in entry["aliases"]),
            ]
            cells = [
                SortableItem(f"{entry['model']}@{entry['version']}", entry["version"]),
                SortableItem(" ".join(names)),
                SortableItem(entry["status"]),
                *(_cell(entry["params"].get(name)) for name in params),
                *(_cell(entry["metrics"].get(name)) for name in metrics),
            ]
            for column, cell in enumerate(cells):
                if 3 <= column < 3 + len(params) and params[column - 3] in self.differing:
                    _bold(cell)
                table.setItem(row, column, cell)
        table.setSortingEnabled(True)
        table.resizeColumnsToContents()
        return table


class ArtifactPanel(QWidget):
    """The selected version's artifacts with their sizes, and Save as… for one of them.

    Saving copies the file out of the content-addressed store through the code behind
    `watchkeeper models get`, checked against the digest the ledger recorded.
    """

    def __init__(self, context: AppContext) -> None:
        super().__init__()
        self.context = context
        self.detail: VersionDetail | None = None
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Artifact", "Size", "Digest"])
        self.table.setAccessibleName("Artifacts")
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.save_button = QPushButton("&Save as…")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.save_selected_as)
        self.table.itemSelectionChanged.connect(
            lambda: self.save_button.setEnabled(self.selected_artifact() is not None)
        )
        self.last_saved: Path | None = None
        buttons = QHBoxLayout()
        buttons.addStretch()
        buttons.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(buttons)

    def show_version(self, detail: VersionDetail) -> None:
        self.detail = detail
        artifacts = dict(detail.artifacts)
        root = self.context.paths.artifacts
        self.table.setRowCount(len(artifacts))
        for row, (path, digest) in enumerate(sorted(artifacts.items())):
            for column, text in enumerate((path, "…", str(digest)[:23])):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, path)
                self.table.setItem(row, column, item)
        if artifacts:
            self.table.selectRow(0)
        self.context.workers.submit(
            lambda _connection: artifact_sizes(root, artifacts),
            lambda sizes: self._sizes_arrived(detail, sizes),
            with_ledger=False,
        )

    def _sizes_arrived(self, detail: VersionDetail, sizes: dict[str, int | None]) -> None:
        if detail is not self.detail:
            return
        for row in range(self.table.rowCount()):
            name, size_cell = self.table.item(row, 0), self.table.item(row, 1)
            if name is None or size_cell is None:
                continue
            size = sizes.get(name.text())
            size_cell.setText("not on this machine" if size is None else format_size(size))

    def selected_artifact(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or self.detail is None:
            return None
        item = self.table.item(rows[0].row(), 0)
        return None if item is None else item.text()

    def save_selected_as(self) -> None:
        name = self.selected_artifact()
        if name is None:
            return
        target, _ = QFileDialog.getSaveFileName(
            self, f"Save {name} as", str(Path.home() / Path(name).name)
        )
        if target:
            self.save_as(name, Path(target))

    def save_as(self, name: str, target: Path, done: Callable[[str], None] | None = None) -> None:
        """Copy artifact `name` of the shown version to `target` (in a worker), checked against
        its digest; the status bar says how it went."""
        if self.detail is None or name not in self.detail.artifacts:
            return
        digest, label, root = (
            self.detail.artifacts[name],
            self.detail.label,
            self.context.paths.artifacts,
        )

        def copy(_connection: object) -> str:
            try:
                save_artifact(root, digest, target)
            except WatchkeeperError as error:
                return f"Could not save {name} of {label}: {error}"
            self.last_saved = target
            return f"Saved {name} of {label} to {target} (checked against {digest[:19]}…)."

        def report(message: str) -> None:
            self.context.show_status(message)
            if done is not None:
                done(message)

        self.context.workers.submit(copy, report, report, with_ledger=False)


def artifact_sizes(root: Path, artifacts: dict[str, str]) -> dict[str, int | None]:
    """The stored size of each artifact (None when the store lacks it)."""
    from agent.ledger.artifacts import ArtifactStore

    store = ArtifactStore(root)
    sizes: dict[str, int | None] = {}
    for path, digest in artifacts.items():
        try:
            sizes[path] = os.stat(store.path(str(digest))).st_size
        except (OSError, WatchkeeperError):
            sizes[path] = None
    return sizes


def save_artifact(root: Path, digest: str, target: Path) -> Path:
    """Copy one artifact out of the store to `target` as `models get` does (hash-checked,
    through a temporary file); an existing target is replaced (the save dialog asked)."""
    from agent.ledger.artifacts import ArtifactStore, export_artifacts

    written = export_artifacts(
        ArtifactStore(root), {target.name: digest}, target.parent, force=True
    )
    return written[0]


class MetricChartPanel(QWidget):
    """A chosen metric across every version of a model (experiments and promotions marked)."""

    def __init__(self, context: AppContext) -> None:
        from desktop_app.charts import MetricAcrossVersionsChart

        super().__init__()
        self.context = context
        self.model: model_queries.ModelChoice | None = None
        self.metric_box = QComboBox()
        self.metric_box.setAccessibleName("Metric to chart")
        self.metric_box.currentTextChanged.connect(self.reload)
        self.chart = MetricAcrossVersionsChart()
        top = QHBoxLayout()
        top.addWidget(QLabel("Metric"))
        top.addWidget(self.metric_box, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.chart.widget, 1)
        self.loaded_key: tuple[int, str] | None = None

    def show_model(self, model: model_queries.ModelChoice | None) -> None:
        if model is not None and self.model is not None and model.id == self.model.id:
            return
        self.model = model
        self.metric_box.blockSignals(True)
        current = self.metric_box.currentText()
        self.metric_box.clear()
        self.metric_box.addItems(model.metrics if model else [])
        if current in (model.metrics if model else []):
            self.metric_box.setCurrentText(current)
        self.metric_box.blockSignals(False)
        self.reload()

    def reload(self) -> None:
        if self.model is None or not self.metric_box.currentText():
            return
        model_id, metric = self.model.id, self.metric_box.currentText()
        self.context.workers.submit(
            lambda connection: model_queries.metric_series(connection, model_id, metric),
            lambda series: self._arrived((model_id, metric), series),
        )

    def _arrived(self, key: tuple[int, str], series: model_queries.MetricSeries) -> None:
        if self.model is None or key != (self.model.id, self.metric_box.currentText()):
            return
        self.chart.set_series(series)
        self.loaded_key = key


class LearningCurvesPanel(QWidget):
    """The step-metric curves of the selected versions overlaid; running ones grow live from
    the agent's `run_steps` events."""

    def __init__(self, context: AppContext) -> None:
        from desktop_app.charts import LearningCurvesChart

        super().__init__()
        self.context = context
        self.details: list[VersionDetail] = []
        self.metric_box = QComboBox()
        self.metric_box.setAccessibleName("Step metric")
        self.metric_box.currentTextChanged.connect(self._load_curves)
        self.chart = LearningCurvesChart()
        self.note = QLabel("")
        top = QHBoxLayout()
        top.addWidget(QLabel("Step metric"))
        top.addWidget(self.metric_box, 1)
        top.addWidget(self.note)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.chart.widget, 1)
        self.runs: dict[str, int] = {}  # run id -> version id, for the versions drawn
        self.loaded_ids: list[int] = []
        self._generation = 0

    def show_versions(self, details: Sequence[VersionDetail]) -> None:
        self.details = list(details)[:MAX_CURVES]
        self.runs = {detail.run_id: detail.id for detail in self.details if detail.run_id}
        ids = [detail.id for detail in self.details]
        self._generation += 1
        generation = self._generation
        self.context.workers.submit(
            lambda connection: model_queries.step_names(connection, ids),
            lambda names: self._names_arrived(generation, names),
        )

    def metric_names(self) -> list[str]:
        return [self.metric_box.itemText(i) for i in range(self.metric_box.count())]

    def _names_arrived(self, generation: int, names: list[str]) -> None:
        if generation != self._generation:
            return
        current = self.metric_box.currentText()
        self.metric_box.blockSignals(True)
        self.metric_box.clear()
        self.metric_box.addItems(names)
        if current in names:
            self.metric_box.setCurrentText(current)
        self.metric_box.blockSignals(False)
        self.note.setText(
            "" if names else "no step metrics recorded (runs write them to $WK_METRICS)"
        )
        self._load_curves()

    def _load_curves(self) -> None:
        metric = self.metric_box.currentText()
        details = list(self.details)
        ids = [detail.id for detail in details]
        self._generation += 1
        generation = self._generation
        if not metric:
            self.chart.set_curves({})
            self.loaded_ids = []  # `runs` stays: a running version's first points may come
            return
        self.context.workers.submit(
            lambda connection: model_queries.learning_curves(connection, ids, metric),
            lambda curves: self._curves_arrived(generation, details, curves),
        )

    def _curves_arrived(
        self, generation: int, details: list[VersionDetail], curves: dict[int, Any]
    ) -> None:
        if generation != self._generation:
            return
        self.chart.set_curves(
            {
                detail.id: (detail.label, curves[detail.id].steps, curves[detail.id].values)
                for detail in details
                if detail.id in curves
            }
        )
        self.loaded_ids = [detail.id for detail in details if detail.id in curves]
        points = sum(len(curves[i]) for i in self.loaded_ids)
        self.note.setText(f"{len(self.loaded_ids)} curves, {points:,} points")

    def add_points(self, data: dict[str, Any]) -> None:
        """Extend a drawn curve with a `run_steps` event's points (or re-read it from the
        ledger when the event left some out)."""
        import numpy as np

        version_id = self.runs.get(str(data.get("run")))
        metric = self.metric_box.currentText()
        points = (data.get("points") or {}).get(metric)
        if version_id is None:
            return
        if not metric or set(data.get("points") or {}) - set(self.metric_names()):
            self.show_versions(self.details)  # the run wrote a metric not listed yet
            return
        if not data.get("complete", True) or version_id not in self.loaded_ids:
            self._load_curves()
            return
        if not points:
            return
        values = [np.nan if value is None else value for value in points["values"]]
        self.chart.append(
            version_id, np.asarray(points["steps"], dtype=float), np.asarray(values, dtype=float)
        )
