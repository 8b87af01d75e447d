"""The Coding time page's queries (and the Overview's minutes), from the agent's stored estimate."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from agent.activity.coding_time import ReviewWindow
from agent.activity.coding_time.by_repo import RepoDays
from agent.activity.coding_time_store import (
    WINDOW_DAYS,
    StoredEstimate,
    compute_estimate,
    counted,
    day_of,
    events_recorded_since,
    freshness_note,
    load_user_events,
    read_stored,
    today_coding,
)
from agent.activity.estimates import resolve_zone, to_local_seconds
from desktop_app.queries.connection import has_tables, table_names
from desktop_app.queries.formatting import format_minutes
from desktop_app.queries.overview import Overview, overview


@dataclass
class CodingTimeDays:
    """Per-day coding minutes and the two baselines, as parallel lists."""

    dates: list[str]
    coding: list[float]
    git_hours: list[float]
    timeout: list[float]


def coding_time_days(connection: sqlite3.Connection | None) -> CodingTimeDays:
    """Daily totals summed over identities, oldest first."""
    if not has_tables(connection, "coding_time_days"):
        return CodingTimeDays([], [], [], [])
    assert connection is not None
    rows = connection.execute(
        "SELECT date, SUM(coding_minutes), SUM(git_hours_minutes), SUM(timeout_minutes)"
        " FROM coding_time_days GROUP BY date ORDER BY date"
    ).fetchall()
    return CodingTimeDays(
        dates=[row[0] for row in rows],
        coding=[float(row[1] or 0) for row in rows],
        git_hours=[float(row[2] or 0) for row in rows],
        timeout=[float(row[3] or 0) for row in rows],
    )


def activity_times(
    connection: sqlite3.Connection | None, since: float | None = None
) -> list[float]:
    """Times of all activity events (saves and commits), oldest first."""
    if not has_tables(connection, "activity_events"):
        return []
    assert connection is not None
    rows = connection.execute(
        "SELECT ts FROM activity_events WHERE ts >= ? ORDER BY ts", (since or 0.0,)
    )
    return [float(row[0]) for row in rows]


WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass
class CodingTimeView:
    """Everything the Coding time page draws."""

    days: CodingTimeDays
    days_source: str  # "stored" (the agent's estimate), "estimate" (computed here) or "none"
    note: str = ""  # how current the numbers are
    heatmap: np.ndarray = field(default_factory=lambda: np.zeros((7, 24)))
    sessions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # local seconds
    event_local_times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    peak_hours: list[int] = field(default_factory=list)
    review_windows: list[ReviewWindow] = field(default_factory=list)
    event_count: int = 0
    by_repo: RepoDays | None = None

    @property
    def provisional(self) -> bool:
        return self.days_source != "stored" or self.note.startswith("provisional")

    def minutes_on(self, day: date) -> float:
        """The day's coding minutes, the same number every view shows for it."""
        iso = day.isoformat()
        if iso in self.days.dates:
            return float(self.days.coding[self.days.dates.index(iso)])
        return 0.0

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

    def day_text(self, day: date) -> str:
        """'0h 35m of coding in 1 session, 2 events' for the picked day."""
        sessions = self.sessions_on(day)
        text = (
            f"{format_minutes(self.minutes_on(day))} of coding, "
            f"{counted(len(sessions), 'session')}, {counted(len(self.events_on(day)), 'event')}"
        )
        if day == date.today():
            text += " (today, so far)"
        return text

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

    def repo_rows(self) -> list[tuple[str, float, float, int]]:
        """(repo, coding minutes, share of all coding, events) per repo, most minutes first."""
        if self.by_repo is None:
            return []
        totals = self.by_repo.totals
        whole = max(float(totals.sum()), 1e-12)
        return [
            (
                self.by_repo.repos[r],
                float(totals[r]),
                float(totals[r]) / whole,
                int(self.by_repo.events[r]),
            )
            for r in self.by_repo.order()
        ]


def _local_day_start(day: date) -> float:
    """The day's midnight on the same shifted clock as the estimator's local seconds."""
    return float((day - date(1970, 1, 1)).days * 86_400)


def _days_of(stored: StoredEstimate) -> CodingTimeDays:
    estimate = stored.estimate
    return CodingTimeDays(
        dates=estimate.dates,
        coding=estimate.coding_minutes.tolist(),
        git_hours=estimate.git_hours_minutes.tolist(),
        timeout=estimate.timeout_minutes.tolist(),
    )


def _identities() -> list[str]:
    """The user's identities as the agent works them out (for an estimate made here)."""
    from agent.activity.identities import default_identities
    from agent.config import UserConfig

    config = UserConfig.load()
    return default_identities([Path(p).expanduser() for p in config.watched_repos], config)


def coding_time_view(connection: sqlite3.Connection | None) -> CodingTimeView:
    """The stored estimate and the events behind it (runs in a worker thread).

    When the agent has stored no estimate yet, the same estimate is computed here from the
    ledger and marked provisional.
    """
    stored = read_stored(connection)
    source = "stored"
    if stored is None and connection is not None and "activity_events" in table_names(connection):
        identities = _identities()
        events = load_user_events(connection, identities, time.time() - WINDOW_DAYS * 86_400)
        if events.times.size:
            stored = compute_estimate(events, identities=identities, trigger="")
            source = "estimate"
    if stored is None:
        return CodingTimeView(
            days=coding_time_days(connection),
            days_source="none",
            note=freshness_note(None, 0),
        )
    newer = events_recorded_since(connection, stored) if source == "stored" else 0
    note = (
        freshness_note(stored, newer)
        if source == "stored"
        else "provisional: estimated here from the ledger; the agent has not stored its "
        "estimate yet (it does shortly after a commit, or a few minutes after saves settle)"
    )
    estimate = stored.estimate
    first_second = estimate.first_day * 86_400
    epoch = np.zeros(0)
    if connection is not None:
        epoch = np.array(
            [
                float(row[0])
                for row in connection.execute(
                    "SELECT ts FROM activity_events WHERE ts >= ? ORDER BY ts",
                    (first_second - 86_400,),
                )
            ],
            dtype=np.float64,
        )
    local = to_local_seconds(epoch, resolve_zone(stored.zone))
    local = local[local >= first_second]
    return CodingTimeView(
        days=_days_of(stored),
        days_source=source,
        note=note,
        heatmap=estimate.heatmap,
        sessions=estimate.sessions,
        event_local_times=local,
        peak_hours=list(estimate.peak_hours),
        review_windows=list(estimate.review_windows),
        event_count=sum(estimate.event_counts.values()),
        by_repo=stored.by_repo,
    )


def latest_day(view: CodingTimeView, today: date | None = None) -> date:
    """The day the sessions picker opens on: today, or the last day with activity before it."""
    today = today or date.today()
    if view.events_on(today) or view.sessions_on(today):
        return today
    times = view.event_local_times
    earlier = times[times < _local_day_start(today)]
    if earlier.size:
        return day_of(float(earlier.max()))
    return today


def overview_with_coding(connection: sqlite3.Connection | None) -> Overview:
    """The Overview's query, with today's and this week's minutes from the stored estimate."""
    summary = overview(connection)
    today = today_coding(connection)
    summary.today_note = today.note
    if today.minutes is None:
        summary.today_minutes = summary.week_minutes = 0.0
        summary.today_text = "today: not estimated yet"
        return summary
    summary.today_minutes = today.minutes
    summary.week_minutes = today.week_minutes
    summary.today_text = f"today {format_minutes(today.minutes)} so far" + (
        " (provisional)" if today.provisional else ""
    )
    return summary
