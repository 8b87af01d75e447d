"""Activity events from a JSON Lines file, and the plausibility filter shared with commits."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from agent.errors import WatchkeeperError

EVENT_KINDS = ("commit", "save")
EARLIEST_PLAUSIBLE = 631152000  # 1990-01-01T00:00:00Z
FUTURE_SLACK_SECONDS = 86400


@dataclass
class EventTable:
    """Events as parallel arrays: UTC epoch seconds and kind codes (index into EVENT_KINDS)."""

    times: np.ndarray  # float64
    kinds: np.ndarray  # int8

    def __len__(self) -> int:
        return int(self.times.shape[0])


def _parse_timestamp(value: object, path: Path, line_number: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise WatchkeeperError(
            f'{path}:{line_number}: "ts" must be epoch seconds or an ISO 8601 string with '
            f"a UTC offset, got {value!r}."
        )
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise WatchkeeperError(f'{path}:{line_number}: "ts" is not a finite number.')
        return float(value)
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise WatchkeeperError(
                f'{path}:{line_number}: "ts" {value!r} is neither epoch seconds nor ISO 8601 '
                "(for example 2024-03-01T09:30:00+01:00)."
            ) from None
    if moment.tzinfo is None:
        raise WatchkeeperError(
            f'{path}:{line_number}: "ts" {value!r} has no UTC offset; add one, e.g. {text}+00:00.'
        )
    return moment.timestamp()


def read_events(path: Path) -> EventTable:
    """Read `{"ts": ..., "kind": "commit"|"save"}` objects, one per line; blank lines are skipped.

    Raises WatchkeeperError naming the file and line of the first bad line.
    """
    if not path.is_file():
        raise WatchkeeperError(f"{path}: no such events file.")
    times: list[float] = []
    kinds: list[int] = []
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise WatchkeeperError(
                    f"{path}:{line_number}: not valid JSON ({error}); each line must be one "
                    'object such as {"ts": 1700000000, "kind": "save"}.'
                ) from None
            if not isinstance(record, dict):
                raise WatchkeeperError(f"{path}:{line_number}: expected a JSON object.")
            if "ts" not in record or "kind" not in record:
                raise WatchkeeperError(
                    f'{path}:{line_number}: missing "ts" or "kind"; each line needs both.'
                )
            kind = record["kind"]
            if kind not in EVENT_KINDS:
                raise WatchkeeperError(
                    f'{path}:{line_number}: unknown kind {kind!r}; use "commit" or "save".'
                )
            times.append(_parse_timestamp(record["ts"], path, line_number))
            kinds.append(EVENT_KINDS.index(kind))
    return EventTable(np.asarray(times, dtype=np.float64), np.asarray(kinds, dtype=np.int8))


def plausible_mask(times: np.ndarray, now: float | None = None) -> np.ndarray:
    """True for times from 1990 up to a day past `now` (clock skew); the rest are dropped."""
    now = time.time() if now is None else now
    mask: np.ndarray = (times >= EARLIEST_PLAUSIBLE) & (times <= now + FUTURE_SLACK_SECONDS)
    return mask
