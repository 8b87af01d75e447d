"""Read a version's step metrics from the ledger as numpy arrays (for the CLI and the app).

Works on a plain read-only `sqlite3.Connection` as well as on the ledger's `Database`; it
imports neither sqlite-utils nor, until a load, numpy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np


class Queryable(Protocol):
    """A sqlite3.Connection or a sqlite_utils.Database."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


@dataclass
class StepSeries:
    """One metric of one version: `steps[i]` is the x of `values[i]`, in the order written."""

    name: str
    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class StepSummary:
    """What a version's step metrics amount to, without loading the points."""

    names: list[str]
    points: int
    lines: int
    skipped: int
    first_skipped: str | None
    last_values: dict[str, float]


def step_metric_names(connection: Queryable, version_id: int) -> list[str]:
    """The metric names with step points for a version, sorted."""
    rows = connection.execute(
        "SELECT DISTINCT name FROM step_metrics WHERE version_id = ? ORDER BY name", [version_id]
    ).fetchall()
    return [row[0] for row in rows]


def load_step_metrics(
    connection: Queryable, version_id: int, names: list[str] | None = None
) -> dict[str, StepSeries]:
    """Every step point of a version (or of `names`), one StepSeries per metric.

    A finished run's metric is one stored chunk, so this is one read per metric and no
    per-point Python work: a million points load in milliseconds.

    >>> from agent.ledger import open_ledger
    >>> load_step_metrics(open_ledger(), version_id=1)
    {}
    """
    import numpy as np

    sql = (
        "SELECT name, steps_f8, values_f8 FROM step_metrics WHERE version_id = ?"
        + (f" AND name IN ({', '.join('?' * len(names))})" if names else "")
        + " ORDER BY name, first_line"
    )
    chunks: dict[str, tuple[list[bytes], list[bytes]]] = {}
    for name, steps, values in connection.execute(sql, [version_id, *(names or [])]):
        parts = chunks.setdefault(name, ([], []))
        parts[0].append(steps)
        parts[1].append(values)
    little_endian = np.dtype("<f8")
    return {
        name: StepSeries(
            name,
            np.frombuffer(b"".join(steps), dtype=little_endian),
            np.frombuffer(b"".join(values), dtype=little_endian),
        )
        for name, (steps, values) in chunks.items()
    }


def step_summary(connection: Queryable, version_id: int) -> StepSummary | None:
    """Counts and last values of a version's step metrics; None when its run wrote none."""
    row = connection.execute(
        "SELECT lines, skipped, first_skipped, last_values FROM step_metric_reads "
        "WHERE version_id = ?",
        [version_id],
    ).fetchone()
    if row is None:
        return None
    counted = connection.execute(
        "SELECT name, sum(points) FROM step_metrics WHERE version_id = ? GROUP BY name "
        "ORDER BY name",
        [version_id],
    ).fetchall()
    last = json.loads(row[3] or "{}")
    return StepSummary(
        names=[name for name, _ in counted],
        points=sum(int(points) for _, points in counted),
        lines=row[0],
        skipped=row[1],
        first_skipped=row[2],
        last_values={k: math.nan if v is None else float(v) for k, v in last.items()},
    )
