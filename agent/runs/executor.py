"""The Executor protocol every kind of run target implements, the local one, and the registry."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.config import UserConfig
from agent.errors import WatchkeeperError
from agent.runs.states import RunState

CANCEL_GRACE_SECONDS = 5.0
EXITCODE_FILE = "exitcode"
CANCELLED_FILE = "cancelled"
LOG_FILE = "log"
STEP_METRICS_FILE = "steps.jsonl"  # $WK_METRICS: the JSON lines of step metrics a run appends
MLFLOW_DB_FILE = "mlflow.db"  # $MLFLOW_TRACKING_URI's SQLite file (agent.interop.mlflow_capture)


class TargetUnreachableError(WatchkeeperError):
    """The run's target could not be reached for now; the run may still go on there."""


@dataclass
class Run:
    """One run as an executor sees it. `run_dir` is the local copy of the run layout.

    Executors fill in `pid`, `host` and `remote_job_id` in `start`; the orchestration stores them.
    `detail` holds what the executor needs to resume after a restart (JSON-serialisable).
    """

    id: str
    run_dir: Path
    executor: str
    remote: str | None = None
    host: str | None = None
    pid: int | None = None
    remote_job_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def steps_path(self) -> Path:
        return self.run_dir / STEP_METRICS_FILE

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Run:
        """Rebuild a run from its ledger row (JSON columns decoded)."""
        return cls(
            id=row["id"],
            run_dir=Path(row["run_dir"]),
            executor=row["executor"],
            remote=row.get("remote"),
            host=row.get("host"),
            pid=row.get("pid"),
            remote_job_id=row.get("remote_job_id"),
            detail=dict(row.get("detail") or {}),
        )


class Executor(Protocol):
    """Runs a prepared run layout somewhere and reports on it."""

    kind: str

    def start(self, run: Run) -> None:
        """Start `run_dir/run.sh` detached, filling in run.pid/host/remote_job_id."""

    def poll(self, run: Run) -> RunState:
        """The run's state now; SUCCEEDED/FAILED once `exitcode` exists."""

    def read_log(self, run: Run, offset: int) -> bytes:
        """The log's bytes from `offset` on (empty when nothing new)."""

    def read_steps(self, run: Run, offset: int) -> bytes:
        """The bytes of the run's `$WK_METRICS` file from `offset` on (empty when nothing new)."""

    def cancel(self, run: Run) -> None:
        """Stop the run and everything it started."""

    def collect(self, run: Run, dest: Path) -> None:
        """Bring `outs/`, `exitcode` and `log` of a finished run into the local folder `dest`."""


def read_exit_code(run_dir: Path) -> int | None:
    """The exit code written by run.sh, or None while it is absent."""
    try:
        text = (run_dir / EXITCODE_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def read_from(path: Path, offset: int) -> bytes:
    """A file's bytes from `offset` on; empty when it does not exist (yet)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""


def process_start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (to tell a pid from its reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether `pid` runs (not a zombie) and, when given, started at `start_ticks`."""
    ticks = process_start_ticks(pid)
    if ticks is None:
        return False
    return start_ticks is None or ticks == start_ticks


class LocalExecutor:
    """Runs the layout on this machine, in its own session and process group."""

    kind = "local"

    def __init__(self, remote: str | None = None, config: dict[str, Any] | None = None) -> None:
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, run: Run) -> None:
        env = {
            **os.environ,
            "WK_RUN_DIR": str(run.run_dir),
            "WK_PARAMS": str(run.run_dir / "params.json"),
            "WK_METRICS": str(run.steps_path),
        }
        child = subprocess.Popen(
            ["/bin/sh", str(run.run_dir / "run.sh")],
            cwd=run.run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._children[run.id] = child
        run.pid = child.pid
        run.host = socket.gethostname()
        run.detail["pid_start_ticks"] = process_start_ticks(child.pid)

    def _alive(self, run: Run) -> bool:
        child = self._children.get(run.id)
        if child is not None:
            return child.poll() is None
        if run.pid is None:
            return False
        return process_alive(run.pid, run.detail.get("pid_start_ticks"))

    def poll(self, run: Run) -> RunState:
        exit_code = read_exit_code(run.run_dir)
        if exit_code is None and self._alive(run):
            return RunState.RUNNING
        exit_code = read_exit_code(run.run_dir)
        if exit_code is None:
            cancelled = run.detail.get("cancelled") or (run.run_dir / CANCELLED_FILE).exists()
            return RunState.CANCELLED if cancelled else RunState.INTERRUPTED
        return RunState.SUCCEEDED if exit_code == 0 else RunState.FAILED

    def read_log(self, run: Run, offset: int) -> bytes:
        return read_from(run.log_path, offset)

    def read_steps(self, run: Run, offset: int) -> bytes:
        return read_from(run.steps_path, offset)

    def cancel(self, run: Run) -> None:
        """Mark the run cancelled (a `cancelled` file, seen by any poller) and stop its group."""
        run.detail["cancelled"] = True
        if run.run_dir.is_dir():
            (run.run_dir / CANCELLED_FILE).touch()
        if run.pid is None or not self._alive(run):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGTERM)
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        while self._alive(run) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        child = self._children.get(run.id)
        if child is not None:
            child.wait()

    def collect(self, run: Run, dest: Path) -> None:
        if dest.resolve() == run.run_dir.resolve():
            return
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("outs", EXITCODE_FILE, LOG_FILE, STEP_METRICS_FILE, MLFLOW_DB_FILE):
            source = run.run_dir / name
            if source.is_dir():
                shutil.copytree(source, dest / name, dirs_exist_ok=True)
            elif source.exists():
                shutil.copy2(source, dest / name)


ExecutorFactory = Callable[[str | None, dict[str, Any]], Executor]

EXECUTOR_FACTORIES: dict[str, ExecutorFactory] = {"local": LocalExecutor}

# Modules that register more executor kinds (ssh, slurm) when imported.
EXECUTOR_PLUGIN_MODULES = ("agent.remote.executors",)


def register_executor(kind: str, factory: ExecutorFactory) -> None:
    """Make `--remote NAME` work for remotes of `kind`: factory(remote_name, remote_config)."""
    EXECUTOR_FACTORIES[kind] = factory


def _load_plugins() -> None:
    for module_name in EXECUTOR_PLUGIN_MODULES:
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            importlib.import_module(module_name)


def executor_for(remote: str | None) -> Executor:
    """The executor for a remote name: "local" (or None) runs here; others come from config."""
    if remote in (None, "", "local"):
        return LocalExecutor()
    remotes = UserConfig.load().section("remotes")
    settings = remotes.get(remote)
    if not isinstance(settings, dict):
        known = ", ".join(sorted(remotes)) or "none"
        raise WatchkeeperError(
            f"remote training needs a configured remote, and there is no remote named {remote!r} "
            f"(configured remotes: {known}). Add it with `watchkeeper remote add {remote} ...`, "
            "or train locally with --remote local."
        )
    kind = str(settings.get("kind", "ssh"))
    if kind not in EXECUTOR_FACTORIES:
        _load_plugins()
    factory = EXECUTOR_FACTORIES.get(kind)
    if factory is None:
        raise WatchkeeperError(
            f"remote {remote!r} is of kind {kind!r}, and this installation has no executor for "
            f"that kind (available: {', '.join(sorted(EXECUTOR_FACTORIES))})."
        )
    return factory(remote, settings)
