"""One stuck remote never stops the agent from settling other remotes' runs and local runs.

Three `watchkeeper train` commands start runs (local, a healthy remote, a hostile remote) and
are killed, so that only the agent's poller follows the runs. The hostile remote's helper then
stays silent when polled. The healthy runs must settle while the hostile one is still stuck,
and the hostile one must end `failed` with the stall as its reason.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import UserConfig
from agent.daemon.scheduler import ScheduleSettings
from agent.daemon.service import AgentService, AgentSettings
from agent.ledger import open_ledger
from agent.paths import WatchkeeperPaths
from tests.agent.remote.conftest import RemoteFactory
from tests.agent.remote.sshd_server import LoopbackSshd
from tests.agent.runs.gitrepo import cli_command, cli_env, make_repo
from tests.faults.conftest import HostileFactory, ledger_is_intact, run_rows
from tests.faults.support import wait_for

pytestmark = pytest.mark.ssh

STUCK_READ_TIMEOUT = 8.0  # the hostile remote hangs each poll this long, twice

WAITING_TRAIN = (
    "import json, os, pathlib, time\n"
    'release = pathlib.Path(os.environ["WK_RUN_DIR"], "release")\n'
    "deadline = time.time() + 120\n"
    "while not release.exists() and time.time() < deadline:\n"
    "    time.sleep(0.05)\n"
    'pathlib.Path("model.pkl").write_text("weights")\n'
    'json.dump({"auc": 0.5}, open("metrics.json", "w"))\n'
)


def model_table(name: str, remote: str) -> str:
    return (
        f"[models.{name}]\n"
        'train = "python train.py"\n'
        'deps = ["train.py"]\n'
        'outs = ["model.pkl"]\n'
        'metrics = "metrics.json"\n'
        f'remote = "{remote}"\n'
    )


@pytest.fixture
def agent() -> Iterator[Callable[[], AgentService]]:
    """Starts the agent, polling runs every half second; stopped at the end of the test."""
    started: list[AgentService] = []

    def start() -> AgentService:
        paths = WatchkeeperPaths.from_environment().ensure()
        schedule = ScheduleSettings(rescan_minutes=15, run_poll_seconds=0.5)
        service = AgentService(
            paths, config=UserConfig.load(paths.config), settings=AgentSettings(schedule=schedule)
        )
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def start_orphaned_runs(root: Path, models: list[str]) -> None:
    """Train each model with a real CLI process, then kill -9 those once their runs run."""
    open_ledger().close()  # the schema exists before the commands race to create it
    commands = [
        subprocess.Popen(
            cli_command("train", model),
            cwd=root,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for model in models
    ]
    try:
        wait_for(
            lambda: sum(row["state"] == "running" for row in ledger_rows()) == len(models),
            timeout=90,
            what="every run to be running",
        )
    finally:
        for command in commands:
            command.kill()
            command.wait()


def ledger_rows() -> list[dict[str, Any]]:
    return run_rows()


def states() -> dict[str, str]:
    return {str(row["detail"]["model"]): str(row["state"]) for row in ledger_rows()}


def release(row: dict[str, Any]) -> None:
    folder = row["detail"].get("remote_run_dir") or row["run_dir"]
    Path(str(folder), "release").write_text("")


def poller_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("wk-poll-")]


def test_a_stuck_remote_does_not_hold_up_the_other_runs(
    shared_sshd: LoopbackSshd,
    make_remote: RemoteFactory,
    hostile_remote: HostileFactory,
    agent: Callable[[], AgentService],
    tmp_path: Path,
) -> None:
    hostile = hostile_remote("gpu1", read_timeout=STUCK_READ_TIMEOUT)
    make_remote(shared_sshd, "box")
    spec = model_table("stuck", "gpu1") + model_table("healthy", "box")
    spec += model_table("here", "local")
    root = make_repo(tmp_path, files={"train.py": WAITING_TRAIN}, spec=spec)
    start_orphaned_runs(root, ["stuck", "healthy", "here"])
    hostile.attack("poll", "silent")
    for row in ledger_rows():
        release(row)

    agent()  # only now: the runs were never polled before
    wait_for(
        lambda: states()["healthy"] == "succeeded" and states()["here"] == "succeeded",
        timeout=STUCK_READ_TIMEOUT,
        what="the healthy remote's run and the local run to settle",
    )
    assert states()["stuck"] == "running"  # its poll still waits on the silent helper
    wait_for(lambda: states()["stuck"] == "failed", timeout=60, what="the stuck run to fail")
    assert states() == {"healthy": "succeeded", "here": "succeeded", "stuck": "failed"}
    (stuck,) = [row for row in ledger_rows() if row["detail"]["model"] == "stuck"]
    problem = str(stuck["detail"]["problem"])
    assert problem.startswith(f"remote gpu1: no data for {STUCK_READ_TIMEOUT:g} s"), problem
    assert ledger_is_intact()
    wait_for(lambda: not poller_threads(), timeout=10, what="the poller threads to end")
