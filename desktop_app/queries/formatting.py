"""How the app writes times, durations, minutes, metrics and sizes (sizes as the CLI does)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.formatting import format_size

__all__ = ["format_duration", "format_metrics", "format_minutes", "format_size", "format_time"]


def format_metrics(metrics: dict[str, Any], limit: int = 3) -> str:
    """A short text of the first few metrics, e.g. 'acc=0.912 loss=0.31'."""
    parts = []
    for key, value in list(metrics.items())[:limit]:
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def format_time(epoch: float | None) -> str:
    """Local time as 'YYYY-MM-DD HH:MM' ('' for none)."""
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


def format_duration(seconds: float) -> str:
    """'42s', '3m 05s' or '2h 10m'."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def format_minutes(minutes: float) -> str:
    """'3h 25m' for a number of minutes."""
    whole = round(minutes)
    return f"{whole // 60}h {whole % 60:02d}m"
