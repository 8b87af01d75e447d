"""Export ledger versions to an MLflow tracking server: runs, registered model versions, aliases.

Each version becomes one MLflow run (params, final and step metrics, lineage tags, artifacts),
tagged with its global id; each model a registered model and each version a model version; the
ledger's current aliases become MLflow aliases. `mlflow_exports` records what went where, and
the global-id tag on the server guards against duplicates when that record was not written.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.interop.mlflow_capture import INSTALL_HINT
from agent.ledger import write_transaction
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.queries import VERSION_SELECT, decode_row
from agent.runs.params import param_text
from agent.runs.states import ACTIVE_RUN_STATES
from agent.runs.step_metrics import decode_floats

GLOBAL_ID_TAG = "watchkeeper.global_id"
COMPLETE_TAG = "watchkeeper.export_complete"
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED"}
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
MAX_KEY_LENGTH = 250
SEARCH_PAGE = 1000
RECORD_EVERY = 50
NOT_RETRIED = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "BAD_REQUEST",
    "INVALID_STATE",
    "ENDPOINT_NOT_FOUND",
}
CONNECTION_CAUSE = re.compile(r"\[Errno -?\d+\] ([^'\")]+)|(Read timed out)")
KEY_CHARACTERS = re.compile(r"[^A-Za-z0-9_\-. /]")

T = TypeVar("T")


def mlflow_client(tracking_uri: str) -> Any:
    """MLflow's client for `tracking_uri`, with its own HTTP retries off (ours take over).

    Credentials come from the environment as MLflow reads them (MLFLOW_TRACKING_TOKEN, or
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD); Watchkeeper keeps none.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise WatchkeeperError(
            f"exporting to MLflow needs the mlflow package: {INSTALL_HINT}"
        ) from error
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


# -- what to export ----------------------------------------------------------------------------


def pending_count(db: Database, tracking_uri: str) -> int:
    """How many finished, not deleted versions are not yet exported to the server.

    >>> from agent.ledger import open_ledger
    >>> pending_count(open_ledger(), "http://mlflow:5000")
    0
    """
    marks = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    return int(
        db.execute(
            f"SELECT COUNT(*) FROM model_versions v WHERE v.status NOT IN ({marks}) "
            "AND v.deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM mlflow_exports e "
            "WHERE e.version_id = v.id AND e.tracking_uri = ?)",
            [*ACTIVE_RUN_STATES, tracking_uri],
        ).fetchone()[0]
    )


def pending_versions(
    db: Database, tracking_uri: str, version_ids: list[int] | None, since: float | None
) -> tuple[list[dict[str, Any]], int]:
    """Finished, not deleted versions (all, or `version_ids`) not yet exported to the server,
    oldest first, and how many of the chosen ones were exported before."""
    marks = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    where = f"v.status NOT IN ({marks}) AND v.deleted_at IS NULL"
    parameters: list[Any] = list(ACTIVE_RUN_STATES)
    if version_ids is not None:
        where += f" AND v.id IN ({', '.join('?' for _ in version_ids) or 'NULL'})"
        parameters.extend(version_ids)
    if since is not None:
        where += " AND COALESCE(v.started_at, v.ended_at, 0) >= ?"
        parameters.append(since)
    exported = "SELECT 1 FROM mlflow_exports e WHERE e.version_id = v.id AND e.tracking_uri = ?"
    rows = [
        decode_row(row)
        for row in db.query(
            VERSION_SELECT + f" WHERE {where} AND NOT EXISTS ({exported}) ORDER BY v.id",
            [*parameters, tracking_uri],
        )
    ]
    already = db.execute(
        f"SELECT COUNT(*) FROM model_versions v WHERE {where} AND EXISTS ({exported})",
        [*parameters, tracking_uri],
    ).fetchone()[0]
    return rows, int(already)


@dataclass
class RunPayload:
    """Everything one version sends, read from the ledger before any request is made."""

    version_id: int
    global_id: str
    model: str
    experiment: str
    run_name: str
    status: str
    start_ms: int
    end_ms: int
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[tuple[str, float, int, int]]  # key, value, timestamp ms, step
    artifacts: dict[str, Path]


def run_payload(
    db: Database, row: dict[str, Any], store: ArtifactStore, experiment: str | None
) -> RunPayload:
    """The MLflow run of a ledger version: its params, metrics, lineage tags and artifacts."""
    version_id = int(row["id"])
    start = row["started_at"] or row["ended_at"] or time.time()
    end = row["ended_at"] or start
    start_ms, end_ms = int(start * 1000), int(end * 1000)
    params = {
        _key(name): param_text(value)[:MAX_PARAM_LENGTH]
        for name, value in (row["params"] or {}).items()
    }
    metrics = _step_points(db, version_id, end_ms)
    last_step = {key: step for key, _, _, step in metrics}
    last_value = {key: value for key, value, _, _ in metrics}
    for name, value in (row["metrics"] or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value) or last_value.get(_key(name)) == value:
            continue
        metrics.append((_key(name), float(value), end_ms + 1, last_step.get(_key(name), 0)))
    tags = lineage_tags(db, row)
    artifacts: dict[str, Path] = {}
    missing: list[str] = []
    for name, digest in (row["artifacts"] or {}).items():
        stored = store.path(str(digest)) if digest else None
        if stored is not None and stored.is_file() and _safe_relative(name):
            artifacts[name] = stored
        else:
            missing.append(name)
    if missing:
        tags["watchkeeper.artifacts_not_in_store"] = ", ".join(sorted(missing))[:MAX_TAG_LENGTH]
    return RunPayload(
        version_id=version_id,
        global_id=str(row["global_id"]),
        model=str(row["model"]),
        experiment=experiment or str(row["model"]),
        run_name=f"{row['model']}-v{row['version']}",
        status=RUN_STATUS.get(str(row["status"]), "KILLED"),
        start_ms=start_ms,
        end_ms=end_ms,
        params=params,
        tags=tags,
        metrics=metrics,
        artifacts=artifacts,
    )


def _step_points(db: Database, version_id: int, end_ms: int) -> list[tuple[str, float, int, int]]:
    """Each finite step-metric point, at the time it was logged where the ledger has it
    (points captured from MLflow), else at the version's end time (points of $WK_METRICS)."""
    points: list[tuple[str, float, int, int]] = []
    for name, steps_f8, values_f8, times_f8 in db.execute(
        "SELECT name, steps_f8, values_f8, times_f8 FROM step_metrics WHERE version_id = ? "
        "ORDER BY name, first_line",
        [version_id],
    ).fetchall():
        key = _key(str(name))
        steps, values = decode_floats(steps_f8), decode_floats(values_f8)
        times_ms = (
            [round(seconds * 1000) for seconds in decode_floats(times_f8)]
            if times_f8 is not None
            else [end_ms] * len(values)
        )
        for step, value, time_ms in zip(steps, values, times_ms, strict=False):
            if math.isfinite(value) and math.isfinite(step):
                points.append((key, value, time_ms, int(step)))
    return points


def lineage_tags(db: Database, row: dict[str, Any]) -> dict[str, str]:
    """Where a version came from, as MLflow tags: its global id, model and number, git commit
    and dirty-diff blob, data fingerprints, executor, host, status and the user's tags."""
    tags = {
        GLOBAL_ID_TAG: str(row["global_id"]),
        "watchkeeper.model": str(row["model"]),
        "watchkeeper.version": str(row["version"]),
        "watchkeeper.status": str(row["status"]),
        "watchkeeper.executor": str(row["executor"] or ""),
        "watchkeeper.host": str(row["host"] or ""),
        "watchkeeper.train_command": str(row["train_command"] or ""),
        "mlflow.runName": f"{row['model']}-v{row['version']}",
    }
    if row["commit_sha"]:
        tags["watchkeeper.git_commit"] = str(row["commit_sha"])
        tags["mlflow.source.git.commit"] = str(row["commit_sha"])
    tags["watchkeeper.dirty"] = "true" if row["dirty"] else "false"
    if row["diff_hash"]:
        tags["watchkeeper.diff"] = str(row["diff_hash"])
    for dep, recorded in (row["data"] or {}).items():
        if isinstance(recorded, dict) and recorded.get("fingerprint"):
            tags[_key(f"watchkeeper.data.{dep}")] = str(recorded["fingerprint"])
    if row.get("author"):
        tags["watchkeeper.author"] = str(row["author"])
    if row.get("experiment"):
        tags["watchkeeper.experiment"] = "true"
    for key, value in db.execute(
        "SELECT key, value FROM version_tags WHERE version_id = ? ORDER BY key", [row["id"]]
    ).fetchall():
        tags.setdefault(_key(str(key)), str(value))
    return {key: value[:MAX_TAG_LENGTH] for key, value in tags.items()}


def _key(name: str) -> str:
    """A name MLflow takes as a param, metric or tag key.

    >>> _key("data/train set (v2).csv")
    'data/train set _v2_.csv'
    """
    return KEY_CHARACTERS.sub("_", name)[:MAX_KEY_LENGTH] or "_"


def _safe_relative(name: str) -> bool:
    pure = PurePosixPath(name)
    return bool(name) and not pure.is_absolute() and ".." not in pure.parts


def batches(payload: RunPayload) -> list[tuple[list[Any], list[Any], list[Any]]]:
    """(metrics, params, tags) batches within MLflow's limits; the last one carries the
    tag that marks the run complete."""
    from mlflow.entities import Metric, Param, RunTag

    params = [Param(k, v) for k, v in payload.params.items()]
    tags = [RunTag(k, v) for k, v in payload.tags.items() if k != GLOBAL_ID_TAG]
    metrics = [Metric(k, v, ts, step) for k, v, ts, step in payload.metrics]
    out: list[tuple[list[Any], list[Any], list[Any]]] = []
    while params or tags or metrics or not out:
        batch_params = params[:MAX_PARAMS_TAGS_PER_BATCH]
        params = params[len(batch_params) :]
        batch_tags = tags[:MAX_PARAMS_TAGS_PER_BATCH]
        tags = tags[len(batch_tags) :]
        room = MAX_ENTITIES_PER_BATCH - len(batch_params) - len(batch_tags)
        batch_metrics = metrics[:room]
        metrics = metrics[len(batch_metrics) :]
        out.append((batch_metrics, batch_params, batch_tags))
    last_metrics, last_params, last_tags = out[-1]
    if len(last_tags) >= MAX_PARAMS_TAGS_PER_BATCH or (
        len(last_metrics) + len(last_params) + len(last_tags) >= MAX_ENTITIES_PER_BATCH
    ):
        out.append(([], [], []))
    out[-1][2].append(RunTag(COMPLETE_TAG, "true"))
    return out


# -- talking to the server, with retries --------------------------------------------------------


class ExportInterrupted(Exception):
    """A request kept failing (or cannot succeed); the message says what the server answered."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing request is tried again, with doubling waits between tries."""

    retries: int = 5
    first_wait: float = 0.5
    longest_wait: float = 8.0


def _retryable(error: BaseException) -> bool:
    code = getattr(error, "error_code", None)
    if code in NOT_RETRIED:
        return False
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return not (isinstance(status, int) and 400 <= status < 500 and status != 429)


def _hint(error: BaseException) -> str:
    if getattr(error, "error_code", None) in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return (
            " (set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD, to credentials this server takes)"
        )
    return ""


def _first_line(error: BaseException) -> str:
    """What went wrong, short: a connection failure is told by its cause, not urllib3's text.

    >>> _first_line(Exception("API request to http://h/api/x failed with exception "
    ...     "HTTPConnectionPool(host='h'): Max retries exceeded (Caused by NewConnectionError("
    ...     "'Failed to establish a new connection: [Errno 111] Connection refused'))"))
    'API request to http://h/api/x failed: Connection refused'
    """
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    if " failed with exception " in text:
        head = text.split(" failed with exception ", 1)[0]
        cause = CONNECTION_CAUSE.search(str(error))
        reason = (cause.group(1) or cause.group(2)) if cause else "no usable answer"
        return f"{head} failed: {reason.strip()}"
    return text[:300]


@dataclass
class ServerState:
    """What the server already holds: runs by global id (and whether complete), model versions
    by run id; filled once per export, then kept current by the workers."""

    runs: dict[str, tuple[str, bool]] = field(default_factory=dict)
    model_versions: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class MlflowExporter:
    """Sends versions to one tracking server; every step can be repeated without duplicating."""

    def __init__(
        self,
        client: Any,
        shown_uri: str,
        *,
        retry: RetryPolicy = RetryPolicy(),
        register: bool = True,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.shown_uri = shown_uri
        self.retry = retry
        self.register = register
        self.stop = stop or threading.Event()
        self.state = ServerState()
        self.first_failure: ExportInterrupted | None = None

    def call(
        self, what: str, action: Callable[[], T], before_retry: Callable[[], Any] | None = None
    ) -> T:
        """`action()`, tried again with backoff while it fails in a way a retry can cure."""
        wait_seconds = self.retry.first_wait
        for attempt in range(self.retry.retries + 1):
            if self.stop.is_set():
                raise ExportInterrupted("stopped")
            try:
                if attempt and before_retry is not None:
                    found = before_retry()
                    if found is not None:
                        return found
                return action()
            except Exception as error:  # classified, then raised again as one line
                if not _retryable(error):
                    raise ExportInterrupted(
                        f"{what}: {_first_line(error)}{_hint(error)}"
                    ) from error
                if attempt == self.retry.retries:
                    tries = self.retry.retries + 1
                    raise ExportInterrupted(
                        f"{what} failed {tries} times: {_first_line(error)}"
                    ) from error
            self.stop.wait(wait_seconds)
            wait_seconds = min(wait_seconds * 2, self.retry.longest_wait)
        raise AssertionError("unreachable")

    def experiment_id(self, name: str, create: bool) -> str:
        """The id of experiment `name`, created when missing unless `create` is false."""
        found = self.call(
            f"looking up experiment {name!r}", lambda: self.client.get_experiment_by_name(name)
        )
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise WatchkeeperError(
                    f"--experiment {name!r} is deleted at {self.shown_uri}; restore it in MLflow "
                    "or export to another experiment with --experiment"
                )
            return str(found.experiment_id)
        if not create:
            raise WatchkeeperError(
                f"--experiment {name!r}: no such experiment at {self.shown_uri}; create it there, "
                "or leave out --no-create to have it created"
            )
        return str(
            self.call(
                f"creating experiment {name!r}",
                lambda: self.client.create_experiment(name),
                before_retry=lambda: _id_or_none(self.client.get_experiment_by_name(name)),
            )
        )

    def read_server_state(self, experiment_ids: list[str], models: list[str]) -> None:
        """The runs tagged with a global id in these experiments, and the model versions of
        these registered models."""
        for experiment_id in experiment_ids:
            token: str | None = None
            while True:
                page = self.call(
                    "listing exported runs",
                    lambda t=token, e=experiment_id: self.client.search_runs(  # type: ignore[misc]
                        [e],
                        filter_string=f"tags.`{GLOBAL_ID_TAG}` LIKE '%'",
                        max_results=SEARCH_PAGE,
                        page_token=t,
                    ),
                )
                for run in page:
                    global_id = run.data.tags.get(GLOBAL_ID_TAG)
                    complete = run.data.tags.get(COMPLETE_TAG) == "true"
                    known = self.state.runs.get(global_id)
                    if global_id and (known is None or (complete and not known[1])):
                        self.state.runs[global_id] = (run.info.run_id, complete)
                token = page.token
                if not token:
                    break
        if not self.register:
            return
        for model in models:
            for version in self._model_versions(f"name = '{_quoted(model)}'"):
                if version.run_id:
                    self.state.model_versions[version.run_id] = str(version.version)

    def _model_versions(self, filter_string: str) -> list[Any]:
        found: list[Any] = []
        token: str | None = None
        while True:
            page = self.call(
                "listing registered versions",
                lambda t=token: self.client.search_model_versions(  # type: ignore[misc]
                    filter_string, max_results=SEARCH_PAGE, page_token=t
                ),
            )
            found.extend(page)
            token = page.token
            if not token:
                return found

    def ensure_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        def create() -> None:
            try:
                self.client.create_registered_model(name)
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

        self.call(f"registering model {name!r}", create)

    def export(self, payload: RunPayload, experiment_id: str) -> str:
        """Send one version's run (or finish sending it); its MLflow run id."""
        try:
            with self.state.lock:
                known = self.state.runs.get(payload.global_id)
            if known is not None and known[1]:
                return known[0]
            run_id = known[0] if known else self._create_run(payload, experiment_id)
            self._send_run(payload, run_id)
            with self.state.lock:
                self.state.runs[payload.global_id] = (run_id, True)
            return run_id
        except ExportInterrupted as error:
            with self.state.lock:
                if not self.stop.is_set():
                    self.first_failure = error
                    self.stop.set()  # the other workers give up at their next request
            raise

    def _create_run(self, payload: RunPayload, experiment_id: str) -> str:
        """A new run tagged with the global id; a retry first looks for a run the failed
        request may have made after all."""

        def made_before() -> str | None:
            found = self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{GLOBAL_ID_TAG}` = '{payload.global_id}'",
                max_results=1,
            )
            return str(found[0].info.run_id) if found else None

        return str(
            self.call(
                f"creating the run of {payload.run_name}",
                lambda: (
                    self.client.create_run(
                        experiment_id,
                        start_time=payload.start_ms,
                        tags={GLOBAL_ID_TAG: payload.global_id},
                        run_name=payload.run_name,
                    ).info.run_id
                ),
                before_retry=made_before,
            )
        )

    def _send_run(self, payload: RunPayload, run_id: str) -> None:
        if payload.artifacts:
            with tempfile.TemporaryDirectory(prefix="wk-mlflow-export-") as scratch:
                for name, stored in payload.artifacts.items():
                    link = Path(scratch, name)
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(stored)
                self.call(
                    f"uploading the artifacts of {payload.run_name}",
                    lambda: self.client.log_artifacts(run_id, scratch),
                )
        for metrics, params, tags in batches(payload):
            self.call(
                f"logging {payload.run_name}",
                lambda m=metrics, p=params, t=tags: self.client.log_batch(  # type: ignore[misc]
                    run_id, metrics=m, params=p, tags=t
                ),
            )
        self.call(
            f"ending the run of {payload.run_name}",
            lambda: self.client.set_terminated(run_id, payload.status, payload.end_ms),
        )

    def register_version(self, payload: RunPayload, run_id: str) -> str:
        """The registered model version of a version's run, created once."""
        with self.state.lock:
            known = self.state.model_versions.get(run_id)
        if known is not None:
            return known

        def made_before() -> str | None:
            found = self._model_versions(f"run_id = '{run_id}'")
            return str(found[0].version) if found else None

        version = self.call(
            f"registering {payload.run_name}",
            lambda: str(
                self.client.create_model_version(
                    payload.model,
                    f"runs:/{run_id}",
                    run_id=run_id,
                    tags={GLOBAL_ID_TAG: payload.global_id},
                    await_creation_for=0,
                ).version
            ),
            before_retry=made_before,
        )
        with self.state.lock:
            self.state.model_versions[run_id] = version
        return version

    def sync_aliases(self, model: str, wanted: dict[str, str], managed: set[str]) -> int:
        """Set the registered model's aliases to `wanted` (alias -> model version), and remove
        the `managed` aliases no longer wanted; the number of changes."""
        current = self.call(
            f"reading the aliases of {model!r}",
            lambda: dict(self.client.get_registered_model(model).aliases or {}),
        )
        changes = 0
        for alias, version in sorted(wanted.items()):
            if str(current.get(alias)) != version:
                self.call(
                    f"setting alias {model}@{alias}",
                    lambda a=alias, v=version: self.client.set_registered_model_alias(  # type: ignore[misc]
                        model, a, v
                    ),
                )
                changes += 1
        for alias in sorted((managed - set(wanted)) & set(current)):
            self.call(
                f"removing alias {model}@{alias}",
                lambda a=alias: self.client.delete_registered_model_alias(model, a),  # type: ignore[misc]
            )
            changes += 1
        return changes


def _id_or_none(experiment: Any) -> str | None:
    return None if experiment is None else str(experiment.experiment_id)


def _quoted(text: str) -> str:
    return text.replace("'", "\\'")


# -- one export, start to end -------------------------------------------------------------------


@dataclass
class ExportReport:
    """What an export did: versions exported now, found exported before, alias changes."""

    exported: int = 0
    already: int = 0
    pending: int = 0
    alias_changes: int = 0
    interrupted: str | None = None


def export_versions(
    db: Database,
    exporter: MlflowExporter,
    tracking_uri: str,
    store: ArtifactStore,
    *,
    version_ids: list[int] | None = None,
    since: float | None = None,
    experiment: str | None = None,
    create: bool = True,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Export the chosen versions not yet on the server, then bring the aliases up to date.

    A request that keeps failing stops the export: what finished is recorded (and found again
    on the server next time), and the report says how far it got.
    """
    rows, already = pending_versions(db, tracking_uri, version_ids, since)
    report = ExportReport(already=already, pending=len(rows))
    try:
        if rows:
            _export_rows(
                db,
                exporter,
                tracking_uri,
                store,
                rows,
                experiment,
                create,
                workers,
                report,
                progress,
            )
        if exporter.register:
            report.alias_changes = _sync_all_aliases(db, exporter, tracking_uri, version_ids)
    except ExportInterrupted as error:
        report.interrupted = str(error)
    return report


def _export_rows(
    db: Database,
    exporter: MlflowExporter,
    tracking_uri: str,
    store: ArtifactStore,
    rows: list[dict[str, Any]],
    experiment: str | None,
    create: bool,
    workers: int,
    report: ExportReport,
    progress: Callable[[int, int], None] | None,
) -> None:
    payloads = [run_payload(db, row, store, experiment) for row in rows]
    experiments = {
        name: exporter.experiment_id(name, create)
        for name in sorted({payload.experiment for payload in payloads})
    }
    models = sorted({payload.model for payload in payloads})
    exporter.read_server_state(list(experiments.values()), models)
    if exporter.register:
        for model in models:
            exporter.ensure_registered_model(model)
    done: list[tuple[RunPayload, str, str, str | None]] = []

    def record() -> None:
        with write_transaction(db):
            db.conn.executemany(
                "INSERT OR REPLACE INTO mlflow_exports (version_id, tracking_uri, experiment_id, "
                "run_id, model_version, exported_at) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (p.version_id, tracking_uri, experiment_id, run_id, version, time.time())
                    for p, experiment_id, run_id, version in done
                ],
            )
        report.exported += len(done)
        done.clear()

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mlflow-export")
    futures = [
        (payload, pool.submit(exporter.export, payload, experiments[payload.experiment]))
        for payload in payloads
    ]
    try:
        # Runs go up in parallel; versions are registered in ledger order, so that MLflow's
        # version numbers follow the ledger's.
        for payload, future in futures:
            try:
                run_id = future.result()
                version = exporter.register_version(payload, run_id) if exporter.register else None
            except ExportInterrupted as error:
                raise (exporter.first_failure or error) from None
            done.append((payload, experiments[payload.experiment], run_id, version))
            if len(done) >= RECORD_EVERY:
                record()
            if progress is not None:
                progress(report.exported + len(done), len(payloads))
    except BaseException:
        exporter.stop.set()  # the workers give up at their next request
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if done:
            record()


def _sync_all_aliases(
    db: Database, exporter: MlflowExporter, tracking_uri: str, version_ids: list[int] | None
) -> int:
    """Bring the aliases of every model with a version on the server up to date."""
    scope = ""
    parameters: list[Any] = [tracking_uri]
    if version_ids is not None:
        scope = (
            " AND v.model_id IN (SELECT model_id FROM model_versions WHERE id IN "
            f"({', '.join('?' for _ in version_ids) or 'NULL'}))"
        )
        parameters.extend(version_ids)
    models = db.execute(
        "SELECT DISTINCT m.id, m.name FROM mlflow_exports e JOIN model_versions v "
        "ON v.id = e.version_id JOIN models m ON m.id = v.model_id "
        f"WHERE e.tracking_uri = ? AND e.model_version IS NOT NULL{scope} ORDER BY m.name",
        parameters,
    ).fetchall()
    changes = 0
    for model_id, name in models:
        wanted = {
            str(alias): str(version)
            for alias, version in db.execute(
                "SELECT a.alias, e.model_version FROM version_aliases a JOIN mlflow_exports e "
                "ON e.version_id = a.version_id AND e.tracking_uri = ? "
                "WHERE a.model_id = ? AND a.moved_at IS NULL AND e.model_version IS NOT NULL",
                [tracking_uri, model_id],
            ).fetchall()
        }
        managed = {
            str(alias)
            for (alias,) in db.execute(
                "SELECT DISTINCT alias FROM version_aliases WHERE model_id = ?", [model_id]
            ).fetchall()
        }
        changes += exporter.sync_aliases(str(name), wanted, managed)
    return changes
