"""Sweeps: a grid of param sets from `--sweep`, trained as versions that share a sweep id."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger import write_transaction
from agent.ledger.queries import (
    ACTIVE_RUN_STATES,
    decode_row,
    ensure_model,
    insert_row,
    register_repo,
    update_row,
)
from agent.paths import WatchkeeperPaths
from agent.project.spec import ModelSpec, ProjectSpec
from agent.runs.executor import Executor, Run, RunState, TargetUnreachableError, executor_for
from agent.runs.layout import new_run_id
from agent.runs.params import deliver_params, parse_param_overrides, type_name, typed_value
from agent.runs.step_metrics import pull_steps
from agent.runs.training import (
    POLL_SECONDS,
    STEP_READ_SECONDS,
    Training,
    TrainResult,
    fail_run,
    finish_run,
    launch_run,
    mark_started,
    prepare_training,
    reconcile_runs,
    record_run,
    refuse_concurrent_run,
    stage_run,
)

MAX_POINTS = 1_000  # a larger grid needs --yes
HARD_MAX_POINTS = 100_000  # never: the ledger and the queue are not built for more
DEFAULT_LOCAL_PARALLEL = 1  # a training run usually keeps every core busy by itself
REMOTE_STEP_READ_SECONDS = 5.0  # step metrics of remote points: one read per point this often
SWEEP_FORMS = "NAME=V1,V2,... or NAME=log:LOW:HIGH:COUNT or NAME=lin:LOW:HIGH:COUNT"
SPACED_FORMS = ("log:", "lin:")


@dataclass(frozen=True)
class SweepAxis:
    """One swept param and the values it takes, typed like its declared default."""

    name: str
    values: tuple[Any, ...]


@runtime_checkable
class ArrayExecutor(Protocol):
    """An executor that submits many staged runs as one job array (Slurm)."""

    def start_array(self, runs: list[Run], parallel: int | None, sweep_id: str) -> str: ...

    def cancel_array(self, job_id: str) -> None: ...


def split_values(raw: str) -> list[str]:
    """The comma-separated values of an axis; commas inside [...] or quotes do not split.

    >>> split_values("0.1, 0.01,[1, 2],'a,b'")
    ['0.1', '0.01', '[1, 2]', "'a,b'"]
    """
    values: list[str] = []
    depth, quote, start = 0, "", 0
    for index, char in enumerate(raw):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(raw[start:index].strip())
            start = index + 1
    values.append(raw[start:].strip())
    return values


def spaced_values(name: str, raw: str, default: Any) -> list[Any]:
    """The values of `log:LOW:HIGH:COUNT` (log-spaced) or `lin:LOW:HIGH:COUNT` (evenly spaced),
    both ends included; rounded (and repeats dropped) for an int param.

    >>> spaced_values("lr", "log:1e-4:1e-1:4", 0.01)
    [0.0001, 0.001, 0.01, 0.1]
    >>> spaced_values("epochs", "lin:5:20:4", 10)
    [5, 10, 15, 20]
    """
    form, _, rest = raw.partition(":")
    kind = type_name(default)
    if kind not in ("int", "float"):
        raise WatchkeeperError(
            f"--sweep {name}={raw}: {form}: spacing needs a number param, and {name} is declared "
            f"as a {kind}; list its values instead ({name}=A,B,C)"
        )
    parts = rest.split(":")
    try:
        low, high, count = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3 or not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError
    except (ValueError, IndexError):
        raise WatchkeeperError(
            f"--sweep {name}={raw}: write it as {name}={form}:LOW:HIGH:COUNT, "
            f"such as {name}={form}:1e-4:1e-1:4"
        ) from None
    if count < 1:
        raise WatchkeeperError(f"--sweep {name}={raw}: COUNT must be 1 or more, not {count}")
    if count > HARD_MAX_POINTS:
        raise WatchkeeperError(
            f"--sweep {name}={raw}: {count} values; a sweep takes at most {HARD_MAX_POINTS:,} "
            "points"
        )
    if form == "log" and (low <= 0 or high <= 0):
        raise WatchkeeperError(
            f"--sweep {name}={raw}: log: spacing needs LOW and HIGH above 0; use lin: for a "
            "range that reaches 0 or below"
        )
    steps = [index / (count - 1) if count > 1 else 0.0 for index in range(count)]
    if form == "log":
        numbers = [low * (high / low) ** step for step in steps]
    else:
        numbers = [low + (high - low) * step for step in steps]
    if kind == "int":
        return list(dict.fromkeys(round(number) for number in numbers))
    return [float(f"{number:.12g}") for number in numbers]


def parse_axis(model: ModelSpec, text: str, where: str) -> SweepAxis:
    """One `--sweep NAME=...` as an axis; the name must be a param the command receives, and
    each value must parse as its declared type."""
    name, equals, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not equals or not name or not raw:
        raise WatchkeeperError(
            f"--sweep {text!r}: write it as {SWEEP_FORMS}, such as --sweep lr=0.1,0.01"
        )
    try:
        parse_param_overrides(model, [f"{name}={json_default(model, name)}"], where)
    except WatchkeeperError as error:
        raise WatchkeeperError(str(error).replace("--param ", "--sweep ", 1)) from None
    default = model.params[name]
    if raw.startswith(SPACED_FORMS):
        values = spaced_values(name, raw, default)
    else:
        try:
            values = [typed_value(name, value, default, where) for value in split_values(raw)]
        except WatchkeeperError as error:
            raise WatchkeeperError(str(error).replace("--param ", "--sweep ", 1)) from None
    return SweepAxis(name, tuple(_distinct(values)))


def json_default(model: ModelSpec, name: str) -> str:
    """A text that parses back as the declared default (to check a name alone)."""
    default = model.params.get(name)
    if isinstance(default, str):
        return default or '""'
    if isinstance(default, bool):
        return "true" if default else "false"
    return json.dumps(default)


def _distinct(values: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(json.dumps(value, sort_keys=True), value)
    return list(seen.values())


def parse_axes(
    model: ModelSpec, texts: list[str], fixed_pairs: list[str], where: str
) -> list[SweepAxis]:
    """Every `--sweep` as an axis; a param swept twice, or both swept and set by `--param`,
    is refused."""
    axes = [parse_axis(model, text, where) for text in texts]
    fixed = {pair.partition("=")[0].strip() for pair in fixed_pairs}
    names: set[str] = set()
    for axis in axes:
        if axis.name in names:
            raise WatchkeeperError(
                f"--sweep {axis.name}: swept twice; give all its values in one --sweep "
                f"({axis.name}=A,B,C)"
            )
        if axis.name in fixed:
            raise WatchkeeperError(
                f"--sweep {axis.name}: also set by --param {axis.name}; drop one of them"
            )
        names.add(axis.name)
    return axes


def grid_size(axes: list[SweepAxis]) -> int:
    """How many points the grid of `axes` has (the product of their lengths)."""
    return math.prod(len(axis.values) for axis in axes)


def check_grid_size(axes: list[SweepAxis], confirmed: bool) -> int:
    """The grid's size; more than MAX_POINTS is refused unless `confirmed` (--yes)."""
    size = grid_size(axes)
    shape = " x ".join(f"{len(axis.values)} {axis.name}" for axis in axes)
    if size > HARD_MAX_POINTS:
        raise WatchkeeperError(
            f"the sweep has {size:,} points ({shape}); at most {HARD_MAX_POINTS:,} are possible. "
            "Sweep fewer values."
        )
    if size > MAX_POINTS and not confirmed:
        raise WatchkeeperError(
            f"the sweep has {size:,} points ({shape}), more than {MAX_POINTS:,}; each is a run "
            "and a version. Pass --yes to queue them all, or sweep fewer values."
        )
    return size


def grid(axes: list[SweepAxis], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Every param set of the grid, in order (the last axis varies fastest).

    >>> grid([SweepAxis("lr", (0.1, 0.01)), SweepAxis("n", (5, 10))], {"lr": 1.0, "n": 1, "x": 0})
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'lr': 0.1, 'n': 5, 'x': 0}, {'lr': 0.1, 'n': 10, 'x': 0},
     {'lr': 0.01, 'n': 5, 'x': 0}, {'lr': 0.01, 'n': 10, 'x': 0}]
    """
    names = [axis.name for axis in axes]
    return [
        {**base, **dict(zip(names, values, strict=True))}
        for values in itertools.product(*(axis.values for axis in axes))
    ]


def new_sweep_id(model: str) -> str:
    """A unique, sortable sweep id such as `sweep-churn-20260101-120000-3fa9c2`."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"sweep-{model}-{stamp}-{secrets.token_hex(3)}"


@dataclass
class SweepPoint:
    """One point of a sweep: its params, its run and version, and how it ended."""

    index: int
    params: dict[str, Any]
    run: Run
    version: int
    result: TrainResult | None = None
    problem: str | None = None


@dataclass
class SweepResult:
    """A sweep's points as they ended."""

    sweep_id: str
    model: str
    points: list[SweepPoint] = field(default_factory=list)
    array_job_id: str | None = None


def train_sweep(
    root: Path,
    model_name: str,
    *,
    sweeps: list[str],
    param_pairs: list[str] | None = None,
    parallel: int | None = None,
    remote: str | None = None,
    confirmed: bool = False,
    allow_concurrent: bool = False,
    db: Database,
    paths: WatchkeeperPaths | None = None,
    on_queued: Callable[[SweepResult], None] = lambda sweep: None,
    on_point_start: Callable[[SweepPoint], None] = lambda point: None,
    on_point_end: Callable[[SweepPoint], None] = lambda point: None,
    on_data_progress: Callable[[str, int, int], None] | None = None,
) -> SweepResult:
    """Train every point of the grid that `sweeps` (`NAME=...` texts) span, as versions that
    share a sweep id, and follow them to their end.

    All points are recorded at once (runs `queued`), from one code snapshot and one set of
    data fingerprints. Here and over SSH at most `parallel` run at once (default 1); on Slurm
    the grid is one job array (`parallel` caps its running tasks; default: Slurm decides).
    KeyboardInterrupt, or `cancel_sweep` from elsewhere, cancels every point not yet ended;
    KeyboardInterrupt is raised again once they are recorded.
    """
    paths = paths or WatchkeeperPaths.from_environment()
    prepared: dict[str, Any] = {}

    def check_params(project: ProjectSpec, model: ModelSpec) -> None:
        where = project.where(model.name, "params")
        base = parse_param_overrides(model, param_pairs or [], where)
        axes = parse_axes(model, sweeps, param_pairs or [], where)
        check_grid_size(axes, confirmed)
        prepared.update(axes=axes, points=grid(axes, base))
        deliver_params(model, prepared["points"][0])

    training = prepare_training(
        root,
        model_name,
        remote=remote,
        db=db,
        paths=paths,
        on_data_progress=on_data_progress,
        check_params=check_params,
    )
    array = isinstance(training.executor, ArrayExecutor)
    limit = parallel if parallel or array else DEFAULT_LOCAL_PARALLEL
    sweep = _record_sweep(
        db, training, prepared["axes"], prepared["points"], paths, limit, allow_concurrent
    )
    on_queued(sweep)
    driver = _SweepDriver(db, training, sweep, paths, limit, on_point_start, on_point_end)
    try:
        if array and not sweep_cancelled(db, sweep.sweep_id):
            driver.submit_array()
        driver.follow()
    except KeyboardInterrupt:
        driver.cancel_all()
        raise
    return sweep


def _record_sweep(
    db: Database,
    training: Training,
    axes: list[SweepAxis],
    points: list[dict[str, Any]],
    paths: WatchkeeperPaths,
    parallel: int | None,
    allow_concurrent: bool,
) -> SweepResult:
    """Record the sweep and one queued run and version per point, in one transaction."""
    model = training.model
    sweep = SweepResult(new_sweep_id(model.name), model.name)
    with write_transaction(db):
        model_id = ensure_model(db, register_repo(db, training.root), model.name)
        if not allow_concurrent:
            refuse_concurrent_run(db, model_id, model.name)
        insert_row(
            db,
            "sweeps",
            {
                "id": sweep.sweep_id,
                "model_id": model_id,
                "created_at": time.time(),
                "axes": [{"name": axis.name, "values": list(axis.values)} for axis in axes],
                "points": len(points),
                "parallel": parallel,
                "executor": training.executor.kind,
                "remote": None if training.executor.kind == "local" else training.remote_name,
            },
        )
        run_ids: set[str] = set()
        for index, params in enumerate(points):
            run_id = new_run_id(model.name)
            while run_id in run_ids:  # many points share a second: their random parts may meet
                run_id = new_run_id(model.name)
            run_ids.add(run_id)
            run, version = record_run(
                db,
                training,
                params,
                paths,
                allow_concurrent=True,
                sweep_id=sweep.sweep_id,
                run_id=run_id,
            )
            sweep.points.append(SweepPoint(index, params, run, version))
    return sweep


class _SweepDriver:
    """Starts a sweep's points (at most `parallel` at once), polls them and records each end."""

    def __init__(
        self,
        db: Database,
        training: Training,
        sweep: SweepResult,
        paths: WatchkeeperPaths,
        parallel: int | None,
        on_point_start: Callable[[SweepPoint], None],
        on_point_end: Callable[[SweepPoint], None],
    ) -> None:
        self.db, self.training, self.sweep, self.paths = db, training, sweep, paths
        self.executor: Executor = training.executor
        self.parallel = parallel
        self.on_point_start, self.on_point_end = on_point_start, on_point_end
        self.pending: deque[SweepPoint] = deque(sweep.points)
        self.active: list[SweepPoint] = []
        self.steps_read_at: dict[str, float] = {}
        local = self.executor.kind == "local"
        self.step_interval = STEP_READ_SECONDS if local else REMOTE_STEP_READ_SECONDS

    def submit_array(self) -> None:
        """Stage every point and submit them as one job array."""
        executor = self.executor
        assert isinstance(executor, ArrayExecutor)
        runs = [point.run for point in self.sweep.points]
        try:
            for point in self.sweep.points:
                stage_run(self.training, point.run, point.params)
            job_id = executor.start_array(runs, self.parallel, self.sweep.sweep_id)
        except BaseException as error:
            for point in self.sweep.points:
                if isinstance(error, KeyboardInterrupt):
                    self._settle(point, RunState.CANCELLED)
                else:
                    self._settle(point, RunState.FAILED, problem=f"could not start: {error}")
            self.pending.clear()
            raise
        self.sweep.array_job_id = job_id
        with write_transaction(self.db):
            update_row(self.db, "sweeps", "id", self.sweep.sweep_id, {"array_job_id": job_id})
        for point in self.sweep.points:
            mark_started(self.db, point.run)
            self.on_point_start(point)
        self.active, self.pending = list(self.pending), deque()

    def follow(self) -> None:
        while self.pending or self.active:
            if sweep_cancelled(self.db, self.sweep.sweep_id):
                self.cancel_all()
                return
            self._start_more()
            for point in list(self.active):
                self._poll(point)
            if self.pending or self.active:
                time.sleep(POLL_SECONDS)

    def _start_more(self) -> None:
        while self.pending and (self.parallel is None or len(self.active) < self.parallel):
            point = self.pending.popleft()
            if not _claim(self.db, point.run):
                continue  # cancelled while it waited
            try:
                launch_run(self.db, self.training, point.run, point.params, self.paths)
            except (WatchkeeperError, OSError) as error:  # recorded as failed by launch_run
                point.problem = str(error)
                point.result = _recorded(self.db, point.run)
                self.on_point_end(point)
                continue
            self.active.append(point)
            self.on_point_start(point)

    def _poll(self, point: SweepPoint) -> None:
        run = point.run
        try:
            state = self.executor.poll(run)
        except TargetUnreachableError:
            return  # the point goes on there; polled again next round
        except WatchkeeperError as error:
            self._end(point, fail_run(self.db, run, self.executor, self.paths, str(error)))
            return
        if state.is_final:
            self._settle(point, state)
            return
        if time.monotonic() - self.steps_read_at.get(run.id, 0.0) >= self.step_interval:
            self.steps_read_at[run.id] = time.monotonic()
            with contextlib.suppress(WatchkeeperError):  # read again at the end
                pull_steps(self.db, run, self.executor)

    def _settle(self, point: SweepPoint, state: RunState, problem: str | None = None) -> None:
        self._end(
            point, finish_run(self.db, point.run, state, self.executor, self.paths, problem=problem)
        )

    def _end(self, point: SweepPoint, result: TrainResult) -> None:
        point.result = result
        if point in self.active:
            self.active.remove(point)
        self.on_point_end(point)

    def cancel_all(self) -> None:
        """Cancel every point not yet ended; one that ended meanwhile keeps its true end."""
        job = self.sweep.array_job_id
        if job and isinstance(self.executor, ArrayExecutor):
            with contextlib.suppress(WatchkeeperError, OSError):
                self.executor.cancel_array(job)
        for point in list(self.active):
            try:
                ended = self.executor.poll(point.run)
            except (WatchkeeperError, OSError):
                ended = RunState.RUNNING
            if ended in (RunState.SUCCEEDED, RunState.FAILED):
                self._settle(point, ended)
                continue
            point.run.detail["cancelled"] = True
            with contextlib.suppress(WatchkeeperError, OSError):
                if not job:
                    self.executor.cancel(point.run)
            self._settle(point, RunState.CANCELLED)
        while self.pending:
            point = self.pending.popleft()
            point.run.detail["cancelled"] = True
            self._settle(point, RunState.CANCELLED)


def _claim(db: Database, run: Run) -> bool:
    """Move a queued run to `starting`; False when it is no longer queued (cancelled)."""
    with write_transaction(db):
        return update_row(
            db,
            "runs",
            "id",
            run.id,
            {"state": RunState.STARTING.value},
            only_if_state_in=(RunState.QUEUED.value,),
        )


def _recorded(db: Database, run: Run) -> TrainResult | None:
    row = db.execute(
        "SELECT m.name, v.version, v.status, v.exit_code FROM model_versions v "
        "JOIN models m ON m.id = v.model_id WHERE v.run_id = ?",
        [run.id],
    ).fetchone()
    if row is None:
        return None
    return TrainResult(
        model=row[0],
        version=row[1],
        run_id=run.id,
        status=row[2],
        exit_code=row[3],
        problem=run.detail.get("problem"),
    )


def find_sweep(db: Database, text: str) -> dict[str, Any] | None:
    """The sweep `text` names (its id, or a unique start or end of one); None when none does."""
    rows = list(db.query("SELECT * FROM sweeps WHERE id = ?", [text]))
    if not rows and text:
        rows = list(
            db.query(
                "SELECT * FROM sweeps WHERE substr(id, 1, ?) = ? OR substr(id, -?) = ?"
                " ORDER BY created_at DESC",
                [len(text), text, len(text), text],
            )
        )
    if len(rows) > 1:
        raise WatchkeeperError(
            f"{text!r} matches several sweeps ({', '.join(row['id'] for row in rows)}); "
            "give more of it"
        )
    return decode_sweep(rows[0]) if rows else None


def decode_sweep(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "axes": json.loads(row["axes"] or "[]")}


def sweep_cancelled(db: Database, sweep_id: str) -> bool:
    row = db.execute("SELECT cancelled_at FROM sweeps WHERE id = ?", [sweep_id]).fetchone()
    return row is not None and row[0] is not None


def sweep_runs(db: Database, sweep_id: str) -> list[dict[str, Any]]:
    """The runs of a sweep, in grid order, JSON decoded."""
    return [
        decode_row(row)
        for row in db.query(
            "SELECT * FROM runs WHERE sweep_id = ? ORDER BY created_at, rowid", [sweep_id]
        )
    ]


def cancel_sweep(db: Database, sweep: dict[str, Any], paths: WatchkeeperPaths) -> dict[str, int]:
    """Cancel every point of a sweep not yet ended: queued ones are recorded cancelled here,
    running ones are stopped (one `scancel` of the job array on Slurm) and recorded by whoever
    follows them (the `train` command, the agent, or the settling below).

    Returns how many points were queued, running and already ended.
    """
    sweep_id = sweep["id"]
    rows = sweep_runs(db, sweep_id)
    if not any(row["state"] in ACTIVE_RUN_STATES for row in rows):
        ended = [row["state"] for row in rows]
        summary = ", ".join(f"{ended.count(state)} {state}" for state in dict.fromkeys(ended))
        raise WatchkeeperError(f"sweep {sweep_id} has already ended ({summary or 'no points'}).")
    with write_transaction(db):
        update_row(db, "sweeps", "id", sweep_id, {"cancelled_at": time.time()})
    counts = {"queued": 0, "running": 0, "ended": 0}
    executor: Executor | None = None
    for row in rows:
        run = Run.from_row(row)
        if row["state"] not in ACTIVE_RUN_STATES:
            counts["ended"] += 1
            continue
        executor = executor or executor_for(run.remote)
        if row["state"] == RunState.QUEUED.value:
            counts["queued"] += 1
            run.detail["cancelled"] = True
            finish_run(db, run, RunState.CANCELLED, executor, paths)
            continue
        counts["running"] += 1
        if sweep.get("array_job_id") and isinstance(executor, ArrayExecutor):
            continue  # the whole array is cancelled at once below
        executor.cancel(run)
        with write_transaction(db):  # the detail says the run was cancelled, not lost
            update_row(db, "runs", "id", run.id, {"detail": run.detail})
    if sweep.get("array_job_id") and counts["running"]:
        array_executor = executor or executor_for(sweep.get("remote"))
        if isinstance(array_executor, ArrayExecutor):
            array_executor.cancel_array(str(sweep["array_job_id"]))
    reconcile_runs(db, paths)
    return counts
