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
