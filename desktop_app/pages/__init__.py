"""The window's pages, one module each, all built on `Page`."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QWidget

from desktop_app.context import AppContext


class Page(QWidget):
    """A sidebar page: knows its title and how to refresh itself from the ledger."""

    title = ""

    def __init__(self, context: AppContext) -> None:
        super().__init__()
        self.context = context
        self.setObjectName(self.title.lower().replace(" ", "-") + "-page")

    def refresh(self) -> None:
        """Re-read what the page shows (queries run in a worker)."""

    def handle_event(self, kind: str, data: object) -> None:
        """React to an agent event (alert, run_state, run_log, snapshot, coding_time)."""


def heading(text: str) -> QLabel:
    """A bold section heading in the palette's text colour."""
    label = QLabel(text)
    font = label.font()
    font.setBold(True)
    font.setPointSizeF(font.pointSizeF() * 1.15)
    label.setFont(font)
    return label
