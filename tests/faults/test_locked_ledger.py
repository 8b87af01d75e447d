"""Another process holds the ledger's write lock: the agent retries, shows it, and alerts later."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.client import AgentClient
from agent.paths import WatchkeeperPaths
from tests.agent.daemon.conftest import paths  # noqa: F401 (a fixture)
from tests.agent.daemon.test_service import (  # noqa: F401 (agent_factory is a fixture)
    EventStream,
    agent_factory,
    trained_repo,
)
from tests.support import wait_for


def test_a_held_write_lock_delays_the_alert_but_never_drops_it(
    tmp_path: Path,
    paths: WatchkeeperPaths,  # noqa: F811
    agent_factory: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = trained_repo(tmp_path, paths)
    monkeypatch.setenv("WATCHKEEPER_BUSY_TIMEOUT_MS", "200")
    agent = agent_factory()
    events = EventStream(paths.socket, ["alert"])
    holder = sqlite3.connect(paths.ledger, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer, for as long as this test says
        with (repo / "data" / "train.csv").open("a") as handle:
            handle.write("55,Rome\n")

        def retrying() -> list[dict[str, Any]]:
            with AgentClient.connect(paths.socket) as client:
                return [r for r in client.call("status")["retrying"] if r["attempts"] >= 2]

        [retry] = wait_for(retrying, timeout=20)  # type: ignore[misc]
        assert "locked" in retry["error"]
        holder.execute("ROLLBACK")
        alert = events.next("alert", timeout=30)
        assert alert["cause"] == "data" and alert["model"] == "churn"
        wait_for(lambda: not agent.worker.retries, timeout=20)
    finally:
        holder.close()
        events.close()
