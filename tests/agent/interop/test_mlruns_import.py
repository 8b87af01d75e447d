"""`watchkeeper import mlruns`: an MLflow file-store folder becomes imported versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore
from agent.paths import WatchkeeperPaths
from agent.runs.step_metrics import decode_floats
from agent.runs.step_queries import load_step_metrics
from tests.agent.runs.gitrepo import make_repo, run_cli

pytest.importorskip("mlflow")

LOG_RUNS = textwrap.dedent(
    """\
    import pathlib, mlflow
    mlflow.set_experiment("old")
    pathlib.Path("notes.txt").write_text("notes")
    for lr in (0.1, 0.2):
        with mlflow.start_run(run_name=f"lr-{lr}"):
            mlflow.log_param("lr", lr)
            mlflow.log_param("optimizer", "adam")
            mlflow.set_tag("stage", "dev")
            for step in range(3):
                mlflow.log_metric("loss", lr * (3 - step), step=step)
            mlflow.log_artifact("notes.txt")
    """
)


@pytest.fixture(scope="module")
def mlruns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow file store with two runs, written by MLflow itself."""
    folder = tmp_path_factory.mktemp("mlflow-file-store")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": (folder / "mlruns").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }
    subprocess.run(
        [sys.executable, "-c", LOG_RUNS], cwd=folder, env=env, check=True, capture_output=True
    )
    return folder / "mlruns"


def versions() -> list[dict[str, Any]]:
    db = open_ledger()
    try:
        rows = db.execute(
            "SELECT id, version, status, params, metrics, artifacts, executor, experiment, mlflow "
            "FROM model_versions ORDER BY version"
        ).fetchall()
        return [
            {
                "version": row[1],
                "status": row[2],
                "params": json.loads(row[3]),
                "metrics": json.loads(row[4]),
                "artifacts": json.loads(row[5]),
                "executor": row[6],
                "experiment": row[7],
                "mlflow": json.loads(row[8]),
                "loss": load_step_metrics(db, row[0])["loss"].values.tolist(),
                "loss_times": decode_floats(
                    db.execute(
                        "SELECT times_f8 FROM step_metrics WHERE version_id = ? AND name = 'loss'",
                        [row[0]],
                    ).fetchone()[0]
                ),
            }
            for row in rows
        ]
    finally:
        db.close()


def copy_of(mlruns: Path, tmp_path: Path) -> Path:
    target = tmp_path / "mlruns"
    subprocess.run(["cp", "-a", str(mlruns), str(target)], check=True)
    return target


def test_runs_become_imported_versions_once(mlruns: Path, tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    imported = run_cli(root, "import", "mlruns", str(mlruns), "--model", "old-churn")
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 run(s) as versions of old-churn" in imported.stdout
    found = versions()
    assert [v["params"] for v in found] == [
        {"lr": 0.1, "optimizer": "adam"},
        {"lr": 0.2, "optimizer": "adam"},
    ]
    first = found[0]
    assert (first["status"], first["executor"], first["experiment"]) == (
        "succeeded",
        "mlflow-import",
        1,
    )
    assert first["loss"] == pytest.approx([0.3, 0.2, 0.1])
    # Each point keeps the time MLflow logged it at (the first field of each metric line).
    logged_ms = sorted(
        int(line.split()[0])
        for path in mlruns.rglob("metrics/loss")
        for line in path.read_text().splitlines()
    )
    kept = [t for version in found for t in version["loss_times"]]
    assert sorted(round(t * 1000) for t in kept) == logged_ms
    assert first["metrics"] == {"loss": pytest.approx(0.1)}
    assert first["mlflow"]["tags"] == {"stage": "dev"}
    assert first["mlflow"]["experiment"] == "old"
    assert first["mlflow"]["imported_from"] == str(mlruns.resolve())
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    assert store.path(first["artifacts"]["notes.txt"]).read_text() == "notes"

    again = run_cli(root, "import", "mlruns", str(mlruns), "--model", "old-churn")
    assert again.returncode == 0, again.stderr
    assert "2 run(s) were imported before" in again.stdout
    assert "imported 2" not in again.stdout
    assert len(versions()) == 2

    for command in (["models", "list"], ["models", "show", "old-churn"], ["status"]):
        shown = run_cli(root, *command)
        assert "Traceback" not in shown.stderr, (command, shown.stderr)
        assert shown.returncode in (0, 1), (command, shown.stderr)
    listing = run_cli(root, "models", "show", "old-churn").stdout
    assert "mlflow run" in listing and f"imported from {mlruns.resolve()}" in listing


def test_a_run_with_a_damaged_meta_yaml_is_named_and_skipped(mlruns: Path, tmp_path: Path) -> None:
    folder = copy_of(mlruns, tmp_path)
    metas = sorted(folder.glob("*/*/meta.yaml"))
    damaged = metas[0]
    damaged.write_text("run_id: [unclosed\n\x00garbage without a colon\n")
    root = make_repo(tmp_path)
    imported = run_cli(root, "import", "mlruns", str(folder), "--model", "old-churn")
    assert imported.returncode == 0, imported.stderr
    assert f"skipped run {damaged.parent.name}: {damaged}:2" in imported.stdout
    assert "imported 1 run(s)" in imported.stdout
    assert len(versions()) == 1


def test_no_download_references_the_artifacts(mlruns: Path, tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    imported = run_cli(
        root, "import", "mlruns", str(mlruns), "--model", "old-churn", "--no-download"
    )
    assert imported.returncode == 0, imported.stderr
    first = versions()[0]
    assert first["artifacts"] == {}
    uri = first["mlflow"]["artifact_uris"]["notes.txt"]
    assert uri.startswith("file://") and uri.endswith("/artifacts/notes.txt")


def test_a_bad_model_name_is_refused(mlruns: Path, tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    refused = run_cli(root, "import", "mlruns", str(mlruns), "--model", "../x")
    assert refused.returncode != 0
    assert "--model '../x'" in refused.stderr
    assert "Traceback" not in refused.stderr
