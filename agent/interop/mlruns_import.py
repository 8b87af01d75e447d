"""Import an MLflow file-store folder (`mlruns`) into the ledger: each run a version of a model.

Read with the standard library only: `<experiment>/meta.yaml`, and per run `meta.yaml`,
`params/<key>`, `metrics/<key>` (lines `timestamp value step`), `tags/<key>`, `artifacts/`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.interop.mlflow_capture import SYSTEM_TAG_PREFIX, Capture, MlflowRun, store_capture
from agent.ledger import write_transaction
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.blobs import ARTIFACT, VersionBlob, record_version_blobs
from agent.ledger.queries import ensure_model, insert_row, next_version, register_repo

IMPORTED_EXECUTOR = "mlflow-import"
META_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):(?: (.*))?$")
# MLflow's RunStatus numbers, as a file store writes them.
RUN_STATUS = {"1": "RUNNING", "2": "SCHEDULED", "3": "FINISHED", "4": "FAILED", "5": "KILLED"}
VERSION_STATUS = {"FINISHED": "succeeded", "FAILED": "failed", "KILLED": "cancelled"}


@dataclass
class ImportedRun:
    """One MLflow run read from a file store, with its times and artifact files."""

    run: MlflowRun
    started_at: float | None
    ended_at: float | None
    artifacts: dict[str, Path] = field(default_factory=dict)  # files at hand, to store
    artifact_uris: dict[str, str] = field(default_factory=dict)  # where each artifact is
    fetch: Callable[[], dict[str, Path]] | None = None  # downloads the artifacts when called


@dataclass
class ImportReport:
    """What an import did: versions made, runs already in the ledger, runs skipped and why."""

    imported: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_meta(path: Path) -> dict[str, str | None]:
    """A flat `meta.yaml` as a dict; raises WatchkeeperError naming the file and line."""
    meta: dict[str, str | None] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = META_LINE.match(line)
        if match is None:
            raise WatchkeeperError(f"{path}:{number}: not a `key: value` line: {line[:60]!r}")
        value = (match.group(2) or "").strip()
        if value[:1] == value[-1:] and value[:1] in ("'", '"') and len(value) >= 2:
            value = value[1:-1]
        meta[match.group(1)] = None if value in ("", "null", "~") else value
    return meta


def read_mlruns(folder: Path) -> tuple[list[ImportedRun], list[str]]:
    """Every run of every experiment under `folder`, and the runs skipped (named, with why)."""
    if not folder.is_dir():
        raise WatchkeeperError(f"{folder} is not a folder; give the path of an `mlruns` folder")
    runs: list[ImportedRun] = []
    skipped: list[str] = []
    for experiment_dir in sorted(p for p in folder.iterdir() if (p / "meta.yaml").is_file()):
        try:
            experiment = read_meta(experiment_dir / "meta.yaml").get("name")
        except (WatchkeeperError, UnicodeDecodeError, OSError) as error:
            skipped.append(f"experiment {experiment_dir.name}: {error}")
            continue
        for run_dir in sorted(p for p in experiment_dir.iterdir() if p.is_dir()):
            if not (run_dir / "meta.yaml").is_file():
                continue
            try:
                runs.append(read_file_store_run(run_dir, experiment))
            except (WatchkeeperError, UnicodeDecodeError, OSError, ValueError) as error:
                skipped.append(f"run {run_dir.name}: {error}")
    runs.sort(key=lambda imported: (imported.started_at or 0.0, imported.run.run_id))
    return runs, skipped


def read_file_store_run(run_dir: Path, experiment: str | None) -> ImportedRun:
    """One run folder of a file store."""
    meta = read_meta(run_dir / "meta.yaml")
    run_id = meta.get("run_id") or meta.get("run_uuid")
    if not run_id:
        raise WatchkeeperError(f"{run_dir / 'meta.yaml'}: no run_id; the file is damaged")
    if meta.get("lifecycle_stage") == "deleted":
        raise WatchkeeperError("deleted in MLflow")
    status = RUN_STATUS.get(meta.get("status") or "", meta.get("status"))
    run = MlflowRun(run_id, experiment, meta.get("run_name"), status)
    run.params = _key_files(run_dir / "params")
    run.tags = {
        k: v for k, v in _key_files(run_dir / "tags").items() if not k.startswith(SYSTEM_TAG_PREFIX)
    }
    for name, path in _key_paths(run_dir / "metrics").items():
        points = sorted(_metric_points(path), key=lambda point: (point[0], point[1]))
        run.metrics[name] = ([p[0] for p in points], [p[2] for p in points])
        run.metric_times[name] = [p[1] / 1000.0 for p in points]
    artifacts_dir = run_dir / "artifacts"
    artifacts = {
        p.relative_to(artifacts_dir).as_posix(): p
        for p in sorted(artifacts_dir.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }
    uris = {name: path.as_uri() for name, path in artifacts.items()}
    started, ended = _seconds(meta.get("start_time")), _seconds(meta.get("end_time"))
    return ImportedRun(run, started, ended, artifacts, uris)


def _seconds(milliseconds: str | None) -> float | None:
    return int(milliseconds) / 1000 if milliseconds and milliseconds.isdigit() else None


def _key_paths(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _key_files(folder: Path) -> dict[str, str]:
    return {key: path.read_text(encoding="utf-8") for key, path in _key_paths(folder).items()}


def _metric_points(path: Path) -> list[tuple[float, int, float]]:
    """(step, timestamp, value) of each line `timestamp value step` of a metric file."""
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        step = float(fields[2]) if len(fields) > 2 else 0.0
        points.append((step, int(fields[0]), float(fields[1])))
    return points


def _param_value(text: str) -> Any:
    """A logged param as the ledger keeps params: numbers and booleans typed, else text.

    >>> [_param_value(t) for t in ("0.01", "5", "True", "adam")]
    [0.01, 5, True, 'adam']
    """
    if text in ("True", "False"):
        return text == "True"
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float) and math.isfinite(value) else text


def import_runs(
    db: Database,
    repo: Path,
    model: str,
    runs: list[ImportedRun],
    store: ArtifactStore,
    *,
    source: str,
    download: bool = True,
) -> ImportReport:
    """Record each run as an imported version of `model`; runs already imported are left."""
    report = ImportReport()
    for imported in runs:
        run = imported.run
        with write_transaction(db):
            repo_id = register_repo(db, repo)
            model_id = ensure_model(db, repo_id, model)
            if _already_imported(db, model_id, run.run_id):
                report.already.append(run.run_id)
                continue
        if download and imported.fetch is not None:
            imported.artifacts = imported.fetch()
        artifacts = (
            {name: store.put(path) for name, path in imported.artifacts.items()} if download else {}
        )
        _record(db, model_id, imported, artifacts, source, download)
        report.imported.append(run.run_id)
    return report


def _already_imported(db: Database, model_id: int, mlflow_run_id: str) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM model_versions WHERE model_id = ? "
            "AND json_extract(mlflow, '$.run_id') = ?",
            [model_id, mlflow_run_id],
        ).fetchone()
        is not None
    )


def _record(
    db: Database,
    model_id: int,
    imported: ImportedRun,
    artifacts: dict[str, str],
    source: str,
    download: bool,
) -> None:
    run = imported.run
    status = VERSION_STATUS.get(run.status or "", "interrupted")
    ledger_run_id = f"mlflow-{run.run_id}"
    record = {
        "run_id": run.run_id,
        "experiment": run.experiment,
        "run_name": run.name,
        "status": run.status,
        "params": run.params,
        "tags": run.tags,
        "param_mismatches": {},
        "imported_from": source,
        **({} if download else {"artifact_uris": imported.artifact_uris}),
    }
    with write_transaction(db):
        if _already_imported(db, model_id, run.run_id):
            return
        insert_row(
            db,
            "runs",
            {
                "id": ledger_run_id,
                "model_id": model_id,
                "state": status,
                "executor": IMPORTED_EXECUTOR,
                "created_at": imported.started_at,
                "started_at": imported.started_at,
                "ended_at": imported.ended_at,
                "detail": {"imported_from": source},
            },
        )
        version_id = insert_row(
            db,
            "model_versions",
            {
                "model_id": model_id,
                "version": next_version(db, model_id),
                "status": status,
                "params": {k: _param_value(v) for k, v in run.params.items()},
                "experiment": 1,  # never the current version by itself: promote it to be
                "metrics": run.final_metrics if status == "succeeded" else {},
                "data": {},
                "code": {},
                "artifacts": artifacts,
                "executor": IMPORTED_EXECUTOR,
                "run_id": ledger_run_id,
                "started_at": imported.started_at,
                "ended_at": imported.ended_at,
                "mlflow": record,
            },
        )
        record_version_blobs(
            db, version_id, [VersionBlob(ARTIFACT, p, d) for p, d in artifacts.items()]
        )
        store_capture(db, ledger_run_id, version_id, Capture(record, run.final_metrics, run))
