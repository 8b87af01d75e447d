"""The agent streams step metrics as `run_steps` events, for runs it starts and runs it polls."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from agent.client import AgentClient
from agent.paths import WatchkeeperPaths
from tests.agent.daemon.conftest import make_repo
from tests.agent.daemon.test_service import (  # noqa: F401 (agent_factory is a fixture)
    REPO_ROOT,
    EventStream,
    agent_factory,
    count,
)
from tests.agent.runs.gitrepo import PYTHON

STEPS_TRAIN = textwrap.dedent(
    """\
    import json, os, pathlib, time

    def wait_for_file(name):
        print("waiting for", name, flush=True)
        deadline = time.time() + 60
        while not pathlib.Path(os.environ["WK_RUN_DIR"], name).exists():
            if time.time() > deadline:
                raise SystemExit(name + " never came")
            time.sleep(0.02)

    with open(os.environ["WK_METRICS"], "a", buffering=1) as steps:
        wait_for_file("go")
        lines = [json.dumps({"step": step, "loss": 1 - step / 10}) for step in range(3)]
        steps.write("\\n".join(lines) + "\\n")  # one write: a reader sees all three
        wait_for_file("release")
        steps.write(json.dumps({"step": 3, "loss": 0.5}) + "\\n")
    pathlib.Path("model.txt").write_text("w")
    """
)


SPEC = textwrap.dedent(
    f"""\
    [models.churn]
    train = "{PYTHON} train.py"
    deps = ["train.py"]
    outs = ["model.txt"]
    """
)


def steps_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"train.py": STEPS_TRAIN, "watchkeeper.toml": SPEC})


def touch(paths: WatchkeeperPaths, run_id: str, name: str) -> None:
    (paths.runs / run_id / name).touch()


def final_loss(paths: WatchkeeperPaths) -> float:
    connection = sqlite3.connect(f"file:{paths.ledger}?mode=ro", uri=True, timeout=10)
    try:
        row = connection.execute("SELECT metrics FROM model_versions").fetchone()
    finally:
        connection.close()
    return float(json.loads(row[0])["loss"])


def test_a_run_the_agent_starts_streams_its_steps(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = steps_repo(tmp_path)
    agent_factory()
    events = EventStream(paths.socket, ["run_state", "run_steps"])
    try:
        with AgentClient.connect(paths.socket) as client:
            started = client.call("train", model="churn", repo=str(repo))
        touch(paths, started["run"], "go")
        first = events.next("run_steps", run=started["run"], timeout=30)
        assert first["points"]["loss"] == {"steps": [0.0, 1.0, 2.0], "values": [1.0, 0.9, 0.8]}
        assert (first["lines"], first["skipped"]) == (3, 0)
        touch(paths, started["run"], "release")
        events.next("run_state", run=started["run"], state="succeeded", timeout=60)
    finally:
        events.close()
    assert count(paths, "SELECT sum(points) FROM step_metrics") == 4
    assert final_loss(paths) == 0.5


def test_a_polled_run_whose_supervisor_died_streams_its_steps(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = steps_repo(tmp_path)
    agent_factory()
    events = EventStream(paths.socket, ["run_state", "run_steps"])
    trainer = subprocess.Popen(
        [sys.executable, "-m", "agent", "train", "churn"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert trainer.stdout is not None
        assert trainer.stdout.readline() == b"waiting for go\n"
        trainer.kill()  # the supervising command dies before the run writes any step
        trainer.wait(10)
        run_id = only_run_id(paths)
        touch(paths, run_id, "go")
        polled = events.next("run_steps", run=run_id, timeout=30)
        assert polled["points"]["loss"]["values"] == [1.0, 0.9, 0.8]
        touch(paths, run_id, "release")
        events.next("run_state", run=run_id, state="succeeded", timeout=60)
    finally:
        trainer.kill()
        events.close()
    assert count(paths, "SELECT sum(points) FROM step_metrics") == 4
    assert final_loss(paths) == 0.5


def only_run_id(paths: WatchkeeperPaths) -> str:
    connection = sqlite3.connect(f"file:{paths.ledger}?mode=ro", uri=True, timeout=10)
    try:
        return str(connection.execute("SELECT id FROM runs").fetchone()[0])
    finally:
        connection.close()
