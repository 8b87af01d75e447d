"""The Coding time page: daily minutes against baselines, the week heatmap and a day's sessions."""

from __future__ import annotations

from datetime import date

from PySide6.QtCore import QDate, QEvent
from PySide6.QtWidgets import QDateEdit, QGridLayout, QHBoxLayout, QLabel

from desktop_app.charts import DailyCodingChart, HeatmapChart, SessionTimeline, follow_palette
from desktop_app.coding_time_queries import CodingTimeView, coding_time_view, latest_day
from desktop_app.context import AppContext
from desktop_app.ledger_queries import format_minutes
from desktop_app.pages import Page, heading


class CodingTimePage(Page):
    """How much of the day was coding, and when."""

    title = "Coding time"

    def __init__(self, context: AppContext) -> None:
        super().__init__(context)
        self.view: CodingTimeView | None = None
        self.daily = DailyCodingChart()
        self.heatmap = HeatmapChart("Coding minutes per week, by weekday and hour")
        self.timeline = SessionTimeline()
        self.day_edit = QDateEdit()
        self.day_edit.setCalendarPopup(True)
        self.day_edit.setDisplayFormat("yyyy-MM-dd")
        self.day_edit.setAccessibleName("Day to show on the timeline")
        self.day_edit.dateChanged.connect(self._day_changed)
        self.summary = QLabel("")
        self.peak_label = QLabel("")
        self.review_label = QLabel("")
        self.day_total = QLabel("")
        for label in (self.summary, self.peak_label, self.review_label):
            label.setWordWrap(True)

        day_row = QHBoxLayout()
        day_row.addWidget(heading("Sessions on"))
        day_row.addWidget(self.day_edit)
        day_row.addWidget(self.day_total, 1)

        grid = QGridLayout(self)
        grid.addWidget(self.summary, 0, 0, 1, 2)
        grid.addWidget(self.daily.widget, 1, 0, 1, 2)
        grid.addWidget(self.heatmap.widget, 2, 0)
        info = QGridLayout()
        info.addWidget(self.peak_label, 0, 0)
        info.addWidget(self.review_label, 1, 0)
        info.setRowStretch(2, 1)
        grid.addLayout(info, 2, 1)
        grid.addLayout(day_row, 3, 0, 1, 2)
        grid.addWidget(self.timeline.widget, 4, 0, 1, 2)
        grid.setRowStretch(1, 3)
        grid.setRowStretch(2, 3)
        grid.setRowStretch(4, 1)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:  # the system switched light or dark
            for chart in (self.daily, self.heatmap, self.timeline):
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
        total = sum(days.coding)
        source = (
            "from the agent's nightly refit"
            if view.days_source == "ledger"
            else "estimated here from the ledger's events"
        )
        self.summary.setText(
            f"{len(days.dates)} days, {format_minutes(total)} of coding ({source}); "
            f"git-hours says {format_minutes(sum(days.git_hours))}, the 15-minute timeout "
            f"{format_minutes(sum(days.timeout))}. {view.event_count:,} events."
        )
        self.peak_label.setText(view.peak_hours_text())
        self.review_label.setText(view.review_windows_text())
        if first_time:
            day = latest_day(view)
            self.day_edit.setDate(QDate(day.year, day.month, day.day))
        self._day_changed(self.day_edit.date())

    def _day_changed(self, qdate: QDate) -> None:
        if self.view is None:
            return
        day = date(qdate.year(), qdate.month(), qdate.day())
        sessions = self.view.sessions_on(day)
        self.timeline.set_day(sessions, self.view.events_on(day))
        minutes = sum(end - start for start, end in sessions) * 60
        self.day_total.setText(f"{len(sessions)} sessions, {format_minutes(minutes)}")
