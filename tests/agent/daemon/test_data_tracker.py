"""The agent's data tracker: a snapshot per change, with the entries it had to leave out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.daemon.ingest import DataTracker
from agent.data.fingerprint import SkippedEntry, StatCache
from agent.ledger import open_ledger


@pytest.mark.timeout(30)
def test_a_pipe_in_a_data_folder_is_reported_not_fatal_and_not_a_change(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n1,2\n")
    db = open_ledger()
    tracker = DataTracker(cache=StatCache.in_memory())
    first = tracker.snapshot(db, data)
    os.mkfifo(data / "feed")
    second = tracker.snapshot(db, data)
    assert second.skipped == (SkippedEntry("feed", "named pipe (FIFO)"),)
    assert second.event["skipped"] == [{"path": "feed", "reason": "named pipe (FIFO)"}]
    assert not second.changed and second.snapshot_id == first.snapshot_id
    assert first.skipped == ()
