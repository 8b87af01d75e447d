"""Train a model: snapshot code and data, run it on an executor, record the model version."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.data.deps import snapshot_data_dep
from agent.data.stat_cache import StatCache
from agent.disk import disk_full_error, is_disk_full, is_nearly_full
from agent.errors import WatchkeeperError
from agent.interop.mlflow_capture import capture_run, run_name, run_script_setup, store_capture
from agent.ledger import write_transaction
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.blobs import ARTIFACT, VersionBlob, record_version_blobs
from agent.ledger.queries import (
    ACTIVE_RUN_STATES,
    active_runs,
    encode,
    ensure_model,
    insert_row,
    next_version,
    register_repo,
    update_row,
)
from agent.paths import WatchkeeperPaths
from agent.project.git import (
    WorkingTree,
    head_hashes,
    is_ignored,
    working_hashes,
    working_tree,
)
from agent.project.spec import ModelSpec, ProjectSpec, load_project
from agent.runs.code_diff import keep_code_diff
from agent.runs.data_cache import KeptData, keep_data_deps
from agent.runs.executor import (
    EXITCODE_FILE,
    Executor,
    LocalExecutor,
    Run,
    RunState,
    TargetUnreachableError,
    executor_for,
    process_alive,
    process_start_ticks,
    read_exit_code,
)
from agent.runs.layout import new_run_id, prepare_run_dir
from agent.runs.params import deliver_params, parse_param_overrides
from agent.runs.step_metrics import StepBatch, pull_steps, skipped_warning, step_progress

LOG_TAIL_LINES = 20
LOG_NOTE_PREFIX = "watchkeeper: "  # lines that run.sh and the fetch add to a run's log
POLL_SECONDS = 0.1
FIRST_LOCAL_POLL_SECONDS = 0.005
STEP_READ_SECONDS = 1.0  # how often a followed run's $WK_METRICS is read into the ledger
# The signals that cancel a run followed by `watchkeeper train` (see agent/cli/ledger_cmds.py).
CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STATUS_FOR_STATE = {
    RunState.SUCCEEDED: "succeeded",
    RunState.FAILED: "failed",
    RunState.CANCELLED: "cancelled",
    RunState.INTERRUPTED: "interrupted",
    RunState.LOST: "lost",
}


@dataclass
class TrainResult:
    """How a training run ended and the version it recorded."""

    model: str
    version: int
    run_id: str
    status: str
    exit_code: int | None
    problem: str | None = None
    log_tail: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    metrics_extra: Any = None
    step_warning: str | None = None
    notes: list[str] = field(default_factory=list)  # data content not kept, and why


def classify_deps(project: ProjectSpec, model: ModelSpec) -> tuple[list[str], list[str]]:
    """Split deps into (code deps, data deps): a dep git ignores is data, any other is code.

    Raises an error naming the file and line when a dep does not exist.
    """
    code: list[str] = []
    data: list[str] = []
    for dep in model.deps:
        path = project.root / dep
        if not os.path.lexists(path):
            raise WatchkeeperError(
                f"{project.where(model.name, 'deps')}: [models.{model.name}] deps names "
                f"{dep!r}, which does not exist in {project.root}; create it or remove it "
                "from deps."
            )
        (data if is_ignored(project.root, dep) else code).append(dep)
    return code, data


def read_metrics(path: Path, declared: str) -> tuple[dict[str, Any], Any]:
    """The metrics file as (metrics, extra): its finite numbers, and everything else.

    Only a missing file or one that is not JSON is an error. In a JSON object, each finite
    number (not a boolean) is a metric; any other entry (a confusion matrix, a label, a null)
    goes to `extra`, an object keyed like the file. A document that is not an object is kept
    whole as `extra`.
    """
    if not path.is_file():
        raise WatchkeeperError(
            f"the metrics file {declared!r} was not written by the train command (looked for it "
            "in the folder the command ran in)"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WatchkeeperError(f"the metrics file {declared!r} is not JSON: {error}") from error
    if not isinstance(document, dict):
        return {}, document
    metrics: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in document.items():
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and math.isfinite(value):
            metrics[key] = value
        else:
            extra[key] = value if is_number is False else str(value)  # NaN, inf as text
    return metrics, extra or None


def final_metrics(
    step_finals: dict[str, float], file_metrics: dict[str, Any], extra: Any
) -> dict[str, Any]:
    """The last value of each step metric, unless the metrics file names it (as a number,
    which wins, or as anything else, which keeps the step value out).

    >>> final_metrics({"loss": 0.3, "acc": 0.8}, {"acc": 0.9}, {"loss": None})
    {'acc': 0.9}
    """
    named_otherwise = set(extra) if isinstance(extra, dict) else set()
    kept = {k: v for k, v in step_finals.items() if k not in named_otherwise}
    return {**kept, **file_metrics}


def store_outs(store: ArtifactStore, outs_dir: Path, outs: tuple[str, ...]) -> dict[str, str]:
    """Put every declared out (a file, or each file of a folder) into the store."""
    missing = [out for out in outs if not (outs_dir / out).exists()]
    if missing:
        raise WatchkeeperError(
            f"outs missing after training: {', '.join(missing)}. The train command must write "
            "them, relative to the repo root, in the folder it runs in."
        )
    artifacts: dict[str, str] = {}
    for out in outs:
        path = outs_dir / out
        if path.is_symlink():  # run.sh replaces links; one made after it is not followed
            raise WatchkeeperError(f"out {out!r} is a symlink in outs/; outs must be files.")
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
                artifacts[file.relative_to(outs_dir).as_posix()] = store.put(file)
        else:
            artifacts[out] = store.put(path)
    return artifacts


def refusals_in_log(log_path: Path) -> list[str]:
    """The outs that run.sh or the fetch refused, as noted in the log's last lines."""
    return [
        line.removeprefix(LOG_NOTE_PREFIX)
        for line in log_tail(log_path, 200).splitlines()
        if line.startswith(LOG_NOTE_PREFIX + "refusing")
    ][:5]


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file."""
    try:
        text = log_path.read_bytes()[-64_000:].decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _supervisor() -> dict[str, Any]:
    return {"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid())}


@dataclass
class Training:
    """What every run of one `train` (or of every point of a sweep) shares, fixed before the
    first run starts: the model, its target, the code snapshot and the data fingerprints."""

    root: Path
    project: ProjectSpec
    model: ModelSpec
    executor: Executor
    remote_name: str | None
    tree: WorkingTree
    code_deps: list[str]
    data_deps: list[str]
    code_hashes: dict[str, Any]
    data_records: dict[str, Any]
    kept: KeptData = field(default_factory=KeptData)  # the diff and data blobs every run keeps
    recorded_repo: Path | None = None  # the repo to record under when `root` is a worktree of it
    dvc_md5s: dict[str, dict[str, str]] = field(default_factory=dict)  # dep -> {"dvc_md5": …}
    # `root` is a reproduction's own worktree: a local run uses it as its code (no snapshot)
    run_in_root: bool = False

    @property
    def collected(self) -> list[str]:
        return [*self.model.outs, *([self.model.metrics] if self.model.metrics else [])]


def prepare_training(
    root: Path,
    model_name: str,
    *,
    remote: str | None,
    db: Database,
    paths: WatchkeeperPaths,
    on_data_progress: Callable[[str, int, int], None] | None = None,
    check_params: Callable[[ProjectSpec, ModelSpec], None] = lambda project, model: None,
    recorded_repo: Path | None = None,
    run_in_root: bool = False,
) -> Training:
    """Load the model, pick its executor, snapshot the code and fingerprint the data deps.

    `check_params` runs before anything slow (refusing bad params early). The uncommitted diff
    and, as the model's `keep_data` says, the content of its data deps are kept in the blob
    store; each run recorded from this training lists them in `version_blobs`."""
    project = load_project(root)
    model = project.model(model_name)
    check_params(project, model)
    code_deps, data_deps = classify_deps(project, model)
    remote_name = remote or model.remote
    executor = executor_for(remote_name)
    tree = working_tree(root)
    # A clean tree committed now is its commit: the ids are read there, not made by `git add`.
    code_hashes = (
        working_hashes(root, code_deps) if tree.dirty else head_hashes(root, code_deps, tree.commit)
    )
    reconcile_runs(db, paths)
    data_records = {
        dep: snapshot_data_dep(db, root / dep, paths, _progress_for(dep, on_data_progress))
        for dep in data_deps
    }
    store = ArtifactStore(paths.artifacts, StatCache.open(paths))  # the fingerprints' cache
    kept = keep_data_deps(
        db,
        store,
        root,
        {dep: record.snapshot_id for dep, record in data_records.items()},
        model.keep_data,
        model.keep_data_limit,
    )
    kept.blobs.extend(keep_code_diff(store, root, tree))
    return Training(
        root,
        project,
        model,
        executor,
        remote_name,
        tree,
        code_deps,
        data_deps,
        code_hashes,
        data_records,
        kept,
        recorded_repo,
        _dvc_md5s(root, data_deps),
        run_in_root,
    )


def _dvc_md5s(root: Path, data_deps: list[str]) -> dict[str, dict[str, str]]:
    """DVC's md5 of each data dep that a `.dvc` file or dvc.lock tracks and still matches."""
    from agent.interop.dvc import dvc_md5_for

    found = {dep: dvc_md5_for(root, dep) for dep in data_deps}
    return {dep: {"dvc_md5": md5} for dep, md5 in found.items() if md5}


def record_run(
    db: Database,
    training: Training,
    params: dict[str, Any],
    paths: WatchkeeperPaths,
    *,
    allow_concurrent: bool = False,
    sweep_id: str | None = None,
    run_id: str | None = None,
    reproduction_of: int | None = None,
) -> tuple[Run, int]:
    """Record a run (state `starting`, or `queued` in a sweep) and its version (`running`).

    Refused while another run of the model is active, unless `allow_concurrent`."""
    model, executor = training.model, training.executor
    run_id = run_id or new_run_id(model.name)
    run_dir = paths.runs / run_id
    delivery = deliver_params(model, params)
    run = Run(
        id=run_id,
        run_dir=run_dir,
        executor=executor.kind,
        remote=None if executor.kind == "local" else training.remote_name,
        detail={
            "repo": str(training.recorded_repo or training.root),
            "model": model.name,
            "outs": list(model.outs),
            "metrics": model.metrics,
            "command": delivery.command,
            "supervisor": _supervisor(),
        },
    )
    now = time.time()
    with write_transaction(db):
        repo_id = register_repo(db, training.recorded_repo or training.root)
        model_id = ensure_model(db, repo_id, model.name)
        if not allow_concurrent:
            refuse_concurrent_run(db, model_id, model.name)
        version = next_version(db, model_id)
        state = RunState.QUEUED if sweep_id else RunState.STARTING
        insert_row(
            db,
            "runs",
            {
                "id": run_id,
                "model_id": model_id,
                "state": state.value,
                "executor": executor.kind,
                "remote": run.remote,
                "run_dir": str(run_dir),
                "log_path": str(run.log_path),
                "log_offset": 0,
                "created_at": now,
                "detail": run.detail,
                **({"sweep_id": sweep_id} if sweep_id else {}),
            },
        )
        version_id = insert_row(
            db,
            "model_versions",
            {
                "model_id": model_id,
                "version": version,
                "status": "running",
                "commit_sha": training.tree.commit,
                "dirty": int(training.tree.dirty),
                "diff_hash": training.tree.diff_hash,
                "train_command": model.train,
                "params": params,
                "experiment": int(_differs(params, model.params)),
                "metrics": {},
                "data": {
                    dep: {
                        "snapshot_id": record.snapshot_id,
                        "fingerprint": record.fingerprint,
                        **training.dvc_md5s.get(dep, {}),
                    }
                    for dep, record in training.data_records.items()
                },
                "code": training.code_hashes,
                "artifacts": {},
                "executor": executor.kind,
                "run_id": run_id,
                "started_at": now,
                "reproduction_of": reproduction_of,
                **({"sweep_id": sweep_id} if sweep_id else {}),
            },
        )
        record_version_blobs(db, version_id, training.kept.blobs)
        run.detail["version_id"] = version_id
        run.detail["version"] = version
        update_row(db, "runs", "id", run_id, {"detail": run.detail})
    return run, version


def stage_run(training: Training, run: Run, params: dict[str, Any]) -> None:
    """Write the run's folder: code snapshot, params (as the model receives them), run.sh."""
    delivery = deliver_params(training.model, params)
    run.detail["data_sources"] = prepare_run_dir(
        root=training.root,
        run_dir=run.run_dir,
        run_id=run.id,
        model=training.model.name,
        command=delivery.command,
        params=params,
        tree=training.tree,
        data_deps=training.data_deps,
        collected=training.collected,
        env=delivery.env,
        files=delivery.files,
        mlflow_setup=run_script_setup(
            training.model.mlflow,
            training.model.name,
            run_name(training.model.name, run.detail.get("version")),
        ),
        code_folder=(
            training.root if training.run_in_root and training.executor.kind == "local" else None
        ),
    )


def mark_started(db: Database, run: Run) -> None:
    """Record that the executor started `run` (its pid, host and job id)."""
    with write_transaction(db):
        update_row(
            db,
            "runs",
            "id",
            run.id,
            {
                "state": RunState.RUNNING.value,
                "pid": run.pid,
                "host": run.host,
                "remote_job_id": run.remote_job_id,
                "started_at": time.time(),
                "detail": run.detail,
            },
        )
        update_row(
            db,
            "model_versions",
            "run_id",
            run.id,
            {"host": run.host, "remote_job_id": run.remote_job_id},
        )


def launch_run(
    db: Database, training: Training, run: Run, params: dict[str, Any], paths: WatchkeeperPaths
) -> None:
    """Stage and start a recorded run; a run that cannot start is recorded (failed, or
    cancelled on Ctrl-C) and the error raised."""
    executor = training.executor
    try:
        stage_run(training, run, params)
        executor.start(run)
    except KeyboardInterrupt:
        run.detail["cancelled"] = True
        finish_run(db, run, RunState.CANCELLED, executor, paths)
        raise
    except BaseException as error:
        finish_run(db, run, RunState.FAILED, executor, paths, problem=f"could not start: {error}")
        raise
    mark_started(db, run)


def train(
    root: Path,
    model_name: str,
    *,
    param_pairs: list[str] | None = None,
    remote: str | None = None,
    allow_concurrent: bool = False,
    db: Database,
    paths: WatchkeeperPaths | None = None,
    on_log: Callable[[bytes], None] = lambda chunk: None,
    on_start: Callable[[Run, int], None] = lambda run, version: None,
    on_steps: Callable[[StepBatch], None] = lambda batch: None,
    on_data_progress: Callable[[str, int, int], None] | None = None,
    params: dict[str, Any] | None = None,
    reproduction_of: int | None = None,
    recorded_repo: Path | None = None,
    run_in_root: bool = False,
) -> TrainResult:
    """Train `model_name` of the repo at `root` and record a model version.

    The code snapshot, data fingerprints and params are fixed before the run starts. The log
    goes to `on_log` as it grows, and each batch of step metrics stored to `on_steps` (about
    once a second); hashing progress of each data dep to `on_data_progress`.
    KeyboardInterrupt cancels the run, records it as cancelled and is raised again; once the job
    has ended, it no longer cancels anything: the run is recorded with its true end.

    Params reach the command as `deliver_params` says; a version whose params differ from the
    declared ones is recorded as an experiment. While another run of the same model is active
    the run is refused, unless `allow_concurrent`.

    The uncommitted diff and, as the model's `keep_data` says, the content of its data deps
    are kept in the blob store and listed in `version_blobs`. A reproduction passes the
    version's own `params`, the version it reproduces, and `recorded_repo`, the repo to record
    it under (`root` is then a temporary worktree of that repo), and `run_in_root`: a local run
    then uses that worktree as its code, without a snapshot of its own.
    """
    paths = paths or WatchkeeperPaths.from_environment()
    parsed: dict[str, Any] = {}

    def check_params(project: ProjectSpec, model: ModelSpec) -> None:
        if params is not None:
            parsed.update(params)
        else:
            where = project.where(model.name, "params")
            parsed.update(parse_param_overrides(model, param_pairs or [], where))
        deliver_params(model, parsed)

    training = prepare_training(
        root,
        model_name,
        remote=remote,
        db=db,
        paths=paths,
        on_data_progress=on_data_progress,
        check_params=check_params,
        recorded_repo=recorded_repo,
        run_in_root=run_in_root,
    )
    executor = training.executor
    run, version = record_run(
        db,
        training,
        parsed,
        paths,
        allow_concurrent=allow_concurrent,
        reproduction_of=reproduction_of,
    )
    launch_run(db, training, run, parsed, paths)
    on_start(run, version)
    try:
        state = _follow(executor, run, on_log, on_steps, db)
    except KeyboardInterrupt:
        finish_run(db, run, RunState.CANCELLED, executor, paths)
        raise
    except TargetUnreachableError:
        raise  # the run goes on there; a later poll (the agent's) settles it
    except WatchkeeperError as error:
        return fail_run(db, run, executor, paths, str(error))
    with _cancel_signals_ignored():
        result = finish_run(db, run, state, executor, paths)
    result.notes = training.kept.notes
    return result


def _differs(params: dict[str, Any], declared: dict[str, Any]) -> bool:
    return json.dumps(params, sort_keys=True) != json.dumps(declared, sort_keys=True)


def refuse_concurrent_run(db: Database, model_id: int, model: str) -> None:
    """Refuse to start a second run of a model while one is active (in this transaction)."""
    marks = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    row = db.execute(
        f"SELECT id, state, executor, remote FROM runs WHERE model_id = ? AND state IN ({marks}) "
        "ORDER BY created_at DESC LIMIT 1",
        [model_id, *ACTIVE_RUN_STATES],
    ).fetchone()
    if row is None:
        return
    run_id, state, executor, remote = row
    where = f" on {remote}" if remote else f" ({executor})"
    raise WatchkeeperError(
        f"{model} is already training: run {run_id} is {state}{where}. Wait for it "
        f"(`watchkeeper runs logs -f {run_id}`), cancel it (`watchkeeper runs cancel {run_id}`), "
        "or pass --allow-concurrent to train it twice at once."
    )


@contextmanager
def _cancel_signals_ignored() -> Iterator[None]:
    """Ignore Ctrl-C, SIGTERM and SIGHUP while a job that has ended is recorded.

    There is nothing left to cancel, and stopping half-way would leave the run `running` in the
    ledger. Signal handlers belong to the main thread: elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in CANCEL_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def fail_run(
    db: Database, run: Run, executor: Executor, paths: WatchkeeperPaths, problem: str
) -> TrainResult:
    """Record a run that can no longer be followed (its target answers nonsense, say) as failed
    with `problem`, after asking its executor to stop it."""
    try:
        executor.cancel(run)
    except (WatchkeeperError, OSError) as error:
        run.detail["cancel_problem"] = str(error)
    return finish_run(db, run, RunState.FAILED, executor, paths, problem=problem)


def _progress_for(
    dep: str, on_data_progress: Callable[[str, int, int], None] | None
) -> Callable[[int, int], None] | None:
    if on_data_progress is None:
        return None
    return lambda done, total: on_data_progress(dep, done, total)


def _follow(
    executor: Executor,
    run: Run,
    on_log: Callable[[bytes], None],
    on_steps: Callable[[StepBatch], None],
    db: Database,
) -> RunState:
    offset = 0
    steps_read_at = 0.0
    # A local run is looked at soon after it starts, then less often: a short one ends sooner.
    delay = FIRST_LOCAL_POLL_SECONDS if executor.kind == "local" else POLL_SECONDS
    try:
        while True:
            state = executor.poll(run)
            chunk = executor.read_log(run, offset)
            if chunk:
                offset += len(chunk)
                on_log(chunk)
            if state.is_final:
                return state
            if time.monotonic() - steps_read_at >= STEP_READ_SECONDS:
                steps_read_at = time.monotonic()
                batch = pull_steps(db, run, executor)
                if batch is not None:
                    on_steps(batch)
            time.sleep(delay)
            delay = min(delay * 2, POLL_SECONDS)
    except KeyboardInterrupt:
        ended = executor.poll(run)
        if ended in (RunState.SUCCEEDED, RunState.FAILED):
            # The job wrote its exit code before the signal came: there is nothing to cancel.
            on_log(executor.read_log(run, offset))
            return ended
        executor.cancel(run)
        chunk = executor.read_log(run, offset)
        if chunk:
            on_log(chunk)
        raise


def finish_run(
    db: Database,
    run: Run,
    state: RunState,
    executor: Executor,
    paths: WatchkeeperPaths,
    *,
    problem: str | None = None,
) -> TrainResult:
    """Collect a finished run's outs and metrics and record the run and its version.

    A run that exited 0 but whose outs or metrics are missing or bad is recorded as failed,
    with no artifacts. Only a run still marked active is updated, so this is safe to call
    from two processes.
    """
    exit_code: int | None = None
    metrics: dict[str, Any] = {}
    extra: Any = None
    artifacts: dict[str, str] = {}
    if state in (RunState.SUCCEEDED, RunState.FAILED) and problem is None:
        try:
            executor.collect(run, run.run_dir)
        except WatchkeeperError as error:  # nothing fetched is trusted; the run failed
            problem = str(error)
            state = RunState.FAILED
        exit_code = read_exit_code(run.run_dir)
    step_warning = _settle_steps(db, run, executor)
    mlflow = capture_run(run.run_dir, _recorded_params(db, run.id))
    if state is RunState.SUCCEEDED and problem is None:
        outs_dir = run.run_dir / "outs"
        try:
            artifacts = store_outs(
                ArtifactStore(paths.artifacts), outs_dir, tuple(run.detail["outs"])
            )
            declared_metrics = run.detail.get("metrics")
            file_metrics: dict[str, Any] = {}
            if declared_metrics:
                file_metrics, extra = read_metrics(outs_dir / declared_metrics, declared_metrics)
            step_finals = {**mlflow.final_metrics, **step_progress(db, run.id).final_metrics}
            metrics = final_metrics(step_finals, file_metrics, extra)
        except (WatchkeeperError, OSError) as error:
            if isinstance(error, OSError) and not is_disk_full(error):
                raise
            if is_disk_full(error):
                problem = str(disk_full_error(paths.artifacts))
            else:
                problem = " ".join([str(error), *refusals_in_log(run.log_path)])
            artifacts, metrics, extra = {}, {}, None
            state = RunState.FAILED
    if problem is None and state in (RunState.INTERRUPTED, RunState.FAILED):
        problem = _disk_full_problem(run)
        if problem is not None:
            state = RunState.FAILED
    if problem is not None:
        state = RunState.FAILED if state is RunState.SUCCEEDED else state
        run.detail["problem"] = problem
    status = STATUS_FOR_STATE.get(state, "failed")
    ended = time.time()
    with write_transaction(db):
        updated = update_row(
            db,
            "runs",
            "id",
            run.id,
            {"state": status, "exit_code": exit_code, "ended_at": ended, "detail": run.detail},
            only_if_state_in=ACTIVE_RUN_STATES,
        )
        if updated:
            update_row(
                db,
                "model_versions",
                "run_id",
                run.id,
                {
                    "status": status,
                    "exit_code": exit_code,
                    "ended_at": ended,
                    "metrics": metrics,
                    "metrics_extra": None if extra is None else encode(extra),
                    "artifacts": artifacts,
                    "mlflow": mlflow.record,
                },
            )
            version_id = db.execute(
                "SELECT id FROM model_versions WHERE run_id = ?", [run.id]
            ).fetchone()[0]
            store_capture(db, run.id, version_id, mlflow)
            record_version_blobs(
                db, version_id, [VersionBlob(ARTIFACT, p, d) for p, d in artifacts.items()]
            )
    row = db.execute(
        "SELECT m.name, v.version, v.status, v.exit_code, v.metrics, v.artifacts, "
        "v.metrics_extra "
        "FROM model_versions v JOIN models m ON m.id = v.model_id WHERE v.run_id = ?",
        [run.id],
    ).fetchone()
    name, version, recorded_status, recorded_exit, recorded_metrics, recorded_artifacts = row[:6]
    return TrainResult(
        model=name,
        version=version,
        run_id=run.id,
        status=recorded_status,
        exit_code=recorded_exit,
        problem=run.detail.get("problem"),
        log_tail=log_tail(run.log_path),
        metrics=json.loads(recorded_metrics or "{}"),
        artifacts=json.loads(recorded_artifacts or "{}"),
        metrics_extra=json.loads(row[6]) if row[6] else None,
        step_warning=step_warning,
    )


def _recorded_params(db: Database, run_id: str) -> dict[str, Any]:
    row = db.execute("SELECT params FROM model_versions WHERE run_id = ?", [run_id]).fetchone()
    return json.loads(row[0] or "{}") if row else {}


def _settle_steps(db: Database, run: Run, executor: Executor) -> str | None:
    """Store the rest of a finished run's step metrics; the warning about skipped lines,
    also noted once at the end of its log."""
    try:
        pull_steps(db, run, executor, final=True)
    except (WatchkeeperError, OSError) as error:
        if isinstance(error, OSError) and not is_disk_full(error):
            raise
        return f"its step metrics could not be read: {error}"
    warning = skipped_warning(step_progress(db, run.id))
    if warning is not None and not run.detail.get("step_warning_noted"):
        run.detail["step_warning_noted"] = True
        with contextlib.suppress(OSError), run.log_path.open("a", encoding="utf-8") as log:
            log.write(f"{LOG_NOTE_PREFIX}{warning}\n")
    return warning


def _disk_full_problem(run: Run) -> str | None:
    """The disk-full reason of a run that ended badly because its disk filled up, else None.

    Signs: the log says "No space left on device", or run.sh left `exitcode` empty (it always
    writes one, so an empty file means the write failed) on a disk that is nearly full.
    """
    exitcode = run.run_dir / EXITCODE_FILE
    if "No space left on device" in log_tail(run.log_path, lines=200):
        return str(disk_full_error(run.run_dir))
    try:
        status_lost = exitcode.stat().st_size == 0
    except OSError:
        return None
    if not status_lost:
        return None
    if is_nearly_full(run.run_dir):
        return str(disk_full_error(run.run_dir))
    return (
        f"the disk holding {run.run_dir} was full: the run could not write its exit status to "
        f"{exitcode}; free space and retry."
    )


def _supervised(detail: dict[str, Any]) -> bool:
    supervisor = detail.get("supervisor") or {}
    pid = supervisor.get("pid")
    if not pid:
        return False
    return process_alive(int(pid), supervisor.get("start_ticks"))


def reconcile_runs(db: Database, paths: WatchkeeperPaths | None = None) -> list[TrainResult]:
    """Settle local runs whose supervising command is gone.

    A run that finished meanwhile is recorded like any other; one whose process died without
    writing `exitcode` (for example after kill -9) is marked interrupted. Runs still going, or
    still followed by a live `watchkeeper train`, are left alone.
    """
    paths = paths or WatchkeeperPaths.from_environment()
    settled: list[TrainResult] = []
    executor = LocalExecutor()
    for row in list(active_runs(db)):
        if row["executor"] != "local" or _supervised(row.get("detail") or {}):
            continue
        run = Run.from_row(row)
        state = executor.poll(run) if run.pid is not None else RunState.INTERRUPTED
        if state.is_final:
            settled.append(finish_run(db, run, state, executor, paths))
    return settled
