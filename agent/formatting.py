"""How sizes are written for people, the same in the CLI and the app."""

from __future__ import annotations


def format_size(n_bytes: int) -> str:
    """A byte count in binary units, as every command and the app print it.

    >>> format_size(512), format_size(1536), format_size(3 * 1024**3)
    ('512 B', '1.5 KiB', '3.0 GiB')
    """
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n_bytes} B"
