"""The local executor on a real run layout, and the registry that picks executors by kind."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from agent.config import UserConfig
from agent.errors import WatchkeeperError
from agent.runs.executor import (
    EXECUTOR_FACTORIES,
    LocalExecutor,
    Run,
    RunState,
    executor_for,
    register_executor,
)
from agent.runs.layout import write_run_script
from tests.agent.runs.processes import group_gone
from tests.support import wait_for


def make_run(tmp_path: Path, command: str) -> Run:
    run_dir = tmp_path / "run-1"
    (run_dir / "code").mkdir(parents=True)
    (run_dir / "params.json").write_text("{}")
    write_run_script(run_dir, "run-1", "churn", command, ["out.txt"])
    return Run(id="run-1", run_dir=run_dir, executor="local")


def wait_final(executor: LocalExecutor, run: Run, timeout: float = 20) -> RunState:
    def final_state() -> RunState | None:
        state = executor.poll(run)
        return state if state.is_final else None

    return wait_for(final_state, timeout, "the run to finish")


def test_a_run_starts_detached_streams_its_log_and_collects(tmp_path: Path) -> None:
    run = make_run(tmp_path, "echo one; echo $WK_RUN_DIR > out.txt; echo two >&2")
    executor = LocalExecutor()
    executor.start(run)
    assert run.pid and run.host
    assert os.getpgid(run.pid) == run.pid  # its own process group
    assert wait_final(executor, run) is RunState.SUCCEEDED
    assert executor.read_log(run, 0) == b"one\ntwo\n"
    assert executor.read_log(run, 4) == b"two\n"
    dest = tmp_path / "collected"
    executor.collect(run, dest)
    assert (dest / "outs" / "out.txt").read_text().strip() == str(run.run_dir)
    assert (dest / "exitcode").read_text().strip() == "0"


def test_a_non_zero_exit_is_failed(tmp_path: Path) -> None:
    run = make_run(tmp_path, "exit 5")
    executor = LocalExecutor()
    executor.start(run)
    assert wait_final(executor, run) is RunState.FAILED


def test_cancel_from_another_executor_object_is_seen_by_the_first(tmp_path: Path) -> None:
    run = make_run(tmp_path, "echo started; sleep 60")
    follower = LocalExecutor()
    follower.start(run)
    wait_for(lambda: b"started" in follower.read_log(run, 0), 20, "the run to start", 0.02)
    other = Run(
        id=run.id, run_dir=run.run_dir, executor="local", pid=run.pid, detail=dict(run.detail)
    )
    LocalExecutor().cancel(other)
    assert wait_final(follower, run) is RunState.CANCELLED
    assert group_gone(run.pid or 0)


def test_a_killed_group_without_exitcode_is_interrupted(tmp_path: Path) -> None:
    run = make_run(tmp_path, "echo started; sleep 60")
    executor = LocalExecutor()
    executor.start(run)
    wait_for(lambda: b"started" in executor.read_log(run, 0), 20, "the run to start", 0.02)
    os.killpg(run.pid or 0, signal.SIGKILL)
    assert wait_final(executor, run) is RunState.INTERRUPTED
    restarted = Run(
        id=run.id, run_dir=run.run_dir, executor="local", pid=run.pid, detail=dict(run.detail)
    )
    assert LocalExecutor().poll(restarted) is RunState.INTERRUPTED


def test_the_registry_builds_executors_by_remote_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[tuple[str | None, dict[str, Any]]] = []

    def factory(name: str | None, settings: dict[str, Any]) -> LocalExecutor:
        built.append((name, settings))
        return LocalExecutor()

    monkeypatch.setattr("agent.runs.executor.EXECUTOR_FACTORIES", dict(EXECUTOR_FACTORIES))
    register_executor("loopback", factory)
    config = UserConfig.load()
    config.set("remotes", "box", {"kind": "loopback", "host": "127.0.0.1"})
    config.save()
    assert isinstance(executor_for("box"), LocalExecutor)
    assert built == [("box", {"kind": "loopback", "host": "127.0.0.1"})]
    assert isinstance(executor_for(None), LocalExecutor)
    assert isinstance(executor_for("local"), LocalExecutor)
    with pytest.raises(WatchkeeperError, match=r"no remote named 'gpu'.*configured remotes: box"):
        executor_for("gpu")
    config.set("remotes", "odd", {"kind": "carrier-pigeon"})
    config.save()
    with pytest.raises(WatchkeeperError, match="no executor for that kind"):
        executor_for("odd")
