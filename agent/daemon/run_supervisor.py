"""Training from the agent: runs started in the background, cancelled, and polled to the end."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.runs.states import ACTIVE_RUN_STATES

if TYPE_CHECKING:
    from agent.daemon.ports import AgentCore

log = logging.getLogger(__name__)

_run_threads: dict[str, threading.Thread] = {}
_run_threads_lock = threading.Lock()
_last_states: dict[str, str] = {}
_remote_pollers: dict[str, threading.Thread] = {}  # remote name -> its poller of the last round


def resolve_repo(service: AgentCore, model: str, repo: str | None) -> Path:
    """The repo declaring `model`: the given one, else the only watched/registered one with it."""
    if repo:
        return Path(repo).expanduser().resolve()
    from agent.project.spec import repos_declaring

    candidates = repos_declaring(service.model_repos(), model)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise WatchkeeperError(
            f"no watched or registered repo declares a model named {model!r}; "
            "pass repo=PATH or register the repo with `watchkeeper init`."
        )
    raise WatchkeeperError(
        f"several repos declare {model!r} ({', '.join(map(str, candidates))}); pass repo=PATH."
    )


def _param_pairs(params: dict[str, Any]) -> list[str]:
    pairs = []
    for key, value in params.items():
        pairs.append(f"{key}={json.dumps(value)}")
    return pairs


def start(
    service: AgentCore,
    repo: Path,
    model: str,
    params: dict[str, Any],
    remote: str | None,
) -> dict[str, Any]:
    """Start `model` training on a thread of its own; return once the run is recorded."""
    from agent.runs.training import train

    started = threading.Event()
    outcome: dict[str, Any] = {}

    def on_start(run: Any, version: int) -> None:
        outcome.update(run=run.id, version=version, model=model, repo=str(repo))
        _publish_state(service, run.id, model, "running", None)
        started.set()

    def run_training() -> None:
        db = service.new_connection()
        offset = 0

        def on_log(chunk: bytes) -> None:
            nonlocal offset
            run_id = outcome.get("run")
            if run_id:
                service.publish(
                    "run_log",
                    {"run": run_id, "offset": offset, "text": chunk.decode(errors="replace")},
                )
            offset += len(chunk)

        def on_steps(batch: Any) -> None:
            run_id = outcome.get("run")
            if run_id:
                _publish_steps(service, run_id, batch)

        try:
            result = train(
                repo,
                model,
                param_pairs=_param_pairs(params),
                remote=remote,
                db=db,
                paths=service.paths,
                on_log=on_log,
                on_start=on_start,
                on_steps=on_steps,
            )
            _publish_state(service, result.run_id, model, result.status, result.exit_code)
            if result.status == "failed":
                _alert_failed(service, db, result)
            service.worker.request(
                ("staleness", repo), lambda: service.check_staleness(repo_filter=repo)
            )
        except Exception as error:
            outcome["error"] = error
            log.warning("training %s failed to start: %s", model, error)
        finally:
            started.set()
            db.close()

    thread = threading.Thread(target=run_training, name=f"wk-train-{model}", daemon=True)
    thread.start()
    started.wait(120)
    if "error" in outcome and "run" not in outcome:
        error = outcome["error"]
        if isinstance(error, WatchkeeperError):
            raise error
        raise WatchkeeperError(f"training {model} could not start: {error}")
    if "run" not in outcome:
        raise WatchkeeperError(f"training {model} did not start within 120 s")
    with _run_threads_lock:
        _run_threads[outcome["run"]] = thread
    return {key: outcome[key] for key in ("run", "version", "model", "repo")}


def _alert_failed(service: AgentCore, db: Database, result: Any) -> None:
    from agent.daemon import alerts

    row = db.execute("SELECT model_id FROM runs WHERE id = ?", [result.run_id]).fetchone()
    last_line = (result.log_tail.strip().splitlines() or ["no output"])[-1]
    alert = alerts.insert_alert(
        db,
        kind="run_failed",
        cause=f"run_failed:{result.run_id}",
        message=f"{result.model}@{result.version} failed (run {result.run_id}, exit "
        f"{result.exit_code}): {result.problem or last_line}",
        dedupe_key=f"run_failed:{result.run_id}",
        model_id=row[0] if row else None,
        reasons=[result.problem or f"exit code {result.exit_code}"],
        versions=[{"model": result.model, "version": result.version}],
    )
    if alert is not None:
        service.publish("alert", alert)


def _publish_steps(service: AgentCore, run_id: str, batch: Any) -> None:
    """A `run_steps` event: the points of `$WK_METRICS` just stored for the run."""
    service.publish("run_steps", {"run": run_id, **batch.as_event()})


def _publish_state(
    service: AgentCore, run_id: str, model: str, state: str, exit_code: int | None
) -> None:
    _last_states[run_id] = state
    service.publish(
        "run_state", {"run": run_id, "model": model, "state": state, "exit_code": exit_code}
    )


def cancel(service: AgentCore, run_id: str) -> dict[str, Any]:
    """Ask the run's executor to cancel it; the supervising thread or poll records the end.

    A sweep id (or a unique start or end of one) cancels every point of the sweep not yet
    ended, as `watchkeeper runs cancel SWEEP` does.
    """
    from agent.ledger.queries import find_run
    from agent.runs.executor import Run, executor_for
    from agent.runs.sweeps import cancel_sweep, find_sweep

    db = service.db()
    is_run = db.execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchone() is not None
    sweep = None if is_run else find_sweep(db, run_id)
    if sweep is not None:
        counts = cancel_sweep(db, sweep, service.paths)
        return {"sweep": sweep["id"], "cancelling": True, **counts}
    row = find_run(db, run_id)
    if row["state"] not in ACTIVE_RUN_STATES:
        raise WatchkeeperError(f"run {run_id} has already ended ({row['state']}).")
    run = Run.from_row(row)
    executor_for(run.remote).cancel(run)
    return {"run": run_id, "cancelling": True}


def poll_active_runs(service: AgentCore) -> None:
    """Follow runs nobody supervises (after a restart, or remote ones): logs, state, the end.

    Local runs are polled here; each remote's runs on a worker thread of that remote, so that
    a remote that is slow, silent or hostile delays only its own runs. A remote whose worker
    is still busy from an earlier round is skipped this round.
    """
    from agent.ledger.queries import active_runs
    from agent.runs.training import _supervised

    db = service.db()
    by_remote: dict[str, list[dict[str, Any]]] = {}
    for row in list(active_runs(db)):
        with _run_threads_lock:
            thread = _run_threads.get(row["id"])
        if thread is not None and thread.is_alive():
            continue
        if _supervised(row.get("detail") or {}):
            continue
        by_remote.setdefault(row.get("remote") or "", []).append(row)
    for remote, rows in by_remote.items():
        if remote:
            _poll_on_remote_worker(service, remote, rows)
        else:
            _poll_rows(service, db, rows)


def _poll_on_remote_worker(service: AgentCore, remote: str, rows: list[dict[str, Any]]) -> None:
    def work() -> None:
        db = service.new_connection()
        try:
            _poll_rows(service, db, rows)
        except Exception:
            log.exception("polling the runs on remote %s failed", remote)
        finally:
            db.close()

    with _run_threads_lock:
        busy = _remote_pollers.get(remote)
        if busy is not None and busy.is_alive():
            return
        worker = threading.Thread(target=work, name=f"wk-poll-{remote}", daemon=True)
        _remote_pollers[remote] = worker
    worker.start()


def _poll_rows(service: AgentCore, db: Database, rows: list[dict[str, Any]]) -> None:
    from agent.ledger import write_transaction
    from agent.ledger.queries import update_row
    from agent.runs.executor import Run, RunState, TargetUnreachableError, executor_for
    from agent.runs.step_metrics import pull_steps
    from agent.runs.training import fail_run, finish_run

    for row in rows:
        run_id = row["id"]
        detail = row.get("detail") or {}
        model = str(detail.get("model", ""))
        run = Run.from_row(row)
        try:
            executor = executor_for(run.remote)
        except WatchkeeperError as error:
            log.warning("cannot poll run %s: %s", run_id, error)
            continue
        try:
            state = executor.poll(run) if run.pid or run.remote_job_id else None
            offset = int(row.get("log_offset") or 0)
            chunk = executor.read_log(run, offset)
        except TargetUnreachableError as error:
            log.warning("cannot poll run %s for now: %s", run_id, error)
            continue
        except WatchkeeperError as error:  # the target answers nonsense: the run has failed
            _settled(service, db, fail_run(db, run, executor, service.paths, str(error)))
            continue
        if chunk:
            service.publish(
                "run_log", {"run": run_id, "offset": offset, "text": chunk.decode(errors="replace")}
            )
            with write_transaction(db):
                update_row(db, "runs", "id", run_id, {"log_offset": offset + len(chunk)})
        if state is not None and not state.is_final:
            try:
                batch = pull_steps(db, run, executor)
            except TargetUnreachableError as error:
                log.warning("cannot read the step metrics of run %s for now: %s", run_id, error)
                batch = None
            if batch is not None:
                _publish_steps(service, run_id, batch)
        if state is None:
            state = RunState.INTERRUPTED
        if state.is_final:
            _settled(service, db, finish_run(db, run, state, executor, service.paths))
        elif _last_states.get(run_id) != state.value:
            _publish_state(service, run_id, model, state.value, None)


def _settled(service: AgentCore, db: Database, result: Any) -> None:
    _publish_state(service, result.run_id, result.model, result.status, result.exit_code)
    if result.status == "failed":
        _alert_failed(service, db, result)
