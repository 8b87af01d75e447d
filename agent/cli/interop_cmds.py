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

    if not MODEL_NAME.match(model):
        raise WatchkeeperError(
            f"--model {model!r}: a model name starts with a letter or digit and holds only "
            "letters, digits, '_', '.' and '-'"
        )
    root = repo_root((repo or Path.cwd()).expanduser().resolve())
    runs, skipped = read_mlruns(path)
    console = common.console()
    for reason in skipped:
        console.print(f"skipped {reason}", markup=False)
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
    if report.imported:
        console.print(
            f"imported {len(report.imported)} run(s) as versions of {model}", markup=False
        )
    if report.already:
        console.print(f"{len(report.already)} run(s) were imported before", markup=False)
    if not report.imported and not report.already and not skipped:
        console.print(f"no MLflow runs in {path}", markup=False)
