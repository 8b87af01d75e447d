"""Fixtures for fault tests: the real sshd of tests/agent/remote, with a hostile remote python.

A hostile remote is a configured remote whose `python` is a wrapper around hostile_python.py:
the helper modes the test attacks answer with bad sizes, garbage or silence, everything else
runs the real python. Its read timeout is short (2 s) so that stalls end fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import agent.remote.executors  # noqa: F401 - registers ssh and slurm before a test patches the registry
from agent.paths import WatchkeeperPaths
from agent.remote.config import RemoteConfig
from tests.agent.remote import conftest as remote_fixtures
from tests.agent.remote.conftest import REMOTE_PYTHON, RemoteFactory
from tests.agent.remote.sshd_server import LoopbackSshd

# The real sshd and the remotes that reach it, as the tests of agent/remote have them.
shared_sshd = remote_fixtures.shared_sshd
make_remote = remote_fixtures.make_remote

HOSTILE_PYTHON = Path(__file__).with_name("hostile_python.py")
FAULT_READ_TIMEOUT = 2.0


@dataclass
class HostileRemote:
    """A remote whose helper misbehaves in one mode, as the plan file says."""

    remote: RemoteConfig
    plan_path: Path

    @property
    def name(self) -> str:
        return self.remote.name

    def attack(self, mode: str, action: str) -> None:
        self.plan_path.write_text(json.dumps({"mode": mode, "action": action}))

    def calm(self) -> None:
        self.plan_path.write_text("{}")

    def pids(self) -> list[int]:
        pid_file = Path(f"{self.plan_path}.pids")
        if not pid_file.exists():
            return []
        return [int(line) for line in pid_file.read_text().split()]

    def end_stand_ins(self) -> None:
        """Kill the hostile helper processes this remote started (stalled ones sleep)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


HostileFactory = Callable[..., HostileRemote]


@pytest.fixture
def hostile_remote(
    shared_sshd: LoopbackSshd, make_remote: RemoteFactory, tmp_path: Path
) -> Iterator[HostileFactory]:
    """Configure remote NAME on the real sshd with the hostile python (calm until attacked)."""
    made: list[HostileRemote] = []

    def make(
        name: str = "gpu1", *, read_timeout: float = FAULT_READ_TIMEOUT, **extra: object
    ) -> HostileRemote:
        plan = tmp_path / f"{name}-plan.json"
        wrapper = tmp_path / f"{name}-python"
        wrapper.write_text(f'#!/bin/sh\nexec {REMOTE_PYTHON} {HOSTILE_PYTHON} {plan} "$@"\n')
        wrapper.chmod(0o755)
        remote = make_remote(
            shared_sshd,
            name,
            python=str(wrapper),
            read_timeout_seconds=read_timeout,
            **extra,
        )
        hostile = HostileRemote(remote, plan)
        hostile.calm()
        made.append(hostile)
        return hostile

    yield make
    for hostile in made:
        hostile.end_stand_ins()


def ledger_is_intact() -> bool:
    """PRAGMA integrity_check of the test's ledger says ok."""
    ledger = WatchkeeperPaths.from_environment().ledger
    connection = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()


def run_rows() -> list[dict[str, Any]]:
    """Every run row of the test's ledger, oldest first, detail decoded."""
    ledger = WatchkeeperPaths.from_environment().ledger
    connection = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=10)
    connection.row_factory = sqlite3.Row
    try:
        rows = [dict(row) for row in connection.execute("SELECT * FROM runs ORDER BY created_at")]
    finally:
        connection.close()
    for row in rows:
        row["detail"] = json.loads(str(row["detail"] or "{}"))
    return rows
