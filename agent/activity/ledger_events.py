"""File saves the background agent recorded in the ledger, as coding-time events."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.activity.events import EVENT_KINDS, EventTable
from agent.ledger import open_ledger

SAVE = EVENT_KINDS.index("save")


def read_ledger_saves(ledger: Path, repos: Sequence[Path] | None) -> EventTable | None:
    """The `save` rows of `activity_events` for `repos` (every repo when None).

    Returns None when there is no ledger file yet (the agent never ran). Only saves are read:
    commits come from git, which also knows the commits made before the agent ran, so the
    agent's `commit` events would only count some commits twice.
    """
    if not ledger.exists():
        return None
    db = open_ledger(ledger, readonly=True)
    try:
        sql = "SELECT e.ts FROM activity_events e WHERE e.kind = 'save'"
        params: list[str] = []
        if repos is not None:
            params = sorted({str(repo.resolve()) for repo in repos})
            marks = ", ".join("?" for _ in params)
            sql += f" AND e.repo_id IN (SELECT id FROM repos WHERE path IN ({marks}))"
        times = np.array([row[0] for row in db.execute(sql, params)], dtype=np.float64)
    finally:
        db.close()
    return EventTable(times, np.full(times.shape[0], SAVE, dtype=np.int8))
