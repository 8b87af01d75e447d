"""The tray icon: state drawn with QPainter, a small menu, and notifications it remembers."""

from __future__ import annotations

import time
from dataclasses import dataclass

from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

TRAY_STATES = ("fresh", "stale", "running", "error", "offline")
STATE_COLORS = {
    "fresh": "#16a34a",
    "stale": "#d97706",
    "running": "#2563eb",
    "error": "#dc2626",
    "offline": "#6b7280",
}
ICON_SIZES = (16, 22, 24, 32, 48, 64, 128)


def _draw_state(painter: QPainter, size: int, state: str) -> None:
    color = QColor(STATE_COLORS[state])
    margin = size * 0.06
    circle = QRectF(margin, margin, size - 2 * margin, size - 2 * margin)
    painter.setPen(QPen(color.darker(140), max(1.0, size / 16)))
    painter.setBrush(color)
    painter.drawEllipse(circle)
    white = QColor("white")
    painter.setPen(
        QPen(
            white,
            max(1.5, size / 9),
            Qt.PenStyle.SolidLine,
            Qt.PenCapStyle.RoundCap,
            Qt.PenJoinStyle.RoundJoin,
        )
    )
    painter.setBrush(Qt.BrushStyle.NoBrush)
    s = size
    if state == "fresh":  # a check mark
        path = QPainterPath(QPointF(0.28 * s, 0.52 * s))
        path.lineTo(0.44 * s, 0.68 * s)
        path.lineTo(0.72 * s, 0.34 * s)
        painter.drawPath(path)
    elif state == "stale":  # a clock
        painter.drawLine(QPointF(0.5 * s, 0.5 * s), QPointF(0.5 * s, 0.27 * s))
        painter.drawLine(QPointF(0.5 * s, 0.5 * s), QPointF(0.68 * s, 0.6 * s))
    elif state == "running":  # a play triangle
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(white)
        triangle = QPainterPath(QPointF(0.4 * s, 0.3 * s))
        triangle.lineTo(0.72 * s, 0.5 * s)
        triangle.lineTo(0.4 * s, 0.7 * s)
        triangle.closeSubpath()
        painter.drawPath(triangle)
    elif state == "error":  # an exclamation mark
        painter.drawLine(QPointF(0.5 * s, 0.26 * s), QPointF(0.5 * s, 0.56 * s))
        painter.drawPoint(QPointF(0.5 * s, 0.72 * s))
    else:  # offline: a dash
        painter.drawLine(QPointF(0.32 * s, 0.5 * s), QPointF(0.68 * s, 0.5 * s))


def state_icon(state: str) -> QIcon:
    """The tray icon for a state, drawn at every common size so it stays sharp on high DPI."""
    icon = QIcon()
    for size in ICON_SIZES:
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        _draw_state(painter, size, state)
        painter.end()
        icon.addPixmap(pixmap)
    return icon


@dataclass(frozen=True)
class Notification:
    """A notification the tray showed (or would have shown without a tray host)."""

    title: str
    message: str
    kind: str
    shown_at: float


class WatchkeeperTray(QObject):
    """The tray icon and its menu: Open, a status line, Pause watching, Quit."""

    open_requested = Signal()
    start_agent_requested = Signal()
    pause_toggled = Signal(bool)
    quit_requested = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = "offline"
        self.icons = {state: state_icon(state) for state in TRAY_STATES}
        self.icon = QSystemTrayIcon(self.icons[self.state], self)
        self.menu = QMenu()
        self.open_action = QAction("Open Watchkeeper", self.menu)
        self.status_action = QAction("Starting…", self.menu)
        self.status_action.setEnabled(False)
        self.start_agent_action = QAction("Start the agent", self.menu)
        self.pause_action = QAction("Pause watching", self.menu)
        self.pause_action.setCheckable(True)
        self.quit_action = QAction("Quit", self.menu)
        for action in (self.open_action, self.status_action):
            self.menu.addAction(action)
        self.menu.addAction(self.start_agent_action)
        self.menu.addSeparator()
        self.menu.addAction(self.pause_action)
        self.menu.addAction(self.quit_action)
        self.icon.setContextMenu(self.menu)
        self.open_action.triggered.connect(self.open_requested)
        self.start_agent_action.triggered.connect(self.start_agent_requested)
        self.pause_action.toggled.connect(self.pause_toggled)
        self.quit_action.triggered.connect(self.quit_requested)
        self.icon.activated.connect(self._activated)
        self.icon.setToolTip("Watchkeeper")
        self.notifications: list[Notification] = []

    @staticmethod
    def available() -> bool:
        """Whether the desktop has a tray (a system tray host) to put the icon in."""
        return QSystemTrayIcon.isSystemTrayAvailable()

    def show(self) -> None:
        self.icon.show()

    def hide(self) -> None:
        self.icon.hide()

    @property
    def visible(self) -> bool:
        return self.icon.isVisible()

    def set_state(self, state: str, status_line: str) -> None:
        """Show `state` ('fresh', 'stale', 'running', 'error' or 'offline') and the status line."""
        self.state = state
        self.icon.setIcon(self.icons[state])
        self.icon.setToolTip(f"Watchkeeper — {status_line}")
        self.status_action.setText(status_line)
        self.start_agent_action.setVisible(state == "offline")  # the tray-only way to start it
        self.pause_action.setEnabled(state != "offline")

    def set_paused(self, paused: bool) -> None:
        self.pause_action.blockSignals(True)
        self.pause_action.setChecked(paused)
        self.pause_action.blockSignals(False)

    def notify(self, title: str, message: str, kind: str = "info") -> Notification:
        """Show a notification balloon (when a tray host exists) and remember it."""
        notification = Notification(title, message, kind, time.time())
        self.notifications.append(notification)
        del self.notifications[:-50]
        if self.icon.isVisible():
            severity = (
                QSystemTrayIcon.MessageIcon.Warning
                if kind in ("stale", "drift", "run_failed")
                else QSystemTrayIcon.MessageIcon.Information
            )
            self.icon.showMessage(title, message, severity, 10_000)
        return notification

    @property
    def last_notification(self) -> Notification | None:
        return self.notifications[-1] if self.notifications else None

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (
            QSystemTrayIcon.ActivationReason.Trigger,
            QSystemTrayIcon.ActivationReason.DoubleClick,
        ):
            self.open_requested.emit()
