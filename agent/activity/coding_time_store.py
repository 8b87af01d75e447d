"""The coding-time estimate stored in the ledger: the agent writes it, every view reads it.

The agent computes one estimate from the ledger (its own commits and saves of the last
`WINDOW_DAYS` days, in the system time zone) after each burst of activity and at the nightly
refit, and stores it here: the minutes per day in `coding_time_days`, the minutes per day and
repo in `coding_time_repo_days`, and the rest of the report (sessions, heatmap, peak hours,
review windows, event counts, the model) in `coding_time_estimate`. The CLI, the HTML report,
the app's pages and the tray all read it back through `read_stored`, so they show one number
per day.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlite_utils import Database

from agent.activity.coding_time import (
    SECONDS_PER_DAY,
    CodingTimeEstimate,
    ReviewWindow,
    estimate_coding_time,
)
from agent.activity.coding_time.by_repo import NO_REPO, RepoDays, attribute_to_repos
from agent.activity.estimates import resolve_zone, to_local_seconds

WINDOW_DAYS = 90
PEAK_MIN_MINUTES = 0.5
"""An hour is a peak hour only if the days hold at least this much coding in it (shown as 1m)."""

Connection = Database | sqlite3.Connection


@dataclass
class UserEvents:
    """The user's commits and saves from the ledger: UTC times, kinds (0/1) and repo paths."""

    times: np.ndarray
    kinds: np.ndarray
    repos: list[str]
    through_id: int  # the newest activity_events id when they were read

    @property
    def fingerprint(self) -> str:
        """A hash of exactly these events."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.times, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(self.kinds, dtype=np.int64).tobytes())
        return digest.hexdigest()


def load_user_events(db: Connection, identities: list[str], since: float) -> UserEvents:
    """The user's activity since `since`, oldest first.

    Commits come from the `commits` table (own identities, merges excluded, each sha once, in
    the first repo path that holds it); saves from `activity_events`.
    """
    own = [email.lower() for email in identities]
    where = "c.is_merge = 0 AND c.author_time >= ?"
    params: list[Any] = [int(since)]
    if own:
        where += f" AND lower(c.author_email) IN ({', '.join('?' for _ in own)})"
        params.extend(own)
    commits = db.execute(
        f"SELECT MIN(c.author_time), MIN(r.path) FROM commits c JOIN repos r ON r.id = c.repo_id "
        f"WHERE {where} GROUP BY c.sha",
        params,
    ).fetchall()
    saves = db.execute(
        "SELECT e.ts, r.path FROM activity_events e LEFT JOIN repos r ON r.id = e.repo_id "
        "WHERE e.kind = 'save' AND e.ts >= ?",
        [since],
    ).fetchall()
    through = db.execute("SELECT COALESCE(MAX(id), 0) FROM activity_events").fetchone()[0]
    rows = [(float(t), 0, p) for t, p in commits] + [(float(t), 1, p) for t, p in saves]
    rows.sort(key=lambda row: (row[0], row[1]))
    return UserEvents(
        times=np.array([row[0] for row in rows], dtype=np.float64),
        kinds=np.array([row[1] for row in rows], dtype=np.int64),
        repos=[row[2] or NO_REPO for row in rows],
        through_id=int(through),
    )


def shown_peak_hours(estimate: CodingTimeEstimate, count: int = 3) -> list[int]:
    """The hours of the day with the most coding, best first, from the minutes the days show.

    An hour counts only when the days hold at least `PEAK_MIN_MINUTES` of coding in it in all,
    so a day shown with 0 minutes lends no peak hour (the heatmap's means per week would).
    """
    weekdays = (np.arange(estimate.first_day, estimate.first_day + estimate.n_days) + 3) % 7
    weeks = np.bincount(weekdays, minlength=7).astype(np.float64)
    by_hour = (np.asarray(estimate.heatmap, dtype=np.float64) * weeks[:, None]).sum(axis=0)
    order = np.argsort(-by_hour, kind="stable")
    return [int(hour) for hour in order[:count] if by_hour[hour] >= PEAK_MIN_MINUTES]


@dataclass
class StoredEstimate:
    """One stored estimate: the report's numbers, their per-repo split, and how fresh they are."""

    estimate: CodingTimeEstimate
    by_repo: RepoDays
    identities: list[str]
    zone: str
    computed_at: float
    trigger: str  # "commit", "saves", "start", "nightly" or "asked"
    events_through_id: int
    fingerprint: str
    model: dict[str, Any]
    model_version_id: int | None = None

    @property
    def dates(self) -> list[str]:
        return self.estimate.dates

    def minutes_on(self, day: date) -> float | None:
        """Coding minutes of one day, None when the day is outside the stored window."""
        index = (day - date(1970, 1, 1)).days - self.estimate.first_day
        if 0 <= index < self.estimate.n_days:
            return float(self.estimate.coding_minutes[index])
        return None

    def today(self) -> date:
        """Today in the estimate's time zone."""
        return datetime.now(ZoneInfo(self.zone)).date()


def compute_estimate(
    events: UserEvents,
    *,
    identities: list[str],
    trigger: str,
    zone: ZoneInfo | None = None,
    now: float | None = None,
) -> StoredEstimate:
    """The estimate of the `WINDOW_DAYS` days up to today from `events` (nothing stored yet)."""
    zone = zone or resolve_zone(None)
    now = time.time() if now is None else now
    today = (datetime.fromtimestamp(now, zone).date() - date(1970, 1, 1)).days
    first_day = today - WINDOW_DAYS + 1
    local = to_local_seconds(events.times, zone)
    estimate = estimate_coding_time(local, events.kinds, first_day=first_day, last_day=today)
    estimate.peak_hours = shown_peak_hours(estimate)
    by_repo = attribute_to_repos(
        estimate.bin_numbers,
        estimate.bin_coding_minutes,
        estimate.bin_minutes * 60,
        estimate.first_day,
        estimate.n_days,
        local,
        events.repos,
        day_minutes=estimate.coding_minutes,
    )
    return StoredEstimate(
        estimate=estimate,
        by_repo=by_repo,
        identities=list(identities),
        zone=str(zone),
        computed_at=now,
        trigger=trigger,
        events_through_id=events.through_id,
        fingerprint=events.fingerprint,
        model=dict(estimate.model_summary()),
    )


def _identity(stored: StoredEstimate) -> str:
    return stored.identities[0] if stored.identities else "me"


def write_stored(db: Database, stored: StoredEstimate) -> None:
    """Replace the stored estimate (call inside a write transaction).

    Days of the window are replaced; days before it keep their last stored numbers.
    """
    estimate, identity = stored.estimate, _identity(stored)
    dates = estimate.dates
    db.execute("DELETE FROM coding_time_days WHERE date >= ?", [dates[0]])
    db.execute("DELETE FROM coding_time_repo_days WHERE date >= ?", [dates[0]])
    db.conn.executemany(
        "INSERT OR REPLACE INTO coding_time_days (date, identity, coding_minutes, "
        "git_hours_minutes, timeout_minutes, model_version_id) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                day,
                identity,
                float(estimate.coding_minutes[i]),
                float(estimate.git_hours_minutes[i]),
                float(estimate.timeout_minutes[i]),
                stored.model_version_id,
            )
            for i, day in enumerate(dates)
        ],
    )
    by_repo = stored.by_repo
    db.conn.executemany(
        "INSERT OR REPLACE INTO coding_time_repo_days (date, identity, repo, coding_minutes) "
        "VALUES (?, ?, ?, ?)",
        [
            (dates[d], identity, repo, float(by_repo.minutes[d, r]))
            for d in range(by_repo.minutes.shape[0])
            for r, repo in enumerate(by_repo.repos)
            if by_repo.minutes[d, r] > 0
        ],
    )
    report = {
        "first_day": estimate.first_day,
        "n_days": estimate.n_days,
        "bin_minutes": estimate.bin_minutes,
        "sessions": estimate.sessions.tolist(),
        "heatmap": estimate.heatmap.round(4).tolist(),
        "presence": estimate.presence.round(4).tolist(),
        "peak_hours": estimate.peak_hours,
        "review_windows": [[w.weekday, w.start_hour, w.end_hour] for w in estimate.review_windows],
        "event_counts": estimate.event_counts,
        "repos": {repo: int(n) for repo, n in zip(by_repo.repos, by_repo.events, strict=True)},
        "identities": stored.identities,
        "model": stored.model,
    }
    db.execute("DELETE FROM coding_time_estimate")
    db.execute(
        "INSERT INTO coding_time_estimate (identity, computed_at, trigger, events_through_id, "
        "fingerprint, zone, model_version_id, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            identity,
            stored.computed_at,
            stored.trigger,
            stored.events_through_id,
            stored.fingerprint,
            stored.zone,
            stored.model_version_id,
            json.dumps(report),
        ],
    )


def _tables(db: Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def read_stored(db: Connection | None) -> StoredEstimate | None:
    """The stored estimate, or None when the agent has not stored one yet."""
    if db is None or "coding_time_estimate" not in _tables(db):
        return None
    row = db.execute(
        "SELECT computed_at, trigger, events_through_id, fingerprint, zone, model_version_id, "
        "report FROM coding_time_estimate ORDER BY computed_at DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    computed_at, trigger, through, fingerprint, zone, version_id, text = tuple(row)
    report = json.loads(text)
    first_day, n_days = int(report["first_day"]), int(report["n_days"])
    days = np.arange(first_day, first_day + n_days).astype("datetime64[D]")
    dates = [str(day) for day in days]
    index = {day: i for i, day in enumerate(dates)}
    columns = np.zeros((3, n_days))
    for day, coding, git_hours, timeout in db.execute(
        "SELECT date, SUM(coding_minutes), SUM(git_hours_minutes), SUM(timeout_minutes) "
        "FROM coding_time_days WHERE date >= ? AND date <= ? GROUP BY date",
        [dates[0], dates[-1]],
    ).fetchall():
        if day in index:
            columns[:, index[day]] = [coding or 0.0, git_hours or 0.0, timeout or 0.0]
    repos = sorted(report.get("repos", {}))
    repo_minutes = np.zeros((n_days, len(repos)))
    for day, repo, minutes in db.execute(
        "SELECT date, repo, SUM(coding_minutes) FROM coding_time_repo_days "
        "WHERE date >= ? AND date <= ? GROUP BY date, repo",
        [dates[0], dates[-1]],
    ).fetchall():
        if day in index and repo in repos:
            repo_minutes[index[day], repos.index(repo)] = minutes or 0.0
    estimate = CodingTimeEstimate(
        first_day=first_day,
        n_days=n_days,
        bin_minutes=int(report["bin_minutes"]),
        coding_minutes=columns[0],
        git_hours_minutes=columns[1],
        timeout_minutes=columns[2],
        sessions=np.array(report["sessions"], dtype=np.int64).reshape(-1, 2),
        heatmap=np.array(report["heatmap"], dtype=np.float64).reshape(7, 24),
        presence=np.array(report["presence"], dtype=np.float64).reshape(7, 24),
        peak_hours=[int(h) for h in report["peak_hours"]],
        review_windows=[ReviewWindow(*map(int, w)) for w in report["review_windows"]],
        event_counts={str(k): int(v) for k, v in report["event_counts"].items()},
        fit=None,
    )
    by_repo = RepoDays(
        first_day,
        repos,
        repo_minutes,
        np.array([int(report["repos"][repo]) for repo in repos], dtype=np.int64),
    )
    return StoredEstimate(
        estimate=estimate,
        by_repo=by_repo,
        identities=list(report.get("identities", [])),
        zone=str(zone),
        computed_at=float(computed_at),
        trigger=str(trigger),
        events_through_id=int(through or 0),
        fingerprint=str(fingerprint),
        model=dict(report.get("model", {})),
        model_version_id=version_id,
    )


def events_recorded_since(db: Connection | None, stored: StoredEstimate) -> int:
    """Activity events the ledger recorded after the stored estimate was computed."""
    if db is None:
        return 0
    row = db.execute(
        "SELECT COUNT(*) FROM activity_events WHERE id > ?", [stored.events_through_id]
    ).fetchone()
    return int(row[0])


def local_day(utc_seconds: float, zone: str) -> date:
    """The calendar day of a moment in a time zone."""
    return datetime.fromtimestamp(utc_seconds, ZoneInfo(zone)).date()


def day_number(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def day_of(local_seconds: float) -> date:
    """The calendar day of local seconds (epoch seconds shifted by the UTC offset)."""
    return date.fromordinal(date(1970, 1, 1).toordinal() + int(local_seconds // SECONDS_PER_DAY))


TRIGGER_WORDS = {
    "commit": "a commit",
    "saves": "saves settled",
    "start": "the agent started",
    "nightly": "the nightly refit",
}


def counted(number: int, noun: str) -> str:
    """'1 save', '2 saves', '0 commits'."""
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def freshness_note(stored: StoredEstimate | None, newer_events: int) -> str:
    """One line on how current the stored estimate is, shown beside its numbers.

    Example: 'estimated at 14:05 after a commit' or 'provisional: 3 events recorded since
    14:05 are not counted yet (the agent re-estimates once activity settles)'.
    """
    if stored is None:
        return (
            "not estimated yet: the agent stores an estimate shortly after a commit, or a few "
            "minutes after saves settle"
        )
    at = datetime.fromtimestamp(stored.computed_at, ZoneInfo(stored.zone)).strftime("%H:%M")
    if newer_events:
        return (
            f"provisional: {counted(newer_events, 'event')} recorded since {at} "
            f"{'is' if newer_events == 1 else 'are'} not counted yet (the agent re-estimates "
            "once activity settles)"
        )
    when = TRIGGER_WORDS.get(stored.trigger, stored.trigger)
    return f"estimated at {at} after {when}"


@dataclass
class TodayCoding:
    """Today's and this week's coding minutes from the stored estimate, and how current."""

    minutes: float | None  # None: nothing stored yet
    week_minutes: float
    newer_events: int  # events recorded since the estimate (not counted in it yet)
    note: str

    @property
    def provisional(self) -> bool:
        """True while the estimate misses events (or there is none yet)."""
        return self.minutes is None or self.newer_events > 0


def today_coding(db: Connection | None, now: float | None = None) -> TodayCoding:
    """What the Overview, the tray and the daily notice say about today."""
    stored = read_stored(db)
    newer = events_recorded_since(db, stored) if stored is not None else 0
    note = freshness_note(stored, newer)
    if stored is None:
        return TodayCoding(None, 0.0, 0, note)
    now = time.time() if now is None else now
    today = local_day(now, stored.zone)
    monday = day_number(today) - today.weekday()
    first = stored.estimate.first_day
    week = stored.estimate.coding_minutes[max(0, monday - first) : day_number(today) - first + 1]
    return TodayCoding(
        minutes=stored.minutes_on(today) or 0.0,
        week_minutes=float(week.sum()),
        newer_events=newer,
        note=note,
    )
