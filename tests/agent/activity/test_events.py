"""The --events JSON Lines reader and the plausibility filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.activity.events import plausible_mask, read_events
from agent.errors import WatchkeeperError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_epoch_and_iso_timestamps_with_offsets(tmp_path: Path) -> None:
    events = read_events(
        write(
            tmp_path / "e.jsonl",
            '{"ts": 1700000000, "kind": "save", "path": "a.py"}\n'
            "\n"
            '{"ts": "2023-11-14T23:13:20+01:00", "kind": "commit"}\n'
            '{"ts": "2023-11-14T22:13:20Z", "kind": "save"}\n'
            '{"ts": 1700000000.5, "kind": "save"}\n',
        )
    )
    assert events.times.tolist() == [1700000000.0, 1700000000.0, 1700000000.0, 1700000000.5]
    assert events.kinds.tolist() == [1, 0, 1, 1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"e.jsonl:2: not valid JSON"),
        ('{"ts": 1700000000}', r"e.jsonl:2: missing \"ts\" or \"kind\""),
        ('{"ts": 1700000000, "kind": "typing"}', r"e.jsonl:2: unknown kind 'typing'"),
        ('{"ts": "2023-11-14T22:13:20", "kind": "save"}', r"e.jsonl:2: .*has no UTC offset"),
        ('{"ts": "yesterday", "kind": "save"}', r"e.jsonl:2: .*neither epoch seconds nor ISO"),
        ('{"ts": true, "kind": "save"}', r"e.jsonl:2: \"ts\" must be"),
        ("[1, 2]", r"e.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_line_names_its_number(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "e.jsonl", '{"ts": 1700000000, "kind": "save"}\n' + line + "\n")
    with pytest.raises(WatchkeeperError, match=message):
        read_events(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WatchkeeperError, match=r"nope.jsonl: no such events file"):
        read_events(tmp_path / "nope.jsonl")


def test_plausible_mask_drops_before_1990_and_future() -> None:
    now = 1_800_000_000.0
    times = np.array([100.0, 631151999.0, 631152000.0, now, now + 2 * 86400])
    assert plausible_mask(times, now).tolist() == [False, False, True, True, False]
