"""Step metrics: the JSON lines a run appends to `$WK_METRICS`, parsed and stored per version.

A line is a JSON object such as `{"step": 10, "loss": 0.31, "acc": 0.88}`. Each numeric value
(other than `step`) is one point of the metric of that name; `step` is the x of the points, or,
when a line has none, the number of lines read before it. Other values (strings, lists) are
left out. A line that is not a JSON object is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from agent.ledger import write_transaction
from agent.runs.executor import STEP_METRICS_FILE, Executor, Run

STEP_KEY = "step"
SKIPPED_EXCERPT_CHARS = 80
EVENT_POINTS = 2000  # the most points of one metric a `run_steps` event carries
STEP_BATCH_BYTES = 1 << 20  # the most of $WK_METRICS parsed and stored in one transaction


def encode_floats(values: Iterable[float]) -> bytes:
    """Little-endian float64 bytes, the encoding of `step_metrics.steps_f8` and `values_f8`.

    >>> encode_floats([1.0, 2.5]).hex()
    '000000000000f03f0000000000000440'
    """
    packed = array("d", values)
    if array("d", [1.0]).tobytes()[0] != 0:  # a big-endian host
        packed.byteswap()
    return packed.tobytes()


def decode_floats(blob: bytes) -> list[float]:
    """The floats of `encode_floats` bytes (a list; `step_queries` reads them as numpy arrays)."""
    packed = array("d")
    packed.frombytes(blob)
    if array("d", [1.0]).tobytes()[0] != 0:
        packed.byteswap()
    return packed.tolist()


@dataclass
class StepBatch:
    """The points parsed from a run of lines: name -> (steps, values), and what was skipped."""

    points: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    lines: int = 0
    skipped: int = 0
    first_skipped: str | None = None
    last_values: dict[str, float] = field(default_factory=dict)
    last_step: float | None = None

    def extend(self, later: StepBatch) -> None:
        """Add the batch of the lines that followed this one."""
        for name, (steps, values) in later.points.items():
            mine = self.points.setdefault(name, ([], []))
            mine[0].extend(steps)
            mine[1].extend(values)
        self.lines += later.lines
        self.skipped += later.skipped
        self.first_skipped = self.first_skipped or later.first_skipped
        self.last_values.update(later.last_values)
        if later.last_step is not None:
            self.last_step = later.last_step

    def as_event(self) -> dict[str, Any]:
        """The batch as a JSON-ready `run_steps` event payload (non-finite values as None).

        Each metric carries at most EVENT_POINTS of its newest points; `complete` is false
        when some were left out (the ledger has them all).
        """
        return {
            "lines": self.lines,
            "skipped": self.skipped,
            "complete": all(len(v) <= EVENT_POINTS for _, v in self.points.values()),
            "points": {
                name: {
                    "steps": steps[-EVENT_POINTS:],
                    "values": [_finite_or_none(v) for v in values[-EVENT_POINTS:]],
                }
                for name, (steps, values) in self.points.items()
            },
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_step_lines(data: bytes, first_line: int, lines_before: int) -> StepBatch:
    """Parse complete lines (`data` ends at a newline, or is the file's end).

    `first_line` is the 1-based line number of the first line of `data`; `lines_before` the
    number of lines accepted before it (the default step of a line without `step`).

    >>> batch = parse_step_lines(b'{"step": 1, "loss": 0.5}\\nnot json\\n{"loss": 0.25}\\n', 1, 0)
    >>> batch.points["loss"], batch.skipped, batch.first_skipped
    (([1.0, 1.0], [0.5, 0.25]), 1, 'line 2: not json')
    """
    batch = StepBatch()
    accepted = lines_before
    for number, raw in enumerate(data.split(b"\n"), start=first_line):
        text = raw.strip()
        if not text:
            continue
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            document = None
        step: Any = document.get(STEP_KEY, accepted) if isinstance(document, dict) else None
        if not isinstance(document, dict) or not _is_number(step):
            batch.skipped += 1
            if batch.first_skipped is None:
                excerpt = text.decode(errors="replace")[:SKIPPED_EXCERPT_CHARS]
                batch.first_skipped = f"line {number}: {excerpt}"
            continue
        accepted += 1
        batch.lines += 1
        x = batch.last_step = float(step)
        for name, value in document.items():
            if name == STEP_KEY or not _is_number(value):
                continue
            steps, values = batch.points.setdefault(name, ([], []))
            steps.append(x)
            values.append(float(value))
            batch.last_values[name] = float(value)
    return batch


@dataclass
class StepProgress:
    """How far a run's `$WK_METRICS` has been read into the ledger (`step_metric_reads`)."""

    byte_offset: int = 0
    lines: int = 0
    skipped: int = 0
    first_skipped: str | None = None
    last_values: dict[str, float] = field(default_factory=dict)
    file_lines: int = 0  # lines of the file consumed, blank ones included

    @property
    def final_metrics(self) -> dict[str, float]:
        """The last finite value of each metric (what becomes a final metric)."""
        return {name: value for name, value in self.last_values.items() if math.isfinite(value)}


def step_progress(db: Database, run_id: str) -> StepProgress:
    """The recorded progress of a run (zeros when nothing was read yet)."""
    row = db.execute(
        "SELECT byte_offset, lines, skipped, first_skipped, last_values, file_lines "
        "FROM step_metric_reads "
        "WHERE run_id = ?",
        [run_id],
    ).fetchone()
    if row is None:
        return StepProgress()
    stored = json.loads(row[4] or "{}")
    return StepProgress(
        byte_offset=row[0],
        lines=row[1],
        skipped=row[2],
        first_skipped=row[3],
        last_values={k: float(v) if v is not None else math.nan for k, v in stored.items()},
        file_lines=row[5],
    )


def complete_part(chunk: bytes, final: bool) -> bytes:
    """The part of `chunk` made of whole lines; at the end of a run, everything."""
    if final:
        return chunk
    end = chunk.rfind(b"\n")
    return chunk[: end + 1] if end >= 0 else b""


def record_steps(
    db: Database, run_id: str, version_id: int, offset: int, chunk: bytes, *, final: bool = False
) -> StepBatch | None:
    """Store the points of `chunk` (the file's bytes from `offset`) for the run's version.

    Only whole lines are taken unless `final`. The write happens only when the ledger's offset
    for the run still equals `offset`, so two readers never store a line twice; returns None
    when another reader got there first, else the batch stored (possibly empty).
    """
    data = complete_part(chunk, final)
    progress = step_progress(db, run_id)
    if progress.byte_offset != offset:
        return None
    batch = parse_step_lines(data, progress.file_lines + 1, progress.lines)  # outside the lock
    if not data:
        return batch
    with write_transaction(db):
        if step_progress(db, run_id) != progress:
            return None
        for name, (steps, values) in batch.points.items():
            db.execute(
                "INSERT INTO step_metrics (version_id, run_id, name, first_line, points, "
                "steps_f8, values_f8) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    version_id,
                    run_id,
                    name,
                    progress.lines,
                    len(values),
                    encode_floats(steps),
                    encode_floats(values),
                ],
            )
        last_values = {**progress.last_values, **batch.last_values}
        db.execute(
            "INSERT INTO step_metric_reads (run_id, version_id, byte_offset, lines, skipped, "
            "first_skipped, last_values, file_lines) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET byte_offset = excluded.byte_offset, "
            "lines = excluded.lines, skipped = excluded.skipped, "
            "file_lines = excluded.file_lines, "
            "first_skipped = excluded.first_skipped, last_values = excluded.last_values",
            [
                run_id,
                version_id,
                offset + len(data),
                progress.lines + batch.lines,
                progress.skipped + batch.skipped,
                progress.first_skipped or batch.first_skipped,
                json.dumps({k: _finite_or_none(v) for k, v in last_values.items()}),
                progress.file_lines + data.count(b"\n") + (0 if data.endswith(b"\n") else 1),
            ],
        )
    return batch


def compact_steps(db: Database, run_id: str) -> None:
    """Merge a finished run's chunks into one per metric, so that loading it is one read."""
    with write_transaction(db):
        names = [
            row[0]
            for row in db.execute(
                "SELECT name FROM step_metrics WHERE run_id = ? GROUP BY name HAVING count(*) > 1",
                [run_id],
            ).fetchall()
        ]
        for name in names:
            rows = db.execute(
                "SELECT version_id, first_line, steps_f8, values_f8 FROM step_metrics "
                "WHERE run_id = ? AND name = ? ORDER BY first_line",
                [run_id, name],
            ).fetchall()
            steps = b"".join(row[2] for row in rows)
            values = b"".join(row[3] for row in rows)
            db.execute("DELETE FROM step_metrics WHERE run_id = ? AND name = ?", [run_id, name])
            db.execute(
                "INSERT INTO step_metrics (version_id, run_id, name, first_line, points, "
                "steps_f8, values_f8) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [rows[0][0], run_id, name, rows[0][1], len(values) // 8, steps, values],
            )


def skipped_warning(progress: StepProgress) -> str | None:
    """One line about the skipped lines of $WK_METRICS, or None when none was skipped."""
    if not progress.skipped:
        return None
    what = "line" if progress.skipped == 1 else "lines"
    verb = "is not a JSON object" if progress.skipped == 1 else "are not JSON objects"
    return (
        f"skipped {progress.skipped} {what} of $WK_METRICS ({STEP_METRICS_FILE}) that {verb} "
        f"with a numeric step (first: {progress.first_skipped}); write one JSON object per "
        'line, e.g. {"step": 10, "loss": 0.31}'
    )


def describe_batch(batch: StepBatch) -> str:
    """A short line about the newest point of a batch, as `runs logs --follow` prints it.

    >>> describe_batch(parse_step_lines(b'{"step": 3, "loss": 0.5, "acc": 0.75}', 1, 0))
    'step 3: loss=0.5 acc=0.75'
    """
    step = batch.last_step
    shown = f"{step:g}" if step is not None else "?"
    values = " ".join(f"{name}={value:.6g}" for name, value in batch.last_values.items())
    return f"step {shown}: {values}".rstrip()


def pull_steps(
    db: Database, run: Run, executor: Executor, *, final: bool = False
) -> StepBatch | None:
    """Read what the run appended to `$WK_METRICS` since the ledger's offset and store it.

    At the end of a run (`final`) a last line without its newline is taken too, and the
    run's chunks are merged. Returns the batch stored, or None when there was nothing new.
    """
    version_id = run.detail.get("version_id")
    if version_id is None:
        return None
    offset = step_progress(db, run.id).byte_offset
    chunk = executor.read_steps(run, offset)
    stored = StepBatch()
    start = 0
    while start < len(chunk):
        end = _piece_end(chunk, start)
        last = end == len(chunk)
        batch = record_steps(
            db, run.id, int(version_id), offset + start, chunk[start:end], final=final and last
        )
        consumed = len(complete_part(chunk[start:end], final and last))
        if batch is None or consumed == 0:
            break
        if final:  # the points are in the ledger; only the counts are wanted here
            batch.points, batch.last_values = {}, {}
        stored.extend(batch)
        start += consumed
    if final:
        compact_steps(db, run.id)
    return stored if stored.lines or stored.skipped else None


def _piece_end(chunk: bytes, start: int) -> int:
    """Where the piece of `chunk` stored in one transaction ends: whole lines, about
    STEP_BATCH_BYTES (so that a large file never holds the ledger's write lock for long)."""
    limit = start + STEP_BATCH_BYTES
    if limit >= len(chunk):
        return len(chunk)
    newline = chunk.rfind(b"\n", start, limit)
    if newline < 0:
        newline = chunk.find(b"\n", limit)
    return len(chunk) if newline < 0 else newline + 1
