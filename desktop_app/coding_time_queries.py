"""The Coding time page's numbers: ledger days plus the HMM's heatmap, sessions and review hours."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np

from agent.activity.coding_time import ReviewWindow, estimate_coding_time
from desktop_app import ledger_queries
from desktop_app.ledger_queries import CodingTimeDays

HISTORY_DAYS = 365
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass
class CodingTimeView:
    """Everything the Coding time page draws."""

    days: CodingTimeDays
    days_source: str  # "ledger" (the agent's nightly refit) or "estimate" (computed here)
    heatmap: np.ndarray = field(default_factory=lambda: np.zeros((7, 24)))
    sessions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # local seconds
    event_local_times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    peak_hours: list[int] = field(default_factory=list)
    review_windows: list[ReviewWindow] = field(default_factory=list)
    event_count: int = 0

    def sessions_on(self, day: date) -> list[tuple[float, float]]:
        """The Viterbi coding sessions of one local day as (start hour, end hour)."""
        start = _local_day_start(day)
        end = start + 86_400
        chosen = self.sessions[(self.sessions[:, 1] > start) & (self.sessions[:, 0] < end)]
        return [((max(s, start) - start) / 3600, (min(e, end) - start) / 3600) for s, e in chosen]

    def events_on(self, day: date) -> list[float]:
        """Hours of the day at which events happened."""
        start = _local_day_start(day)
        times = self.event_local_times
        chosen = times[(times >= start) & (times < start + 86_400)]
        return [float(t) for t in (chosen - start) / 3600]

    def peak_hours_text(self) -> str:
        if not self.peak_hours:
            return "Peak hours: not enough activity yet"
        return "Peak hours: " + ", ".join(
            f"{hour:02d}:00–{hour + 1:02d}:00" for hour in self.peak_hours
        )

    def review_windows_text(self) -> str:
        if not self.review_windows:
            return "Review windows: not enough activity yet"
        return "Review windows: " + "; ".join(
            f"{WEEKDAY_NAMES[w.weekday][:3]} {w.start_hour:02d}:00–{w.end_hour:02d}:00"
            for w in self.review_windows[:6]
        )


def _local_day_start(day: date) -> float:
    """The day's midnight on the same shifted clock as the estimator's local seconds."""
    return float((day - date(1970, 1, 1)).days * 86_400)


def local_seconds(epoch_times: np.ndarray) -> np.ndarray:
    """Epoch seconds shifted by the local UTC offset in force at each instant."""
    if not epoch_times.size:
        return epoch_times.astype(np.float64)
    offsets = np.array([time.localtime(t).tm_gmtoff for t in epoch_times], dtype=np.float64)
    shifted: np.ndarray = epoch_times + offsets
    return shifted


def coding_time_view(connection: sqlite3.Connection | None) -> CodingTimeView:
    """Read the ledger's days and events and fit the estimate (runs in a worker thread)."""
    days = ledger_queries.coding_time_days(connection)
    since = time.time() - HISTORY_DAYS * 86_400
    events: list[tuple[float, str]] = []
    if connection is not None and "activity_events" in ledger_queries.table_names(connection):
        events = [
            (float(row[0]), str(row[1]))
            for row in connection.execute(
                "SELECT ts, kind FROM activity_events WHERE ts >= ? ORDER BY ts", (since,)
            )
        ]
    view = CodingTimeView(days=days, days_source="ledger")
    if not events:
        return view
    epoch = np.array([event[0] for event in events], dtype=np.float64)
    kinds = np.array([0 if event[1] == "commit" else 1 for event in events], dtype=np.int64)
    local = local_seconds(epoch)
    estimate = estimate_coding_time(local, kinds)
    view.heatmap = estimate.heatmap
    view.sessions = estimate.sessions
    view.event_local_times = local
    view.peak_hours = list(estimate.peak_hours)
    view.review_windows = list(estimate.review_windows)
    view.event_count = len(events)
    if not days.dates:
        view.days = CodingTimeDays(
            dates=estimate.dates,
            coding=estimate.coding_minutes.tolist(),
            git_hours=estimate.git_hours_minutes.tolist(),
            timeout=estimate.timeout_minutes.tolist(),
        )
        view.days_source = "estimate"
    return view


def latest_day(view: CodingTimeView) -> date:
    """The most recent finished day with events (today when there is no earlier one)."""
    today = date.today()
    days = sorted(
        {datetime.fromtimestamp(float(t), tz=UTC).date() for t in view.event_local_times[-5000:]}
    )
    finished = [day for day in days if day < today]
    return finished[-1] if finished else today
