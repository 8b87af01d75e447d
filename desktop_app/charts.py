"""pyqtgraph charts for the Data and Coding time pages, drawn in the system palette's colours.

pyqtgraph takes numpy arrays straight to the painter (with clip-to-view and downsampling), so a
year of days or thousands of events draw in milliseconds; QtCharts needs a QPointF per point
built from Python, which is an order of magnitude slower at that size. pyqtgraph is imported
only when a chart page is first opened, so it does not delay the window's first paint.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

if TYPE_CHECKING:  # the chart modules' imports stay light: pyqtgraph only
    from desktop_app.queries.coding_time import CodingTimeDays
    from desktop_app.queries.data import ColumnDriftRow
    from desktop_app.queries.models import MetricSeries

pg.setConfigOptions(exitCleanup=False)

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SERIES_COLORS = ("#3b82f6", "#f59e0b", "#10b981")
DRIFTED_COLOR = "#ef4444"
KEPT_COLOR = "#10b981"


def _palette_colors() -> tuple[QColor, QColor]:
    palette = QApplication.palette()
    return palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text)


def _plot_widget(title: str = "", axis_items: dict | None = None) -> pg.PlotWidget:
    widget = pg.PlotWidget(axisItems=axis_items or {})
    item = widget.getPlotItem()
    item.showGrid(x=False, y=True, alpha=0.2)
    widget.setMenuEnabled(False)
    widget.setProperty("chart_title", title)
    follow_palette(widget)
    return widget


def follow_palette(widget: pg.PlotWidget) -> None:
    """Colour a chart's background, axes and title from the current application palette."""
    background, foreground = _palette_colors()
    widget.setBackground(background)
    item = widget.getPlotItem()
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        axis.setPen(pg.mkPen(foreground))
        axis.setTextPen(pg.mkPen(foreground))
    title = widget.property("chart_title")
    if title:
        item.setTitle(title, color=foreground.name())


class DailyCodingChart:
    """Coding minutes per day: the HMM estimate against the git-hours and timeout baselines."""

    def __init__(self) -> None:
        self.widget = _plot_widget(
            "Minutes per day", {"bottom": pg.DateAxisItem(orientation="bottom")}
        )
        item = self.widget.getPlotItem()
        item.addLegend(offset=(10, 10))
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        self.curves = [
            item.plot([], [], pen=pg.mkPen(color, width=2 if index == 0 else 1), name=name)
            for index, (color, name) in enumerate(
                zip(SERIES_COLORS, ("HMM estimate", "git-hours", "15-min timeout"), strict=True)
            )
        ]

    def set_days(self, days: CodingTimeDays) -> None:
        x = np.array(
            [datetime.fromisoformat(day).timestamp() + 43_200 for day in days.dates], dtype=float
        )
        for curve, values in zip(
            self.curves, (days.coding, days.git_hours, days.timeout), strict=True
        ):
            curve.setData(x, np.asarray(values, dtype=float))
            curve.setSymbol("o" if len(x) == 1 else None)  # one day is a point, not a line
        if len(x):
            self.widget.getPlotItem().enableAutoRange()


class HeatmapChart:
    """A weekday × hour grid of minutes (or events), darker where there is more."""

    def __init__(self, title: str) -> None:
        self.widget = _plot_widget(title)
        item = self.widget.getPlotItem()
        item.showGrid(x=False, y=False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get("viridis"))
        item.addItem(self.image)
        item.invertY(True)
        item.getAxis("left").setTicks([[(i + 0.5, day) for i, day in enumerate(WEEKDAYS)]])
        item.getAxis("bottom").setTicks([[(h + 0.5, f"{h:02d}") for h in range(0, 24, 3)]])
        item.setMouseEnabled(False, False)
        item.setRange(xRange=(0, 24), yRange=(0, 7), padding=0)

    def set_grid(self, grid: np.ndarray) -> None:
        """grid has shape (7, 24): weekday rows Monday first, hour columns."""
        top = float(grid.max()) if grid.size else 0.0
        self.image.setImage(np.asarray(grid, dtype=float), levels=(0.0, max(top, 1e-9)))


class SessionTimeline:
    """The sessions of one day as bars over the hours, with the day's events as ticks."""

    def __init__(self) -> None:
        self.widget = _plot_widget("Sessions of the day")
        item = self.widget.getPlotItem()
        item.setMouseEnabled(False, False)
        item.getAxis("left").setTicks([[(0.5, "sessions"), (1.5, "events")]])
        item.getAxis("bottom").setTicks([[(h, f"{h:02d}:00") for h in range(0, 25, 3)]])
        item.setRange(xRange=(0, 24), yRange=(0, 2), padding=0.02)
        self.bars = pg.BarGraphItem(x0=[], width=[], y0=0.1, height=0.8, brush=SERIES_COLORS[0])
        self.ticks = pg.ScatterPlotItem(symbol="|", size=14, pen=pg.mkPen(SERIES_COLORS[1]))
        item.addItem(self.bars)
        item.addItem(self.ticks)

    def set_day(self, sessions: Sequence[tuple[float, float]], events: Sequence[float]) -> None:
        """sessions as (start hour, end hour); events as hours of the day (floats)."""
        starts = np.array([start for start, _ in sessions], dtype=float)
        widths = np.array([max(end - start, 0.05) for start, end in sessions], dtype=float)
        self.bars.setOpts(x0=starts, width=widths, y0=0.1, height=0.8)
        self.ticks.setData(x=np.asarray(events, dtype=float), y=np.full(len(events), 1.5))


class DriftChart:
    """Per-column drift statistics as bars, red where the column drifted, with thresholds."""

    def __init__(self) -> None:
        self.widget = _plot_widget("Drift per column")
        self.widget.getPlotItem().setMouseEnabled(False, False)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.6)
        self.thresholds = pg.ScatterPlotItem(symbol="_", size=30, pen=pg.mkPen("#888", width=2))
        self.widget.getPlotItem().addItem(self.bars)
        self.widget.getPlotItem().addItem(self.thresholds)

    def set_columns(self, columns: Sequence[ColumnDriftRow]) -> None:
        x = np.arange(len(columns), dtype=float)
        heights = np.array([column.statistic for column in columns], dtype=float)
        brushes = [DRIFTED_COLOR if column.drifted else KEPT_COLOR for column in columns]
        self.bars.setOpts(x=x, height=heights, width=0.6, brushes=brushes)
        self.thresholds.setData(x=x, y=[column.threshold for column in columns])
        self.widget.getPlotItem().getAxis("bottom").setTicks(
            [[(float(i), column.column) for i, column in enumerate(columns)]]
        )
        if len(columns):
            self.widget.getPlotItem().setRange(xRange=(-0.5, len(columns) - 0.5))


class SnapshotHistoryChart:
    """Files and size of one data source over its snapshots."""

    def __init__(self) -> None:
        self.widget = _plot_widget("Snapshots", {"bottom": pg.DateAxisItem(orientation="bottom")})
        item = self.widget.getPlotItem()
        item.addLegend(offset=(10, 10))
        self.files = item.plot(
            [],
            [],
            pen=pg.mkPen(SERIES_COLORS[0], width=2),
            name="files",
            stepMode=None,
            symbol="o",
            symbolSize=5,
        )
        self.megabytes = item.plot(
            [], [], pen=pg.mkPen(SERIES_COLORS[1], width=2), name="MiB", symbol="s", symbolSize=5
        )

    def set_snapshots(self, snapshots: Sequence[tuple[int, float, int, int, str]]) -> None:
        times = np.array([snapshot[1] for snapshot in snapshots], dtype=float)
        self.files.setData(times, np.array([s[2] for s in snapshots], dtype=float))
        self.megabytes.setData(times, np.array([s[3] / 2**20 for s in snapshots], dtype=float))
        if len(times):
            self.widget.getPlotItem().enableAutoRange()


REPO_COLORS = ("#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#ec4899", "#14b8a6")


class RepoStackChart:
    """Coding minutes per day stacked by repo (the largest repos in colour, the rest grey)."""

    def __init__(self, max_repos: int = len(REPO_COLORS)) -> None:
        self.widget = _plot_widget(
            "Coding minutes per day, by repo", {"bottom": pg.DateAxisItem(orientation="bottom")}
        )
        self.max_repos = max_repos
        self.legend = self.widget.getPlotItem().addLegend(offset=(10, 10))
        self.bars: list[pg.BarGraphItem] = []
        self.names: list[str] = []

    def set_days(self, dates: Sequence[str], repos: Sequence[str], minutes: np.ndarray) -> None:
        """minutes has shape (days, repos), repos already in the order to stack them."""
        item = self.widget.getPlotItem()
        for bar in self.bars:
            item.removeItem(bar)
        self.legend.clear()
        self.bars = []
        x = np.array(
            [datetime.fromisoformat(day).timestamp() + 43_200 for day in dates], dtype=float
        )
        values = np.asarray(minutes, dtype=float).reshape(len(dates), len(repos))
        shown = list(repos[: self.max_repos])
        layers = [values[:, i] for i in range(len(shown))]
        if len(repos) > len(shown):
            shown.append(f"{len(repos) - len(shown)} more")
            layers.append(values[:, len(layers) :].sum(axis=1))
        bottom = np.zeros(len(dates))
        for index, (name, layer) in enumerate(zip(shown, layers, strict=True)):
            color = REPO_COLORS[index] if index < len(REPO_COLORS) else "#9ca3af"
            bar = pg.BarGraphItem(x=x, height=layer, y0=bottom, width=86_400 * 0.8, brush=color)
            item.addItem(bar)
            self.legend.addItem(bar, name)
            self.bars.append(bar)
            bottom = bottom + layer
        self.names = shown
        if len(x):
            item.setXRange(float(x.min()) - 86_400, float(x.max()) + 86_400)
            item.setYRange(0, max(float(bottom.max()), 1.0) * 1.1)


EXPERIMENT_COLOR = "#f59e0b"
PROMOTED_COLOR = "#10b981"
CURRENT_COLOR = "#ef4444"


class MetricAcrossVersionsChart:
    """One metric over a model's versions: a line through every version, experiments and
    promoted versions marked with their own symbols, the current version ringed."""

    def __init__(self) -> None:
        self.widget = _plot_widget("Metric across versions")
        item = self.widget.getPlotItem()
        item.setLabel("bottom", "version")
        item.addLegend(offset=(10, 10))
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        self.line = item.plot([], [], pen=pg.mkPen(SERIES_COLORS[0], width=1), name="versions")
        self.experiments = pg.ScatterPlotItem(
            symbol="t", size=8, pen=None, brush=EXPERIMENT_COLOR, name="experiments"
        )
        self.promoted = pg.ScatterPlotItem(
            symbol="s", size=9, pen=None, brush=PROMOTED_COLOR, name="promoted"
        )
        self.current = pg.ScatterPlotItem(
            symbol="o", size=14, pen=pg.mkPen(CURRENT_COLOR, width=2), brush=None, name="current"
        )
        for scatter in (self.experiments, self.promoted, self.current):
            item.addItem(scatter)
        self.series: MetricSeries | None = None

    def set_series(self, series: MetricSeries) -> None:
        self.series = series
        x, y = series.versions, series.values
        self.line.setData(x, y)
        self.line.setSymbol("o" if len(x) == 1 else None)
        self.experiments.setData(x=x[series.experiment], y=y[series.experiment])
        self.promoted.setData(x=x[series.promoted], y=y[series.promoted])
        at_current = x == series.current if series.current is not None else np.zeros(len(x), bool)
        self.current.setData(x=x[at_current], y=y[at_current])
        self.widget.getPlotItem().setTitle(
            f"{series.metric} across {len(x):,} versions of {series.model}",
            color=_palette_colors()[1].name(),
        )
        if len(x):
            self.widget.getPlotItem().enableAutoRange()


class LearningCurvesChart:
    """The step metric of several versions overlaid, one colour each; a running version's curve
    grows as its points arrive."""

    def __init__(self) -> None:
        self.widget = _plot_widget("Learning curves")
        item = self.widget.getPlotItem()
        item.setLabel("bottom", "step")
        self.legend = item.addLegend(offset=(10, 10))
        # A million points draw as a few thousand: only the visible range, reduced to its peaks.
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        self.curves: dict[int, pg.PlotDataItem] = {}
        self.points: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def set_curves(self, curves: dict[int, tuple[str, np.ndarray, np.ndarray]]) -> None:
        """version id -> (label, steps, values); replaces what is drawn."""
        item = self.widget.getPlotItem()
        for curve in self.curves.values():
            item.removeItem(curve)
        self.legend.clear()
        self.curves, self.points = {}, {}
        for index, (version_id, (label, steps, values)) in enumerate(curves.items()):
            color = REPO_COLORS[index % len(REPO_COLORS)]
            curve = item.plot(steps, values, pen=pg.mkPen(color, width=2), name=label)
            self.curves[version_id] = curve
            self.points[version_id] = (steps, values)
        if curves:
            item.enableAutoRange()

    def append(self, version_id: int, steps: np.ndarray, values: np.ndarray) -> None:
        """Add the newest points of a running version (its curve must be shown); points at or
        before the last step drawn are already there (steps of a run only grow)."""
        curve = self.curves.get(version_id)
        if curve is None or not len(steps):
            return
        old_steps, old_values = self.points[version_id]
        if len(old_steps):  # points the ledger already gave when the curve was read
            newer = steps > old_steps[-1]
            steps, values = steps[newer], values[newer]
        joined = np.concatenate([old_steps, steps]), np.concatenate([old_values, values])
        self.points[version_id] = joined
        curve.setData(*joined)
