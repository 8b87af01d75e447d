"""A self-contained HTML coding-time report with inline SVG charts (no scripts, no downloads)."""

from __future__ import annotations

import html
import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from agent.activity.coding_time import SECONDS_PER_DAY
from agent.activity.coding_time.by_repo import RepoDays
from agent.activity.coding_time_store import counted
from agent.activity.estimates import PersonalReport

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SERIES = (
    ("HMM", "coding_minutes", "#1f77b4", ""),
    ("git-hours", "git_hours_minutes", "#d62728", "6 4"),
    ("15-min timeout", "timeout_minutes", "#2ca02c", "2 3"),
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: right; }
th { border-bottom: 1px solid #999; } .note { color: #666; font-size: 0.9em; }
svg text { font-size: 11px; fill: #444; }
"""


def _daily_chart(report: PersonalReport) -> str:
    estimate = report.estimate
    width, height, left, bottom, top = 1000, 280, 50, 30, 10
    n = estimate.n_days
    series = {key: np.asarray(getattr(estimate, key), dtype=float) for _, key, _, _ in SERIES}
    peak = max(60.0, max(float(v.max()) if v.size else 0.0 for v in series.values()))
    plot_w, plot_h = width - left - 10, height - bottom - top

    def x(i: float) -> float:
        return left + (i + 0.5) * plot_w / max(n, 1)

    def y(v: float) -> float:
        return top + plot_h - v / peak * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}">']
    for tick in np.linspace(0, peak, 5):
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.0f}</text>'
        )
    dates = estimate.dates
    for i in range(0, n, max(1, n // 8)):
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle">{dates[i]}</text>'
        )
    slot = plot_w / max(n, 1)
    for index, (label, key, color, dash) in enumerate(SERIES):
        values = series[key]
        if n == 1:  # one day: a bar per series with a point on top
            bar_w = slot / 8
            bx = x(0) + (index - 1) * bar_w * 1.5 - bar_w / 2
            parts.append(
                f'<rect x="{bx:.1f}" y="{y(values[0]):.1f}" width="{bar_w:.1f}" '
                f'height="{y(0) - y(values[0]):.1f}" fill="{color}" fill-opacity="0.35">'
                f"<title>{html.escape(label)}: {values[0]:.0f} min</title></rect>"
                f'<circle cx="{bx + bar_w / 2:.1f}" cy="{y(values[0]):.1f}" r="4" '
                f'fill="{color}"/>'
            )
            continue
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash_attr} '
            f'points="{points}"><title>{html.escape(label)}</title></polyline>'
        )
    for index, (label, _, color, dash) in enumerate(SERIES):
        lx = left + 10 + index * 150
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{lx}" x2="{lx + 24}" y1="{height + 10}" y2="{height + 10}" '
            f'stroke="{color}" stroke-width="2"{dash_attr}/>'
            f'<text x="{lx + 30}" y="{height + 14}">{html.escape(label)}</text>'
        )
    parts.append(f'<text x="4" y="{top + 10}">min</text></svg>')
    return "".join(parts)


REPO_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def _repo_chart(report: PersonalReport, by_repo: RepoDays) -> str:
    """Coding minutes per day stacked by repo (the largest repos in colour, the rest grey)."""
    dates = report.estimate.dates
    n = min(len(dates), by_repo.minutes.shape[0])
    order = by_repo.order()
    shown = order[: len(REPO_COLORS)]
    layers = [
        (by_repo.repos[r], by_repo.minutes[:n, r], REPO_COLORS[i]) for i, r in enumerate(shown)
    ]
    if len(order) > len(shown):
        rest = by_repo.minutes[:n, order[len(shown) :]].sum(axis=1)
        layers.append((f"{len(order) - len(shown)} more repos", rest, "#999"))
    width, height, left, bottom, top = 1000, 240, 50, 30, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(60.0, float(by_repo.minutes[:n].sum(axis=1).max()) if n else 0.0)
    slot = plot_w / max(n, 1)
    bar_w = max(1.0, min(slot * 0.8, 60.0))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}">']
    for tick in np.linspace(0, peak, 5):
        ty = top + plot_h - tick / peak * plot_h
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{tick:.0f}</text>'
        )
    for i in range(0, n, max(1, n // 8)):
        parts.append(
            f'<text x="{left + (i + 0.5) * slot:.1f}" y="{height - 8}" '
            f'text-anchor="middle">{dates[i]}</text>'
        )
    base = np.zeros(n)
    for name, values, color in layers:
        for i in range(n):
            if values[i] <= 0:
                continue
            bar_h = values[i] / peak * plot_h
            y0 = top + plot_h - base[i] / peak * plot_h - bar_h
            parts.append(
                f'<rect x="{left + (i + 0.5) * slot - bar_w / 2:.1f}" y="{y0:.1f}" '
                f'width="{bar_w:.1f}" height="{bar_h:.1f}" fill="{color}">'
                f"<title>{html.escape(name)} {dates[i]}: {values[i]:.0f} min</title></rect>"
            )
        base = base + values
    for index, (name, _, color) in enumerate(layers):
        lx = left + 10 + index * 140
        parts.append(
            f'<rect x="{lx}" y="{height + 4}" width="12" height="12" fill="{color}"/>'
            f'<text x="{lx + 16}" y="{height + 14}">{html.escape(_short(name))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(repo: str) -> str:
    return Path(repo).name or repo if repo.startswith("/") else repo


def _repo_table(report: PersonalReport, by_repo: RepoDays) -> str:
    totals = by_repo.totals
    whole = max(float(totals.sum()), 1e-12)
    rows = "".join(
        f'<tr><td style="text-align:left">{html.escape(by_repo.repos[r])}</td>'
        f"<td>{totals[r] / 60:.1f}</td><td>{totals[r] / whole:.0%}</td>"
        f"<td>{int(by_repo.events[r]):,}</td></tr>"
        for r in by_repo.order()
    )
    return (
        '<table><tr><th style="text-align:left">repo</th><th>HMM hours</th><th>share</th>'
        f"<th>events</th></tr>{rows}</table>"
    )


def _heatmap(values: np.ndarray) -> str:
    cell, left, top = 34, 40, 18
    peak = max(float(values.max()), 1e-9)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + 24 * cell + 10}" '
        f'height="{top + 7 * cell + 10}">'
    ]
    for hour in range(24):
        parts.append(
            f'<text x="{left + hour * cell + cell / 2}" y="{top - 5}" '
            f'text-anchor="middle">{hour}</text>'
        )
    for day in range(7):
        parts.append(f'<text x="4" y="{top + day * cell + cell / 2 + 4}">{WEEKDAYS[day]}</text>')
        for hour in range(24):
            minutes = float(values[day, hour])
            shade = minutes / peak
            color = (
                f"rgb({int(255 - 224 * shade)},{int(255 - 136 * shade)},{int(255 - 75 * shade)})"
            )
            parts.append(
                f'<rect x="{left + hour * cell}" y="{top + day * cell}" width="{cell - 2}" '
                f'height="{cell - 2}" fill="{color}"><title>{WEEKDAYS[day]} {hour}:00 '
                f"{minutes:.1f} min/week</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _sessions_chart(report: PersonalReport, max_days: int = 28) -> str:
    sessions = report.estimate.sessions
    if sessions.shape[0] == 0:
        return '<p class="note">No coding sessions found.</p>'
    days = np.unique(np.floor_divide(sessions[:, 0], SECONDS_PER_DAY))[-max_days:]
    row, left, top, width = 18, 90, 16, 960
    hour_w = (width - left) / 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 10}" '
        f'height="{top + row * len(days) + 10}">'
    ]
    for hour in range(0, 25, 3):
        parts.append(
            f'<line x1="{left + hour * hour_w:.1f}" x2="{left + hour * hour_w:.1f}" y1="{top}" '
            f'y2="{top + row * len(days)}" stroke="#eee"/>'
            f'<text x="{left + hour * hour_w:.1f}" y="{top - 4}" text-anchor="middle">{hour}'
            "</text>"
        )
    position = {int(day): index for index, day in enumerate(days)}
    for index, day in enumerate(days):
        label = (datetime(1970, 1, 1) + timedelta(days=int(day))).strftime("%a %Y-%m-%d")
        parts.append(f'<text x="4" y="{top + index * row + 13}">{label}</text>')
    for start, end in sessions.tolist():
        day = start // SECONDS_PER_DAY
        if day not in position:
            continue
        begin_h = (start - day * SECONDS_PER_DAY) / 3600
        end_h = min(24.0, (end - day * SECONDS_PER_DAY) / 3600)
        parts.append(
            f'<rect x="{left + begin_h * hour_w:.1f}" y="{top + position[day] * row + 3}" '
            f'width="{max(1.0, (end_h - begin_h) * hour_w):.1f}" height="{row - 6}" '
            f'fill="#1f77b4"><title>{begin_h:.2f}h-{end_h:.2f}h</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: PersonalReport, by_repo: RepoDays | None = None, note: str = "") -> str:
    """The report as one HTML document (with where the time went when `by_repo` is given)."""
    estimate = report.estimate
    totals = (
        estimate.coding_minutes.sum() / 60,
        estimate.git_hours_minutes.sum() / 60,
        estimate.timeout_minutes.sum() / 60,
    )
    windows = (
        "".join(
            f"<li>{WEEKDAYS[w.weekday]} {w.start_hour:02d}:00-{w.end_hour:02d}:00</li>"
            for w in estimate.review_windows
        )
        or "<li>none found</li>"
    )
    peaks = ", ".join(f"{h:02d}:00" for h in estimate.peak_hours) or "none"
    who = html.escape(", ".join(report.authors) or "events file")
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report.warnings)
    dates = estimate.dates
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Coding time {html.escape(dates[0])} to {html.escape(dates[-1])}</title>
<style>{STYLE}</style></head><body>
<h1>Coding time: {who}</h1>
<p>{html.escape(dates[0])} to {html.escape(dates[-1])} in {html.escape(str(report.zone))},
{estimate.bin_minutes}-minute bins, {counted(estimate.event_counts.get("commit", 0), "commit")}
and {counted(estimate.event_counts.get("save", 0), "save")}.</p>
{f'<p class="note">{html.escape(note)}</p>' if note else ""}
{f'<ul class="note">{warnings}</ul>' if warnings else ""}
<table><tr><th></th><th>HMM</th><th>git-hours</th><th>15-min timeout</th></tr>
<tr><td>total hours</td><td>{totals[0]:.1f}</td><td>{totals[1]:.1f}</td>
<td>{totals[2]:.1f}</td></tr></table>
<h2>Minutes per day</h2>{_daily_chart(report)}
{_repo_section(report, by_repo)}
<h2>When you code (mean minutes per week in each hour)</h2>{_heatmap(estimate.heatmap)}
<p>Peak hours: {peaks}</p>
<h2>Good hours to ask for a review</h2><ul>{windows}</ul>
<p class="note">Hours when you are usually at work (present at least a quarter of the time
and at least half as often as in your most present hour) but not among your deep-coding
hours (the top quarter by share of time spent coding).</p>
<h2>Sessions (most recent {min(28, estimate.n_days)} days with coding)</h2>
{_sessions_chart(report)}
</body></html>
"""


def _repo_section(report: PersonalReport, by_repo: RepoDays | None) -> str:
    if by_repo is None or not by_repo.repos:
        return ""
    return (
        "<h2>Where the time went (coding minutes per day, by repo)</h2>"
        f"{_repo_chart(report, by_repo)}{_repo_table(report, by_repo)}"
        f'<p class="note">Each {report.estimate.bin_minutes}-minute bin\'s coding minutes are '
        "shared among the repos of its events; a bin without events goes to the repo worked on "
        "just before.</p>"
    )


def write_html(
    report: PersonalReport, path: Path, *, by_repo: RepoDays | None = None, note: str = ""
) -> None:
    """Write the report atomically to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(render_html(report, by_repo, note), encoding="utf-8")
    os.replace(temporary, path)
