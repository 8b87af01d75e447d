"""Render every page of the window (and the tray icons) to PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QCoreApplication
from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import QApplication

from desktop_app.main_window import PAGES, MainWindow
from desktop_app.tray import TRAY_STATES, state_icon
from desktop_app.workers import LedgerWorkers

SCREENSHOT_SIZE = (1280, 800)


class ShownApp(Protocol):
    """What rendering needs of the app: its window and its ledger workers."""

    window: MainWindow
    workers: LedgerWorkers


def _settle(app: ShownApp) -> None:
    for _ in range(3):  # results may trigger follow-up queries (a window of rows, a diff)
        app.workers.wait_idle(20.0)
        for _ in range(5):
            QCoreApplication.processEvents()


def render_all(app: ShownApp, folder: Path) -> list[Path]:
    """Show each page with its data loaded and save it as NN-title.png; return the files."""
    folder.mkdir(parents=True, exist_ok=True)
    window = app.window
    window.resize(*SCREENSHOT_SIZE)
    window.show()
    window.set_agent_connected(True)  # no banner: the pictures show the pages
    written: list[Path] = []
    for number, (title, _) in enumerate(PAGES, start=1):
        window.show_page(title)
        _settle(app)
        window.show_status("")
        path = folder / f"{number:02d}-{title.lower().replace(' ', '-')}.png"
        window.grab().save(str(path))
        written.append(path)
    written += render_models_views(app, folder)
    written.append(render_tray_icons(folder / "tray-icons.png"))
    window.hide()
    return written


def render_tray_icons(path: Path, size: int = 48) -> Path:
    """The tray icon in each state side by side."""
    gap = size // 3
    sheet = QPixmap(len(TRAY_STATES) * (size + gap) + gap, size + 2 * gap)
    sheet.fill(
        QApplication.palette().window().color() if QApplication.instance() else QColor("white")
    )
    painter = QPainter(sheet)
    for index, state in enumerate(TRAY_STATES):
        pixmap = state_icon(state).pixmap(size, size)
        painter.drawPixmap(gap + index * (size + gap), gap, pixmap)
    painter.end()
    sheet.save(str(path))
    return path


def render_models_views(app: ShownApp, folder: Path) -> list[Path]:
    """The Models page with one model chosen: its param and metric columns and each side tab
    (artifacts, the metric across versions, learning curves), and a comparison of three
    versions. Returns the files (none when the ledger has no model with versions)."""
    from desktop_app.pages.models import ModelsPage

    window = app.window
    page = window.show_page("Models")
    assert isinstance(page, ModelsPage)
    _settle(app)
    if page.model_box.count() < 2:
        return []
    page.choose_model(page.model_box.itemText(1))
    _settle(app)
    selection = page.table.selectionModel()
    page.table.selectRow(0)
    for row in (1, 2):
        selection.select(
            page.table_model.index(row, 0),
            selection.SelectionFlag.Select | selection.SelectionFlag.Rows,
        )
    _settle(app)
    written = []
    for name, tab in (
        ("02a-models-columns", "Detail"),
        ("02b-models-artifacts", "Artifacts"),
        ("02c-models-metric-chart", "Metric chart"),
        ("02d-models-learning-curves", "Learning curves"),
    ):
        page.show_tab(tab)
        _settle(app)
        window.show_status("")
        path = folder / f"{name}.png"
        window.grab().save(str(path))
        written.append(path)
    page.compare_selected()
    _settle(app)
    dialog = page.compare_dialog
    if dialog is not None:
        dialog.resize(1000, 420)
        dialog.show()
        _settle(app)
        path = folder / "02e-models-compare.png"
        dialog.grab().save(str(path))
        written.append(path)
        dialog.close()
    page.show_tab("Detail")
    return written
