"""MLflow capture: a run's MLflow logging goes to a SQLite file in its run folder, read back
into its version (params, step metrics, tags, the MLflow run id) when the run ends.

Reading needs no `mlflow` package: the file is read with sqlite3 on MLflow's own schema
(tables `experiments`, `runs`, `params`, `metrics`, `tags`).
"""

from __future__ import annotations

import json
import math
import shlex
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.runs.executor import MLFLOW_DB_FILE
from agent.runs.params import param_text
from agent.runs.step_metrics import encode_floats

CAPTURE = "capture"
LOCK_WAIT_SECONDS = 1.0
PARENT_RUN_TAG = "mlflow.parentRunId"
SYSTEM_TAG_PREFIX = "mlflow."
INSTALL_HINT = "pip install -e '.[mlflow]' in the Watchkeeper checkout"
NOTE = "watchkeeper: "


def run_name(model: str, version: int | None) -> str:
    """The MLflow run name of a model's version.

    >>> run_name("churn", 3)
    'churn-v3'
    """
    return f"{model}-v{version}" if version is not None else model


def run_script_setup(mode: str, experiment: str, name: str) -> str:
    """Shell for run.sh (after its log redirect): point MLflow at `$RUN_DIR/mlflow.db`.

    A tracking URI already in the environment, or `mode` "off", wins; the log says so.
    """
    if mode != CAPTURE:
        return (
            f'echo "{NOTE}mlflow = \\"off\\" for this model: MLflow logging is left as the code '
            'and environment set it and is not recorded on the version"\n'
        )
    tags = shlex.quote(json.dumps({"mlflow.runName": name}))
    return (
        'if [ -n "${MLFLOW_TRACKING_URI:-}" ]; then\n'
        f'    echo "{NOTE}MLFLOW_TRACKING_URI is set in the environment: MLflow logging goes '
        'there and is not recorded on the version"\n'
        "else\n"
        f'    export MLFLOW_TRACKING_URI="sqlite:///$RUN_DIR/{MLFLOW_DB_FILE}"\n'
        f"    export MLFLOW_EXPERIMENT_NAME={shlex.quote(experiment)}\n"
        f"    export MLFLOW_RUN_CONTEXT={tags}\n"
        "fi\n"
    )


class MlflowReadError(Exception):
    """The run's MLflow file exists but cannot be read (locked, truncated, not SQLite)."""


@dataclass
class MlflowRun:
    """What one MLflow run logged: its ids, params, tags and metric points (step order)."""

    run_id: str
    experiment: str | None
    name: str | None
    status: str | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    # When each point was logged (seconds since the epoch), parallel to `metrics`' lists.
    metric_times: dict[str, list[float]] = field(default_factory=dict)
    other_runs: list[str] = field(default_factory=list)

    @property
    def final_metrics(self) -> dict[str, float]:
        """The last finite value of each metric, in step order."""
        finals: dict[str, float] = {}
        for name, (_, values) in self.metrics.items():
            finite = [v for v in values[-16:] if math.isfinite(v)] or [
                v for v in values if math.isfinite(v)
            ]
            if finite:
                finals[name] = finite[-1]
        return finals


def read_mlflow_db(path: Path) -> MlflowRun | None:
    """The first top-level run logged to the MLflow SQLite file at `path`; None when the file
    is missing or holds no run. Raises MlflowReadError when it cannot be read."""
    if not path.is_file():
        return None
    try:
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=LOCK_WAIT_SECONDS
        )
    except sqlite3.Error as error:
        raise MlflowReadError(f"cannot open {path}: {error}") from error
    try:
        return _read_first_run(connection)
    except sqlite3.Error as error:
        raise MlflowReadError(f"cannot read {path}: {error}") from error
    finally:
        connection.close()


def _read_first_run(connection: sqlite3.Connection) -> MlflowRun | None:
    rows = connection.execute(
        "SELECT r.run_uuid, e.name, r.name, r.status FROM runs r "
        "LEFT JOIN experiments e ON e.experiment_id = r.experiment_id "
        "WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ?) "
        "ORDER BY r.start_time, r.run_uuid",
        [PARENT_RUN_TAG],
    ).fetchall()
    if not rows:
        return None
    run_id, experiment, name, status = rows[0]
    run = MlflowRun(run_id, experiment, name, status, other_runs=[row[0] for row in rows[1:]])
    run.params = dict(
        connection.execute("SELECT key, value FROM params WHERE run_uuid = ?", [run_id])
    )
    run.tags = {
        key: value
        for key, value in connection.execute(
            "SELECT key, value FROM tags WHERE run_uuid = ?", [run_id]
        )
        if not key.startswith(SYSTEM_TAG_PREFIX)
    }
    points = connection.execute(
        "SELECT key, step, value, is_nan, timestamp FROM metrics WHERE run_uuid = ? "
        "ORDER BY key, step, timestamp",
        [run_id],
    )
    current: tuple[list[float], list[float]] | None = None
    times: list[float] = []
    current_key = None
    for key, step, value, is_nan, timestamp_ms in points:
        if key != current_key:
            current_key = key
            current = run.metrics.setdefault(key, ([], []))
            times = run.metric_times.setdefault(key, [])
        assert current is not None
        current[0].append(float(step))
        current[1].append(math.nan if is_nan else float(value))
        times.append(float(timestamp_ms or 0) / 1000.0)
    return run


def same_param(declared: Any, logged: str) -> bool:
    """True when a logged MLflow param (text) says the same as the declared value.

    >>> same_param(0.01, "0.01"), same_param(True, "True"), same_param(5, "5.0"), same_param(5, "6")
    (True, True, True, False)
    """
    text = param_text(declared)
    if logged == text or logged == str(declared):
        return True
    if isinstance(declared, bool):
        return logged.strip().lower() == text
    if isinstance(declared, int | float):
        try:
            return float(logged) == float(declared)
        except ValueError:
            return False
    return False


def param_mismatches(declared: dict[str, Any], logged: dict[str, str]) -> dict[str, Any]:
    """The params the ledger records that the code logged with another value.

    >>> param_mismatches({"lr": 0.1, "n": 5}, {"lr": "0.5", "n": "5", "seed": "1"})
    {'lr': {'declared': 0.1, 'logged': '0.5'}}
    """
    return {
        name: {"declared": value, "logged": logged[name]}
        for name, value in declared.items()
        if name in logged and not same_param(value, logged[name])
    }


@dataclass
class Capture:
    """What a finished run logged with MLflow, ready for its version."""

    record: dict[str, Any] | None  # the version's `mlflow` column (None: nothing logged)
    final_metrics: dict[str, float] = field(default_factory=dict)
    run: MlflowRun | None = None


def capture_run(run_dir: Path, declared_params: dict[str, Any]) -> Capture:
    """Read a run folder's MLflow file. A file that cannot be read, or a run MLflow still
    marks running (the training was killed), is recorded as partial."""
    try:
        run = read_mlflow_db(run_dir / MLFLOW_DB_FILE)
    except MlflowReadError as error:
        return Capture({"partial": True, "problem": str(error)})
    if run is None:
        return Capture(None)
    record: dict[str, Any] = {
        "run_id": run.run_id,
        "experiment": run.experiment,
        "run_name": run.name,
        "status": run.status,
        "params": run.params,
        "tags": run.tags,
        "param_mismatches": param_mismatches(declared_params, run.params),
    }
    if run.other_runs:
        record["other_runs"] = run.other_runs
    if run.status in (None, "RUNNING", "SCHEDULED"):
        record["partial"] = True
        record["problem"] = (
            f"MLflow run {run.run_id} did not end ({run.status}): the training stopped before "
            "mlflow.end_run; what it logged until then is recorded"
        )
    return Capture(record, run.final_metrics, run)


def store_capture(db: Database, run_id: str, version_id: int, capture: Capture) -> None:
    """Store the captured metric points as the version's step metrics (inside the caller's
    write transaction); a name the run also wrote to $WK_METRICS keeps those points."""
    if capture.run is None or not capture.run.metrics:
        return
    taken = {
        row[0]
        for row in db.execute("SELECT DISTINCT name FROM step_metrics WHERE run_id = ?", [run_id])
    }
    stored = {k: v for k, v in capture.run.metrics.items() if k not in taken}
    times = capture.run.metric_times
    db.conn.executemany(
        "INSERT INTO step_metrics (version_id, run_id, name, first_line, points, steps_f8, "
        "values_f8, times_f8) VALUES (?, ?, ?, 0, ?, ?, ?, ?)",
        [
            (
                version_id,
                run_id,
                name,
                len(values),
                encode_floats(steps),
                encode_floats(values),
                _times_blob(times.get(name), len(values)),
            )
            for name, (steps, values) in stored.items()
        ],
    )
    _record_reads(db, run_id, version_id, capture, stored)


def _times_blob(times: list[float] | None, points: int) -> bytes | None:
    """The points' times as `step_metrics.times_f8`, or None when they are not all known."""
    if times is None or len(times) != points:
        return None
    return encode_floats(times)


def _record_reads(
    db: Database,
    run_id: str,
    version_id: int,
    capture: Capture,
    stored: dict[str, tuple[list[float], list[float]]],
) -> None:
    """Count the captured points in `step_metric_reads`, which step summaries read."""
    finals = {k: v for k, v in capture.final_metrics.items() if k in stored}
    row = db.execute(
        "SELECT last_values, lines FROM step_metric_reads WHERE run_id = ?", [run_id]
    ).fetchone()
    if row is None:
        lines = max((len(values) for _, values in stored.values()), default=0)
        db.execute(
            "INSERT INTO step_metric_reads (run_id, version_id, byte_offset, lines, skipped, "
            "first_skipped, last_values, file_lines) VALUES (?, ?, 0, ?, 0, NULL, ?, 0)",
            [run_id, version_id, lines, json.dumps(finals)],
        )
        return
    last_values = {**finals, **json.loads(row[0] or "{}")}
    db.execute(
        "UPDATE step_metric_reads SET last_values = ? WHERE run_id = ?",
        [json.dumps(last_values), run_id],
    )


def describe_mismatches(record: dict[str, Any] | None) -> str | None:
    """One line about declared params the code logged otherwise, or None.

    >>> describe_mismatches({"param_mismatches": {"lr": {"declared": 0.1, "logged": "0.5"}}})
    'the code logged params other than the ledger records: lr=0.5 (declared 0.1)'
    """
    mismatches = (record or {}).get("param_mismatches") or {}
    if not mismatches:
        return None
    listed = ", ".join(
        f"{name}={entry['logged']} (declared {param_text(entry['declared'])})"
        for name, entry in sorted(mismatches.items())
    )
    return f"the code logged params other than the ledger records: {listed}"
