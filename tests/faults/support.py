"""Helpers of the fault tests: a small remote project, training in a bounded thread or process."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.ledger import open_ledger
from agent.runs.training import TrainResult, train
from tests.agent.runs.gitrepo import cli_command, cli_env, make_repo

TRAIN_SCRIPT = (
    "import json, pathlib\n"
    'pathlib.Path("model.pkl").write_text("weights")\n'
    'json.dump({"auc": 0.5}, open("metrics.json", "w"))\n'
    'print("trained", flush=True)\n'
)
BOUND_SECONDS = 90  # far above what any fault may take with a 2 s read timeout


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until `condition()` is true; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def make_project(folder: Path, remote: str = "gpu1", train_script: str = TRAIN_SCRIPT) -> Path:
    """A committed repo whose model `churn` trains on `remote`."""
    spec = (
        "[models.churn]\n"
        'train = "python train.py"\n'
        'deps = ["train.py"]\n'
        'outs = ["model.pkl"]\n'
        'metrics = "metrics.json"\n'
        f'remote = "{remote}"\n'
    )
    return make_repo(folder, files={"train.py": train_script}, spec=spec)


def train_bounded(root: Path, seconds: float = BOUND_SECONDS) -> TrainResult | BaseException:
    """Train `churn` in this process on a thread; fail the test if it has not ended in time."""
    outcome: list[TrainResult | BaseException] = []

    def go() -> None:
        db = open_ledger()
        try:
            outcome.append(train(root, "churn", db=db))
        except BaseException as error:  # the test looks at it
            outcome.append(error)
        finally:
            db.close()

    thread = threading.Thread(target=go, name="fault-train", daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"train did not return within {seconds} s (hung or spinning)"
    return outcome[0]


def cli_bounded(
    root: Path, *args: str, seconds: float = BOUND_SECONDS
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run `watchkeeper ARGS` as a real process; returns it and its peak RSS in KiB.

    The process is killed, and the test fails, when it has not exited within `seconds`.
    """
    child = subprocess.Popen(
        cli_command(*args),
        cwd=root,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda n=name, s=stream: output.__setitem__(n, s.read()))
        for name, stream in (("stdout", child.stdout), ("stderr", child.stderr))
    ]
    ended: list[tuple[int, int, resource.struct_rusage]] = []
    waiter = threading.Thread(target=lambda: ended.append(os.wait4(child.pid, 0)), daemon=True)
    for thread in [*readers, waiter]:
        thread.start()
    waiter.join(seconds)
    if waiter.is_alive():
        child.kill()
        waiter.join()
        raise AssertionError(f"`watchkeeper {' '.join(args)}` still ran after {seconds} s")
    _, status, usage = ended[0]
    child.returncode = os.waitstatus_to_exitcode(status)
    for thread in readers:
        thread.join()
    completed = subprocess.CompletedProcess(
        child.args, child.returncode, output["stdout"], output["stderr"]
    )
    return completed, usage.ru_maxrss


def error_lines(stderr: str) -> list[str]:
    """The non-empty lines a command printed on stderr."""
    return [line for line in stderr.splitlines() if line.strip()]
