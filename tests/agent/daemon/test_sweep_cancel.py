"""The agent's `cancel` method given a sweep id cancels every point of the sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.client import AgentClient
from agent.paths import WatchkeeperPaths
from tests.agent.daemon.test_service import agent_factory  # noqa: F401 (a fixture)
from tests.agent.runs.processes import group_gone
from tests.agent.runs.test_sweeps import (
    first_running_pid,
    run_states,
    start_waiting_sweep,
    versions,
)
from tests.support import wait_for


def test_cancel_of_a_sweep_id_through_the_agent_cancels_every_point(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    agent_factory()
    _, process = start_waiting_sweep(tmp_path, "--parallel", "2")
    wait_for(lambda: run_states().count("running") == 2, 60, "two points to run")
    pid = first_running_pid()
    sweep_id = versions()[0]["sweep_id"]
    client = AgentClient.connect(paths.socket, timeout=30)
    reply = client.call("cancel", run=sweep_id[-6:])
    assert reply["sweep"] == sweep_id
    assert (reply["queued"], reply["running"]) == (1, 2)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 1, errors
    assert group_gone(pid)
    assert run_states() == ["cancelled"] * 3
