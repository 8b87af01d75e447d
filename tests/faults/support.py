"""Helpers of the fault tests: a small remote project, training in a bounded thread or process."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent.ledger import open_ledger
from agent.runs.training import TrainResult, train
from tests.agent.runs.gitrepo import cli_command, cli_env, make_repo
from tests.support import wait_for  # noqa: F401 (the fault tests import it from here)

TRAIN_SCRIPT = (
    "import json, pathlib\n"
    'pathlib.Path("model.pkl").write_text("weights")\n'
    'json.dump({"auc": 0.5}, open("metrics.json", "w"))\n'
    'print("trained", flush=True)\n'
)
PEAK_RSS_WRAPPER = (
    "import pathlib, resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "pathlib.Path(sys.argv[1]).write_text(str(peak))\n"
    "sys.exit(code)\n"
)
BOUND_SECONDS = 90  # far above what any fault may take with a 2 s read timeout


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

    The process is killed, and the test fails, when it has not exited within `seconds`. The
    command runs under a small Python that reports its child's peak RSS: on Linux a process
    started by fork and exec carries the forking process's peak as its own, and the test
    process itself may be far larger than the command measured.
    """
    rss_file = root.parent / f".peak-rss-{os.getpid()}-{time.monotonic_ns()}"
    child = subprocess.Popen(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, str(rss_file), *cli_command(*args)],
        start_new_session=True,
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
        os.killpg(child.pid, signal.SIGKILL)
        waiter.join()
        raise AssertionError(f"`watchkeeper {' '.join(args)}` still ran after {seconds} s")
    _, status, _usage = ended[0]
    child.returncode = os.waitstatus_to_exitcode(status)
    peak_kib = int(rss_file.read_text())
    rss_file.unlink()
    for thread in readers:
        thread.join()
    completed = subprocess.CompletedProcess(
        child.args, child.returncode, output["stdout"], output["stderr"]
    )
    return completed, peak_kib


def error_lines(stderr: str) -> list[str]:
    """The non-empty lines a command printed on stderr."""
    return [line for line in stderr.splitlines() if line.strip()]
