"""Desktop app speed on a 100,000-version ledger with a year of coding time.

Usage: .venv/bin/python benchmarks/bench_app.py [--ledger PATH] [--repeat 3] [--scroll-rows 20000]

Each measurement runs in a fresh subprocess (offscreen Qt unless DISPLAY is set and --xcb given):
- first paint: from just before the subprocess is spawned to the window's first Paint event, so
  interpreter start, imports and the first ledger queries all count. Peer: a bare PySide6
  QMainWindow with one label (the floor every PySide6 app pays).
- Models table open: from the click on "Models" until the first rows' values are on screen,
  once after the app has settled for a second (the app reads the Models page in the
  background after its first paint) and once clicked at the very first paint ("cold").
  Peer: Qt's own lazy SQL model (QSqlQueryModel, which fetches 256 rows at a time on the GUI
  thread) over the same join, in a QTableView of the same size.
- scrolling: the view scrolled down --scroll-rows rows, 40 rows per frame, each frame =
  the scroll + one pass of the event loop that paints it; the longest frame is what a user
  feels.
- Models page charts, on a second ledger of one model with 10,000 versions whose newest
  succeeded version has a learning curve of 1,000,000 points per metric:
  - metric chart: from choosing the metric until the chart over all 10,000 versions is painted
    (the ledger read in a worker included). Peer: a bare pyqtgraph PlotWidget given the same
    two arrays, already in memory, and painted.
  - learning curve: from asking for the version's curve until its 1,000,000 points are painted
    (the ledger read included). Peer: a bare pyqtgraph PlotWidget (default options) given the
    same arrays, already in memory, and painted.
Targets: first paint <= 1.5 s, Models open <= 0.5 s, no frame > 50 ms, metric chart <= 0.3 s,
learning curve <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

ROWS_PER_FRAME = 40
PEER_SQL = (
    "SELECT m.name, mv.version, mv.status, substr(mv.commit_sha, 1, 10), mv.dirty, mv.metrics,"
    " mv.executor, mv.host, datetime(mv.started_at, 'unixepoch', 'localtime'),"
    " mv.ended_at - mv.started_at FROM model_versions mv JOIN models m ON m.id = mv.model_id"
    " ORDER BY mv.id DESC"
)


# ---------------------------------------------------------------------------- child processes


def _emit(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def _scroll(app: Any, view: Any, rows: int) -> tuple[list[float], list[float]]:
    """Scroll `rows` rows down, ROWS_PER_FRAME per frame; return each frame's wall seconds and
    the CPU seconds all the process's threads used in it (wall minus CPU is time spent waiting
    for a core that other processes held).

    A frame is the scroll plus one pass of the event loop, in which Qt paints the new position
    and handles whatever else is queued (results of ledger queries). A pass that did not paint
    the table is completed with a synchronous repaint, so every frame includes its paint.
    """
    from PySide6.QtCore import QEvent, QObject

    paints = [0]

    class PaintCounter(QObject):
        def eventFilter(self, watched: QObject, event: QEvent) -> bool:
            if event.type() == QEvent.Type.Paint:
                paints[0] += 1
            return False

    counter = PaintCounter()
    view.viewport().installEventFilter(counter)
    bar = view.verticalScrollBar()
    per_pixel = view.verticalScrollMode() == view.ScrollMode.ScrollPerPixel
    step = ROWS_PER_FRAME * (view.verticalHeader().defaultSectionSize() if per_pixel else 1)
    frames = []
    cpu = []
    for _ in range(rows // ROWS_PER_FRAME):
        before = paints[0]
        started = time.perf_counter()
        cpu_started = time.process_time()
        bar.setValue(bar.value() + step)
        app.processEvents()
        if paints[0] == before:
            view.viewport().repaint()
        frames.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    view.viewport().removeEventFilter(counter)
    return frames, cpu


def child_ours(scroll_rows: int, *, cold: bool = False) -> None:
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QApplication

    from agent.paths import WatchkeeperPaths
    from desktop_app.app import WatchkeeperApp

    qt_app = QApplication([])
    app = WatchkeeperApp(WatchkeeperPaths.from_environment(), use_tray=False)
    app.tune_gc = True  # as `watchkeeper app` runs it
    painted: list[float] = []

    class FirstPaint(QObject):
        def eventFilter(self, watched: QObject, event: QEvent) -> bool:
            if event.type() == QEvent.Type.Paint and not painted:
                painted.append(time.time())
            return False

    paint_filter = FirstPaint()
    app.window.installEventFilter(paint_filter)
    app.start()
    while not painted:
        qt_app.processEvents()
    first_paint_at = painted[0]
    if not cold:
        started = time.perf_counter()
        while time.perf_counter() - started < 1.0:  # let the app settle, as a user would
            qt_app.processEvents()
            time.sleep(0.005)
        app.workers.wait_idle(30)

    started = time.perf_counter()
    page = app.window.show_page("Models")
    model = page.table_model
    while not (model.rowCount() and model.row_values(0) is not None):
        qt_app.processEvents()
        time.sleep(0.001)
    page.table.viewport().repaint()
    open_seconds = time.perf_counter() - started

    frames, cpu = _scroll(qt_app, page.table, scroll_rows)
    rows_seen = page.table.rowAt(page.table.viewport().height() - 1)
    app.workers.wait_idle(30)
    _emit(
        {
            "first_paint_at": first_paint_at,
            "open": open_seconds,
            "frames": frames,
            "cpu": cpu,
            "bottom_row": rows_seen,
            "total": model.total,
        }
    )
    app.shutdown()


def child_charts() -> None:
    """The Models page's metric chart and learning curve against bare pyqtgraph plots."""
    import pyqtgraph as pg
    from PySide6.QtWidgets import QApplication

    from agent.paths import WatchkeeperPaths
    from desktop_app.app import WatchkeeperApp

    qt_app = QApplication([])
    app = WatchkeeperApp(WatchkeeperPaths.from_environment(), use_tray=False)
    app.start()
    app.window.show()
    page = app.window.show_page("Models")
    app.workers.wait_idle(60)
    page.choose_model(page.model_box.itemText(1))
    app.workers.wait_idle(60)
    total = page.table_model.total

    def wait(condition: Any) -> None:
        while not condition():
            qt_app.processEvents()
            time.sleep(0.0005)

    panel = page.show_tab("Metric chart")
    app.workers.wait_idle(60)
    chart_times = []
    for metric in ("loss", "accuracy", "loss", "accuracy"):
        started = time.perf_counter()
        panel.metric_box.setCurrentText(metric)
        wait(lambda m=metric: panel.loaded_key is not None and panel.loaded_key[1] == m)
        panel.chart.widget.viewport().repaint()
        chart_times.append(time.perf_counter() - started)
    series = panel.chart.series
    assert series is not None and len(series.versions) >= 10_000

    from desktop_app.queries.connection import connect_readonly
    from desktop_app.queries.models import learning_curves

    connection = connect_readonly(app.context.paths.ledger)
    big = connection.execute(
        "SELECT version_id FROM step_metrics GROUP BY version_id ORDER BY sum(points) DESC LIMIT 1"
    ).fetchone()[0]
    from desktop_app.queries.models import version_detail

    detail = version_detail(connection, big)
    curves = page.show_tab("Learning curves")
    curve_times = []
    for _ in range(3):
        curves.details = [detail]
        curves.loaded_ids = []
        started = time.perf_counter()
        curves.metric_box.blockSignals(True)
        curves.metric_box.clear()
        curves.metric_box.addItems(["accuracy", "loss"])
        curves.metric_box.setCurrentText("loss")
        curves.metric_box.blockSignals(False)
        curves._load_curves()
        wait(lambda: curves.loaded_ids == [big])
        curves.chart.widget.viewport().repaint()
        curve_times.append(time.perf_counter() - started)
    points = len(curves.chart.points[big][0])

    loaded = learning_curves(connection, [big], "loss")[big]
    steps, values = loaded.steps, loaded.values
    peer_chart_times: list[float] = []
    peer_curve_times: list[float] = []
    for arrays, times in (
        ((series.versions, series.values), peer_chart_times),
        ((steps, values), peer_curve_times),
    ):
        for _ in range(3):
            widget = pg.PlotWidget()
            widget.resize(460, 500)
            widget.show()
            qt_app.processEvents()
            started = time.perf_counter()
            widget.plot(*arrays)
            widget.viewport().repaint()
            times.append(time.perf_counter() - started)
            widget.close()
    _emit(
        {
            "versions": total,
            "chart_points": len(series.versions),
            "curve_points": points,
            "chart": statistics.median(chart_times),
            "peer_chart": statistics.median(peer_chart_times),
            "curve": statistics.median(curve_times),
            "peer_curve": statistics.median(peer_curve_times),
        }
    )
    app.shutdown()
    os._exit(0)


def child_peer(scroll_rows: int, ledger: str) -> None:
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtSql import QSqlDatabase, QSqlQuery, QSqlQueryModel
    from PySide6.QtWidgets import QApplication, QHeaderView, QLabel, QMainWindow, QTableView

    qt_app = QApplication([])
    window = QMainWindow()
    window.setCentralWidget(QLabel("Watchkeeper"))
    window.resize(1200, 780)
    painted: list[float] = []

    class FirstPaint(QObject):
        def eventFilter(self, watched: QObject, event: QEvent) -> bool:
            if event.type() == QEvent.Type.Paint and not painted:
                painted.append(time.time())
            return False

    paint_filter = FirstPaint()
    window.installEventFilter(paint_filter)
    window.show()
    while not painted:
        qt_app.processEvents()

    database = QSqlDatabase.addDatabase("QSQLITE")
    database.setDatabaseName(ledger)
    database.setConnectOptions("QSQLITE_OPEN_READONLY")
    database.open()
    started = time.perf_counter()
    view = QTableView()
    view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 8)
    model = QSqlQueryModel()
    model.setQuery(QSqlQuery(PEER_SQL, database))
    view.setModel(model)
    window.setCentralWidget(view)
    qt_app.processEvents()
    view.viewport().repaint()
    open_seconds = time.perf_counter() - started
    frames, cpu = _scroll(qt_app, view, scroll_rows)
    _emit(
        {
            "first_paint_at": painted[0],
            "open": open_seconds,
            "frames": frames,
            "cpu": cpu,
            "bottom_row": view.rowAt(view.viewport().height() - 1),
            "total": model.rowCount(),
        }
    )
    os._exit(0)


# ---------------------------------------------------------------------------- parent


def run_child(kind: str, home: Path, ledger: Path, scroll_rows: int, xcb: bool) -> dict[str, Any]:
    environment = {**os.environ, "WATCHKEEPER_HOME": str(home)}
    if not xcb:
        environment["QT_QPA_PLATFORM"] = "offscreen"
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--ledger",
        str(ledger),
        "--scroll-rows",
        str(scroll_rows),
    ]
    spawned_at = time.time()
    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"{kind} child failed:\n{result.stderr}")
    report: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    report["first_paint"] = report.pop("first_paint_at") - spawned_at
    frames = report.pop("frames")
    cpu = report.pop("cpu")
    report["max_frame"] = max(frames)
    report["max_frame_cpu"] = max(cpu)
    report["slow_frames"] = sum(frame > 0.05 for frame in frames)
    report["p95_frame"] = statistics.quantiles(frames, n=20)[-1]
    report["n_frames"] = len(frames)
    return report


def run_charts(xcb: bool) -> dict[str, Any]:
    """The Models charts on a 10,000-version model with a 1,000,000-point curve; prints them."""
    from benchmarks.make_app_fixture import build_fixture

    with tempfile.TemporaryDirectory(prefix="wk-bench-charts-") as folder:
        home = Path(folder)
        ledger = home / "ledger.db"
        started = time.perf_counter()
        # 12,000 versions, of which a little over 10,000 succeeded and recorded metrics.
        build_fixture(ledger, versions=12_000, days=7, model_count=1, step_points=1_000_000)
        print(
            f"fixture: 1 model, 12,000 versions, a 1,000,000-point curve, "
            f"{time.perf_counter() - started:.1f} s"
        )
        environment = {**os.environ, "WATCHKEEPER_HOME": str(home)}
        if not xcb:
            environment["QT_QPA_PLATFORM"] = "offscreen"
        result = subprocess.run(
            [sys.executable, __file__, "--child", "charts", "--ledger", str(ledger)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO_ROOT,
        )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"charts child failed:\n{result.stderr}")
    report: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    print(
        f"Models charts: {report['chart_points']:,} versions charted, "
        f"{report['curve_points']:,} curve points; median of several draws"
    )
    print(f"{'':28}{'watchkeeper':>14}{'peer':>12}{'ratio':>9}   target")
    for label, key, target in (
        ("metric chart (s)", "chart", "<= 0.3"),
        ("learning curve (s)", "curve", "<= 1"),
    ):
        ours, peer = report[key], report[f"peer_{key}"]
        print(
            f"{label:28}{ours:14.3f}{peer:12.3f}{ours / peer:9.2f}   {target}"
            "  (peer: bare pyqtgraph plot of the same arrays, already loaded)"
        )
    return report


def summarise(reports: list[dict[str, Any]]) -> dict[str, float]:
    return {
        key: statistics.median(report[key] for report in reports)
        for key in ("first_paint", "open", "max_frame", "p95_frame", "max_frame_cpu", "slow_frames")
    } | {"worst_frame": max(report["max_frame"] for report in reports)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", type=Path, help="a fixture ledger (made when absent)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scroll-rows", type=int, default=20_000)
    parser.add_argument("--xcb", action="store_true", help="use the real display ($DISPLAY)")
    parser.add_argument("--charts-only", action="store_true", help="only the Models charts")
    parser.add_argument(
        "--child", choices=("ours", "cold", "peer", "charts"), help=argparse.SUPPRESS
    )
    arguments = parser.parse_args()
    if arguments.child == "charts":
        child_charts()
        return
    if arguments.child in ("ours", "cold"):
        child_ours(arguments.scroll_rows, cold=arguments.child == "cold")
        return
    if arguments.child == "peer":
        child_peer(arguments.scroll_rows, str(arguments.ledger))
        return

    from benchmarks.make_app_fixture import build_fixture

    charts = run_charts(arguments.xcb)
    if arguments.charts_only:
        return

    with tempfile.TemporaryDirectory(prefix="wk-bench-app-") as folder:
        home = Path(folder)
        ledger = home / "ledger.db"
        if arguments.ledger:
            ledger.symlink_to(arguments.ledger.resolve())
        else:
            started = time.perf_counter()
            build_fixture(ledger, versions=100_000, days=365)
            print(f"fixture: 100,000 versions, 365 days, {time.perf_counter() - started:.1f} s")
        ours = [
            run_child("ours", home, ledger, arguments.scroll_rows, arguments.xcb)
            for _ in range(arguments.repeat)
        ]
        cold = [
            run_child("cold", home, ledger, 400, arguments.xcb) for _ in range(arguments.repeat)
        ]
        peer = [
            run_child("peer", home, ledger, arguments.scroll_rows, arguments.xcb)
            for _ in range(arguments.repeat)
        ]
    mine, theirs = summarise(ours), summarise(peer)
    mine["open_cold"] = statistics.median(report["open"] for report in cold)
    theirs["open_cold"] = theirs["open"]
    print(
        f"ledger: {ours[0]['total']:,} model versions; scrolled {arguments.scroll_rows:,} rows"
        f" in {ours[0]['n_frames']} frames; median of {arguments.repeat} runs each"
    )
    print(f"{'':28}{'watchkeeper':>14}{'peer':>12}{'ratio':>9}   target")
    rows = (
        ("first paint (s)", "first_paint", "bare PySide6 window", "<= 1.5"),
        ("Models open, settled (s)", "open", "QSqlQueryModel", "<= 0.5"),
        ("Models open at 1st paint (s)", "open_cold", "QSqlQueryModel", "<= 0.5"),
        ("longest scroll frame (ms)", "max_frame", "QSqlQueryModel", "<= 50"),
        ("p95 scroll frame (ms)", "p95_frame", "QSqlQueryModel", ""),
        ("worst frame, all runs (ms)", "worst_frame", "QSqlQueryModel", "<= 50"),
        ("longest frame, CPU (ms)", "max_frame_cpu", "QSqlQueryModel", ""),
        ("frames over 50 ms (count)", "slow_frames", "QSqlQueryModel", "0"),
    )
    for label, key, peer_name, target in rows:
        scale = 1000 if key.endswith(("_frame", "_frame_cpu")) else 1
        a, b = mine[key] * scale, theirs[key] * scale
        ratio = f"{a / b:9.2f}" if b else f"{'-':>9}"
        print(f"{label:28}{a:14.3f}{b:12.3f}{ratio}   {target}  (peer: {peer_name})")
    verdict = (
        mine["first_paint"] <= 1.5
        and max(mine["open"], mine["open_cold"]) <= 0.5
        and mine["worst_frame"] <= 0.05
        and charts["chart"] <= 0.3
        and charts["curve"] <= 1.0
    )
    print("targets met" if verdict else "TARGETS MISSED")


if __name__ == "__main__":
    main()
