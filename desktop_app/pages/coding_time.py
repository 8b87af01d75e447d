"""The Coding time page: daily minutes against baselines, per repo, the week heatmap and a day."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
from PySide6.QtCore import QDate, QEvent
from PySide6.QtWidgets import (
    QDateEdit,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
)

from desktop_app.charts import (
    DailyCodingChart,
    HeatmapChart,
    RepoStackChart,
    SessionTimeline,
    follow_palette,
)
from desktop_app.context import AppContext
from desktop_app.pages import Page, heading
from desktop_app.queries.coding_time import CodingTimeView, coding_time_view, latest_day
from desktop_app.queries.formatting import format_minutes

SOURCE_WORDS = {
    "stored": "the agent's stored estimate",
    "estimate": "estimated here",
    "none": "nothing estimated yet",
}


class CodingTimePage(Page):
    """How much of the day was coding, on which repo, and when."""

    title = "Coding time"

    def __init__(self, context: AppContext) -> None:
        super().__init__(context)
        self.view: CodingTimeView | None = None
        self.daily = DailyCodingChart()
        self.by_repo = RepoStackChart()
        self.heatmap = HeatmapChart("Coding minutes per week, by weekday and hour")
        self.timeline = SessionTimeline()
        self.repo_table = QTreeWidget()
        self.repo_table.setHeaderLabels(["Repo", "Coding", "Share", "Events"])
        self.repo_table.setRootIsDecorated(False)
        self.repo_table.setAccessibleName("Coding time per repo")
        self.day_edit = QDateEdit()
        self.day_edit.setCalendarPopup(True)
        self.day_edit.setDisplayFormat("yyyy-MM-dd")
        self.day_edit.setAccessibleName("Day to show on the timeline")
        self.day_edit.dateChanged.connect(self._day_changed)
        self.summary = QLabel("")
        self.freshness = QLabel("")
        self.freshness.setEnabled(False)  # drawn in the palette's quieter text colour
        self.peak_label = QLabel("")
        self.review_label = QLabel("")
        self.day_total = QLabel("")
        for label in (self.summary, self.freshness, self.peak_label, self.review_label):
            label.setWordWrap(True)

        day_row = QHBoxLayout()
        day_row.addWidget(heading("Sessions on"))
        day_row.addWidget(self.day_edit)
        day_row.addWidget(self.day_total, 1)

        grid = QGridLayout(self)
        grid.addWidget(self.summary, 0, 0, 1, 2)
        grid.addWidget(self.freshness, 1, 0, 1, 2)
        grid.addWidget(self.daily.widget, 2, 0)
        grid.addWidget(self.by_repo.widget, 2, 1)
        grid.addWidget(self.heatmap.widget, 3, 0)
        info = QGridLayout()
        info.addWidget(self.peak_label, 0, 0)
        info.addWidget(self.review_label, 1, 0)
        info.addWidget(self.repo_table, 2, 0)
        info.setRowStretch(2, 1)
        grid.addLayout(info, 3, 1)
        grid.addLayout(day_row, 4, 0, 1, 2)
        grid.addWidget(self.timeline.widget, 5, 0, 1, 2)
        grid.setRowStretch(2, 3)
        grid.setRowStretch(3, 3)
        grid.setRowStretch(5, 1)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:  # the system switched light or dark
            for chart in (self.daily, self.by_repo, self.heatmap, self.timeline):
                follow_palette(chart.widget)
        super().changeEvent(event)

    def refresh(self) -> None:
        self.context.workers.submit(coding_time_view, self.show_view)

    def handle_event(self, kind: str, data: object) -> None:
        if kind == "coding_time":
            self.refresh()

    def show_view(self, view: CodingTimeView) -> None:
        """Draw the charts from one computed view."""
        first_time = self.view is None
        self.view = view
        self.daily.set_days(view.days)
        self.heatmap.set_grid(view.heatmap)
        days = view.days
        self.summary.setText(
            f"{len(days.dates)} days, {format_minutes(sum(days.coding))} of coding "
            f"({SOURCE_WORDS[view.days_source]}); git-hours says "
            f"{format_minutes(sum(days.git_hours))}, the 15-minute timeout "
            f"{format_minutes(sum(days.timeout))}. {view.event_count:,} events."
        )
        self.freshness.setText(f"Coding time: {view.note}" if view.note else "")
        self.peak_label.setText(view.peak_hours_text())
        self.review_label.setText(view.review_windows_text())
        self._show_repos(view)
        if first_time:
            day = latest_day(view)
            self.day_edit.setDate(QDate(day.year, day.month, day.day))
        self._day_changed(self.day_edit.date())

    def _show_repos(self, view: CodingTimeView) -> None:
        rows = view.repo_rows()
        self.repo_table.clear()
        for repo, minutes, share, events in rows:
            self.repo_table.addTopLevelItem(
                QTreeWidgetItem([repo, format_minutes(minutes), f"{share:.0%}", f"{events:,}"])
            )
        if not rows:
            self.repo_table.addTopLevelItem(QTreeWidgetItem(["No coding time yet", "", "", ""]))
        self.repo_table.resizeColumnToContents(0)
        if view.by_repo is None:
            self.by_repo.set_days([], [], np.zeros((0, 0)))
            return
        order = view.by_repo.order()
        self.by_repo.set_days(
            view.days.dates,
            [Path(view.by_repo.repos[r]).name or view.by_repo.repos[r] for r in order],
            view.by_repo.minutes[:, order],
        )

    def _day_changed(self, qdate: QDate) -> None:
        if self.view is None:
            return
        day = date(qdate.year(), qdate.month(), qdate.day())
        self.timeline.set_day(self.view.sessions_on(day), self.view.events_on(day))
        self.day_total.setText(self.view.day_text(day))
