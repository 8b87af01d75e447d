"""Test helpers: CSV tables of synthetic customers, optionally shifted to make drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_table(path: Path, columns: dict[str, list[object]]) -> Path:
    """Write `columns` as a CSV file with a header row and return its path."""
    names = list(columns)
    rows = zip(*columns.values(), strict=True)
    lines = [",".join(names)] + [",".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def customers(
    rng: np.random.Generator,
    n: int,
    *,
    age_shift: float = 0.0,
    city_p: list[float] | None = None,
) -> dict[str, list[object]]:
    """`n` customers: a numeric age (shifted by `age_shift`), income, a city and a plan."""
    city_p = city_p or [0.5, 0.3, 0.2]
    return {
        "age": np.round(rng.normal(40 + age_shift, 10, n), 2).tolist(),
        "income": np.round(rng.lognormal(10, 0.5, n), 2).tolist(),
        "city": rng.choice(["paris", "lyon", "nice"], n, p=city_p).tolist(),
        "plan": rng.choice([1, 2, 3], n).tolist(),  # numbers, but only 3 distinct: categorical
    }
