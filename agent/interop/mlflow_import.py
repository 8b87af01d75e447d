"""Read runs from an MLflow tracking server (or any tracking URI) with MLflow's own client,
for `watchkeeper import mlflow`; needs the `mlflow` package."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agent.errors import WatchkeeperError
from agent.interop.mlflow_capture import INSTALL_HINT, SYSTEM_TAG_PREFIX, MlflowRun
from agent.interop.mlruns_import import ImportedRun


def mlflow_client(tracking_uri: str) -> Any:
    """MLflow's client for `tracking_uri`; an error saying how to install it when missing.

    Credentials come from the environment as MLflow reads them (MLFLOW_TRACKING_TOKEN,
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD); Watchkeeper keeps none.
    """
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise WatchkeeperError(
            f"importing from MLflow needs the mlflow package: {INSTALL_HINT}"
        ) from error
    return MlflowClient(tracking_uri=tracking_uri)


def without_credentials(uri: str) -> str:
    """The URI with any user and password taken out, for the ledger.

    >>> without_credentials("https://me:secret@mlflow.example.com/path")
    'https://mlflow.example.com/path'
    """
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def read_server_runs(
    client: Any, tracking_uri: str, experiment: str, run_ids: list[str], scratch: Path
) -> list[ImportedRun]:
    """The runs of `experiment` (or only `run_ids`), oldest first; artifacts download into
    `scratch` when a run's `fetch` is called."""
    from mlflow.exceptions import MlflowException

    shown = without_credentials(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise WatchkeeperError(
                f"--experiment {experiment!r}: no such experiment at {shown}; "
                "check its name in the MLflow UI"
            )
        if run_ids:
            runs = [client.get_run(run_id) for run_id in run_ids]
        else:
            runs = client.search_runs([found.experiment_id], max_results=50_000)
        imported = [_imported(client, run, experiment, scratch) for run in runs]
    except MlflowException as error:
        message = str(error).splitlines()[0][:300]
        raise WatchkeeperError(
            f"MLflow at {shown}: {message}; check the URI and that the server is up"
        ) from error
    imported.sort(key=lambda entry: (entry.started_at or 0.0, entry.run.run_id))
    return imported


def _imported(client: Any, run: Any, experiment: str, scratch: Path) -> ImportedRun:
    info = run.info
    entry = MlflowRun(info.run_id, experiment, info.run_name, info.status)
    entry.params = dict(run.data.params)
    entry.tags = {k: v for k, v in run.data.tags.items() if not k.startswith(SYSTEM_TAG_PREFIX)}
    for key in run.data.metrics:
        history = sorted(
            client.get_metric_history(info.run_id, key), key=lambda m: (m.step, m.timestamp)
        )
        entry.metrics[key] = (
            [float(m.step) for m in history],
            [float(m.value) if m.value is not None else math.nan for m in history],
        )
        entry.metric_times[key] = [float(m.timestamp or 0) / 1000.0 for m in history]
    names = _artifact_paths(client, info.run_id, None)
    uris = {name: f"{info.artifact_uri.rstrip('/')}/{name}" for name in names}

    def fetch() -> dict[str, Path]:
        target = scratch / info.run_id
        target.mkdir(parents=True, exist_ok=True)
        if names:
            client.download_artifacts(info.run_id, "", str(target))
        return {name: target / name for name in names if (target / name).is_file()}

    started = info.start_time / 1000 if info.start_time else None
    ended = info.end_time / 1000 if info.end_time else None
    return ImportedRun(entry, started, ended, {}, uris, fetch)


def _artifact_paths(client: Any, run_id: str, folder: str | None) -> list[str]:
    paths: list[str] = []
    for item in client.list_artifacts(run_id, folder):
        if item.is_dir:
            paths.extend(_artifact_paths(client, run_id, item.path))
        else:
            paths.append(item.path)
    return paths
