"""The `import` commands: bring runs logged with MLflow elsewhere into the ledger."""

from __future__ import annotations

from pathlib import Path

import click

from agent.cli import common
from agent.errors import WatchkeeperError
from agent.ledger.artifacts import ArtifactStore
from agent.paths import WatchkeeperPaths
from agent.project.git import repo_root
from agent.project.spec import MODEL_NAME


@click.group("import")
def import_group() -> None:
    """Import runs logged with MLflow as versions of a model, marked as imported."""


@import_group.command("mlruns")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model", required=True, help="The model the runs become versions of.")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    help="The repo to record the model under. Default: the current repo.",
)
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
@click.option("--model", "model", required=True, help="The model the runs become versions of.")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    help="The repo to record the model under. Default: the current repo.",
)
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
    runs imported before are left as they are. Needs `pip install 'watchkeeper[mlflow]'`."""
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
