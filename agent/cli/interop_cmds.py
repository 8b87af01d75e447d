"""The `import` and `export` commands: MLflow runs into the ledger, versions out to MLflow."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from agent.cli import common
from agent.errors import WatchkeeperError
from agent.ledger.artifacts import ArtifactStore
from agent.paths import WatchkeeperPaths
from agent.project.git import repo_root
from agent.project.spec import MODEL_NAME

EXPORT_LOCK_NAME = "mlflow-export.lock"


def _target_options(command: Callable[..., None]) -> Callable[..., None]:
    """--model and --repo: where imported runs are recorded."""
    command = click.option(
        "--repo",
        type=click.Path(file_okay=False, path_type=Path),
        help="The repo to record the model under. Default: the current repo.",
    )(command)
    return click.option(
        "--model", "model", required=True, help="The model the runs become versions of."
    )(command)


@click.group("import")
def import_group() -> None:
    """Import runs logged with MLflow as versions of a model, marked as imported."""


@import_group.command("mlruns")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_target_options
@click.option(
    "--no-download",
    is_flag=True,
    help="Reference the artifacts by their file URI instead of copying them into the store.",
)
def import_mlruns(path: Path, model: str, repo: Path | None, no_download: bool) -> None:
    """Import the runs of an MLflow file-store folder (`mlruns`); runs imported before are
    left as they are, and a run whose meta.yaml is damaged is named and skipped."""
    from agent.interop.mlruns_import import import_runs, read_mlruns

    _check_model_name(model)
    root = repo_root((repo or Path.cwd()).expanduser().resolve())
    runs, skipped = read_mlruns(path)
    paths = WatchkeeperPaths.from_environment()
    with common.ledger_session() as db:
        report = import_runs(
            db,
            root,
            model,
            runs,
            ArtifactStore(paths.artifacts),
            source=str(path.resolve()),
            download=not no_download,
        )
    _print_report(model, report.imported, report.already, skipped, str(path))


def _check_model_name(model: str) -> None:
    if not MODEL_NAME.match(model):
        raise WatchkeeperError(
            f"--model {model!r}: a model name starts with a letter or digit and holds only "
            "letters, digits, '_', '.' and '-'"
        )


def _print_report(
    model: str, imported: list[str], already: list[str], skipped: list[str], where: str
) -> None:
    console = common.console()
    for reason in skipped:
        console.print(f"skipped {reason}", markup=False)
    if imported:
        console.print(f"imported {len(imported)} run(s) as versions of {model}", markup=False)
    if already:
        console.print(f"{len(already)} run(s) were imported before", markup=False)
    if not imported and not already and not skipped:
        console.print(f"no MLflow runs in {where}", markup=False)


@import_group.command("mlflow")
@click.option("--tracking-uri", required=True, help="The MLflow tracking URI to read from.")
@click.option("--experiment", required=True, help="The MLflow experiment whose runs to import.")
@click.option("--run", "run_ids", multiple=True, metavar="ID", help="Only this run (repeatable).")
@_target_options
@click.option(
    "--no-download",
    is_flag=True,
    help="Reference the artifacts by their MLflow URI instead of copying them into the store.",
)
def import_mlflow(
    tracking_uri: str,
    experiment: str,
    run_ids: tuple[str, ...],
    model: str,
    repo: Path | None,
    no_download: bool,
) -> None:
    """Import the runs of an MLflow experiment (from a tracking server, or any tracking URI);
    runs imported before are left as they are. Needs `pip install -e '.[mlflow]'` in the
    Watchkeeper checkout."""
    import tempfile

    from agent.interop.mlflow_import import mlflow_client, read_server_runs, without_credentials
    from agent.interop.mlruns_import import import_runs

    _check_model_name(model)
    root = repo_root((repo or Path.cwd()).expanduser().resolve())
    client = mlflow_client(tracking_uri)
    paths = WatchkeeperPaths.from_environment()
    with tempfile.TemporaryDirectory(prefix="wk-mlflow-import-") as scratch:
        runs = read_server_runs(client, tracking_uri, experiment, list(run_ids), Path(scratch))
        with common.ledger_session() as db:
            report = import_runs(
                db,
                root,
                model,
                runs,
                ArtifactStore(paths.artifacts),
                source=without_credentials(tracking_uri),
                download=not no_download,
            )
    _print_report(model, report.imported, report.already, [], f"experiment {experiment}")


@click.group("export")
def export_group() -> None:
    """Export the ledger's versions to an MLflow tracking server."""


@export_group.command("mlflow")
@click.argument("selection", nargs=-1, metavar="[MODEL… | REF…]")
@click.option("--tracking-uri", required=True, help="The MLflow tracking server to export to.")
@click.option(
    "--experiment",
    help="The MLflow experiment the runs go to. Default: one experiment per model, by its name.",
)
@click.option(
    "--no-create", is_flag=True, help="Refuse, rather than create, an experiment that is missing."
)
@click.option(
    "--since",
    metavar="DATE",
    help="Only versions started on or after DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM, local time).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=5,
    show_default=True,
    help="How often a failing request is tried again (waits 0.5 s, 1 s, 2 s, … up to 8 s).",
)
def export_mlflow(
    selection: tuple[str, ...],
    tracking_uri: str,
    experiment: str | None,
    no_create: bool,
    since: str | None,
    retries: int,
) -> None:
    """Export versions as MLflow runs (params, metrics with steps, lineage tags, artifacts),
    each model as a registered model and its aliases as MLflow aliases.

    MODEL exports all of a model's versions, REF one version (churn@3, churn@champion); with
    neither, every finished version in the ledger. Versions already on the server are left as
    they are, so running it again exports only what is new and moves aliases that moved.
    Credentials come from MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD) and are never stored. Needs `pip install -e '.[mlflow]'` in the
    Watchkeeper checkout.
    """
    from agent.interop.mlflow_export import (
        MlflowExporter,
        RetryPolicy,
        export_versions,
        mlflow_client,
    )
    from agent.interop.mlflow_import import without_credentials

    shown = without_credentials(tracking_uri)
    client = mlflow_client(tracking_uri)
    paths = WatchkeeperPaths.from_environment()
    exporter = MlflowExporter(client, shown, retry=RetryPolicy(retries=retries))
    console = common.console()
    with _one_export_at_a_time(paths), common.ledger_session() as db:
        version_ids = _selected_versions(db, selection) if selection else None
        with _ExportProgress(console) as progress:
            report = export_versions(
                db,
                exporter,
                shown,
                ArtifactStore(paths.artifacts),
                version_ids=version_ids,
                since=_since(since) if since else None,
                experiment=experiment,
                create=not no_create,
                progress=progress.update,
            )
    if report.interrupted is not None:
        raise WatchkeeperError(
            f"MLflow at {shown}: {report.interrupted}; {report.exported:,} of {report.pending:,} "
            f"version(s) exported this time ({report.already:,} were there before); run the "
            "same command again to resume"
        )
    console.print(
        f"{report.exported:,} runs exported to {shown}, {report.already:,} already there"
        + (f"; {report.alias_changes} alias(es) set or moved" if report.alias_changes else ""),
        markup=False,
    )


@contextmanager
def _one_export_at_a_time(paths: WatchkeeperPaths) -> Iterator[None]:
    """An flock beside the ledger, so that two exports never create the same run at once
    (a process killed with -9 releases it with its last descriptor)."""
    import fcntl
    import os

    lock = paths.ledger.with_name(EXPORT_LOCK_NAME)
    lock.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise WatchkeeperError(
                f"another `watchkeeper export mlflow` is running on this ledger ({lock} is "
                "locked); wait for it to finish, or let the agent's export finish"
            ) from error
        yield
    finally:
        os.close(descriptor)


class _ExportProgress:
    """A progress bar on a terminal once there is more than a handful of versions to send."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> _ExportProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, done: int, total: int) -> None:
        if not self.console.is_terminal or total < 10:
            return
        if self.progress is None:
            from rich.progress import Progress

            self.progress = Progress(console=self.console, transient=True)
            self.task = self.progress.add_task("exporting to MLflow", total=total)
            self.progress.start()
        self.progress.update(self.task, completed=done)


def _selected_versions(db: Any, selection: tuple[str, ...]) -> list[int]:
    """The ledger ids of the versions named: every version of a bare MODEL, one per REF."""
    from agent.ledger.queries import ModelRef, find_version

    chosen: list[int] = []
    for text in selection:
        if "@" not in text:
            rows = db.execute(
                "SELECT v.id FROM model_versions v JOIN models m ON m.id = v.model_id "
                "WHERE m.name = ? ORDER BY v.id",
                [text],
            ).fetchall()
            if rows:
                chosen.extend(int(row[0]) for row in rows)
                continue
        chosen.append(int(find_version(db, ModelRef.parse(text), None)["id"]))
    return chosen


def _since(text: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as error:
        raise WatchkeeperError(
            f"--since {text!r}: write a date such as 2026-11-30 or 2026-11-30T14:00"
        ) from error
