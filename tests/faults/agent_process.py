"""Run the real `watchkeeper` CLI and agent as child processes, for the fault tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agent.daemon.lifecycle import process_gone, running_pid
from agent.paths import WatchkeeperPaths
from tests.support import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m agent ARGS` from the checkout with this test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
    )


def kill_agent(paths: WatchkeeperPaths, pid: int | None = None) -> None:
    """SIGKILL the agent (the one holding the lock, or `pid`) and wait until it is gone."""
    for target in {pid, running_pid(paths)}:
        if target and target > 0 and not process_gone(target):
            os.kill(target, signal.SIGKILL)
            wait_for(lambda target=target: process_gone(target))
