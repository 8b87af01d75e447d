"""Append step metrics to $WK_METRICS from a training script: one JSON line per call, cheaply.

This module imports only the standard library, so a run on a remote (where Watchkeeper is
not installed) can use a copy of this file kept in the repo::

    from agent.steplog import log_step        # or: from steplog import log_step (a copy)

    for step in range(epochs):
        ...
        log_step(step, loss=loss, acc=acc)     # {"step": 3, "loss": 0.31, "acc": 0.88}

Lines are written through a buffer that is flushed at most every `flush_seconds` (and at
exit), so a call costs a few microseconds and the learning curve still updates live. Outside
a Watchkeeper run ($WK_METRICS unset) a call does nothing.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import time
from typing import IO, Any

FLUSH_SECONDS = 1.0
BUFFER_BYTES = 1 << 16


def _number(value: Any) -> str:
    """A number as JSON text; NaN and infinities as Python's json module writes them."""
    number = float(value)
    if math.isfinite(number):
        return repr(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)
    return "NaN" if number != number else ("Infinity" if number > 0 else "-Infinity")


class StepLog:
    """An open $WK_METRICS file: `log(step, **values)` appends one line.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "steps.jsonl"
    >>> steps = StepLog(str(path))
    >>> steps.log(1, loss=0.5, acc=1)
    >>> steps.close()
    >>> path.read_text()
    '{"step": 1, "loss": 0.5, "acc": 1}\\n'
    """

    def __init__(self, path: str | None = None, flush_seconds: float = FLUSH_SECONDS) -> None:
        path = path if path is not None else os.environ.get("WK_METRICS")
        self._file: IO[str] | None = None
        if path:
            self._file = open(path, "a", buffering=BUFFER_BYTES, encoding="utf-8")  # noqa: SIM115
            atexit.register(self.close)
        self._keys: dict[str, str] = {}
        self._flush_seconds = flush_seconds
        self._flushed_at = time.monotonic()

    def log(self, step: float, **values: float) -> None:
        """Append `{"step": step, name: value, ...}`; values must be numbers (or 0-d arrays)."""
        file = self._file
        if file is None:
            return
        keys = self._keys
        parts = ['{"step": ', str(step) if type(step) is int else _number(step)]
        for name, value in values.items():
            key = keys.get(name)
            if key is None:
                key = keys[name] = f", {json.dumps(name)}: "
            parts.append(key)
            # A finite float is written as is (x - x is 0 only when x is finite).
            is_plain = type(value) is float and value - value == 0
            parts.append(repr(value) if is_plain else _number(value))
        parts.append("}\n")
        file.write("".join(parts))
        now = time.monotonic()
        if now - self._flushed_at >= self._flush_seconds:
            file.flush()
            self._flushed_at = now

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._flushed_at = time.monotonic()

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


_default: StepLog | None = None


def log_step(step: float, **values: float) -> None:
    """Append one line to $WK_METRICS (opened on the first call); nothing outside a run."""
    global _default
    if _default is None:
        _default = StepLog()
    _default.log(step, **values)
