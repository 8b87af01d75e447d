"""The main window: a sidebar of pages, an agent banner and a status bar."""

from __future__ import annotations

import importlib

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop_app.context import AppContext
from desktop_app.pages import Page

# (title, "module:class"): pages are imported and built the first time they are shown, so the
# charting library is loaded only when a chart page opens.
PAGES: tuple[tuple[str, str], ...] = (
    ("Overview", "desktop_app.pages.overview:OverviewPage"),
    ("Models", "desktop_app.pages.models:ModelsPage"),
    ("Runs", "desktop_app.pages.runs:RunsPage"),
    ("Data", "desktop_app.pages.data:DataPage"),
    ("Coding time", "desktop_app.pages.coding_time:CodingTimePage"),
    ("Settings", "desktop_app.pages.settings:SettingsPage"),
)


class AgentBanner(QFrame):
    """Shown while no agent answers: says so and offers to start it."""

    start_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.label = QLabel(
            "The Watchkeeper agent is not running: the ledger is shown as it is, but nothing is "
            "watched and training cannot start."
        )
        self.label.setWordWrap(True)
        self.button = QPushButton("&Start the agent")
        self.button.clicked.connect(self.start_requested)
        layout = QHBoxLayout(self)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.button)


class MainWindow(QMainWindow):
    """Sidebar navigation over the six pages."""

    def __init__(self, context: AppContext) -> None:
        super().__init__()
        self.context = context
        self.keep_in_tray = False
        self.setWindowTitle("Watchkeeper")
        self.resize(1200, 780)
        self.sidebar = QListWidget()
        self.sidebar.setAccessibleName("Pages")
        self.sidebar.addItems([title for title, _ in PAGES])
        self.sidebar.setFixedWidth(self.fontMetrics().horizontalAdvance("Coding time") + 48)
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.stack = QStackedWidget()
        self.pages: dict[str, Page] = {}
        self._placeholders: dict[str, QWidget] = {}
        for title, _ in PAGES:
            placeholder = QLabel(f"Loading {title}…")
            placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self._placeholders[title] = placeholder
            self.stack.addWidget(placeholder)
        self.banner = AgentBanner()
        self.banner.hide()
        self.status_label = QLabel("")
        self.agent_label = QLabel("agent: connecting…")
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.agent_label)

        content = QWidget()
        content_layout = QVBoxLayout(content)
        content_layout.setContentsMargins(0, 0, 0, 0)
        content_layout.addWidget(self.banner)
        content_layout.addWidget(self.stack, 1)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.addWidget(self.sidebar)
        layout.addWidget(content, 1)
        self.setCentralWidget(central)

        self.sidebar.currentRowChanged.connect(self.show_page_at)
        for number, (title, _) in enumerate(PAGES, start=1):
            QShortcut(QKeySequence(f"Ctrl+{number}"), self, lambda t=title: self.show_page(t))
        QShortcut(QKeySequence.StandardKey.Refresh, self, self.refresh_current)
        QShortcut(QKeySequence("Ctrl+R"), self, self.refresh_current)
        self.context.show_status = self.show_status

    # ---------------------------------------------------------------- pages

    def page(self, title: str) -> Page:
        """The page with this title, built on first use."""
        page = self.pages.get(title)
        if page is None:
            target = dict(PAGES)[title]
            module_name, class_name = target.split(":")
            page_class = getattr(importlib.import_module(module_name), class_name)
            page = page_class(self.context)
            assert page is not None
            self.pages[title] = page
            placeholder = self._placeholders.pop(title)
            index = self.stack.indexOf(placeholder)
            self.stack.insertWidget(index, page)
            self.stack.removeWidget(placeholder)
            placeholder.deleteLater()
            page.refresh()
        return page

    def show_page(self, title: str) -> Page:
        """Switch to a page (building and loading it the first time)."""
        row = [name for name, _ in PAGES].index(title)
        if self.sidebar.currentRow() != row:
            self.sidebar.setCurrentRow(row)  # calls show_page_at
        else:
            self.show_page_at(row)
        return self.pages[title]

    def show_page_at(self, row: int) -> None:
        if not 0 <= row < len(PAGES):
            return
        title = PAGES[row][0]
        page = self.page(title)
        self.stack.setCurrentWidget(page)

    @property
    def current_page(self) -> Page | None:
        widget = self.stack.currentWidget()
        return widget if isinstance(widget, Page) else None

    def refresh_current(self) -> None:
        page = self.current_page
        if page is not None:
            page.refresh()

    def refresh_all(self) -> None:
        for page in self.pages.values():
            page.refresh()

    def dispatch_event(self, kind: str, data: object) -> None:
        """Hand an agent event to every page built so far."""
        for page in self.pages.values():
            page.handle_event(kind, data)

    # ---------------------------------------------------------------- status

    def show_status(self, message: str) -> None:
        self.status_label.setText(message)
        self.status_label.setToolTip(message)

    def set_agent_connected(self, connected: bool) -> None:
        self.agent_label.setText("agent: connected" if connected else "agent: not running")
        self.banner.setVisible(not connected)

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.keep_in_tray:
            event.ignore()
            self.hide()
            return
        super().closeEvent(event)
