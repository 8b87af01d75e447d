"""`watchkeeper import mlflow`: runs of an experiment on a real MLflow tracking server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore
from agent.paths import WatchkeeperPaths
from tests.agent.interop.mlflow_support import MlflowServer
from tests.agent.runs.gitrepo import cli_env, make_repo, run_cli

pytest.importorskip("mlflow")

LOG_RUNS = textwrap.dedent(
    """\
    import pathlib, mlflow
    mlflow.set_experiment("team")
    pathlib.Path("weights.txt").write_text("weights")
    ids = []
    for lr in (0.1, 0.2):
        with mlflow.start_run() as run:
            mlflow.log_param("lr", lr)
            mlflow.set_tag("owner", "ana")
            for step in range(4):
                mlflow.log_metric("loss", lr * (4 - step), step=step)
            mlflow.log_artifact("weights.txt", artifact_path="model")
            ids.append(run.info.run_id)
    print("RUN_IDS", " ".join(ids))
    """
)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """A real `mlflow server` (SQLite backend, local artifacts) on 127.0.0.1 with two runs."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    try:
        logged = subprocess.run(
            [sys.executable, "-c", LOG_RUNS],
            cwd=server.folder,
            env={**os.environ, "MLFLOW_TRACKING_URI": server.uri},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        yield server.uri, logged.stdout.split("RUN_IDS", 1)[1].split()
    finally:
        server.stop()


def imported_versions() -> list[dict]:
    db = open_ledger()
    try:
        rows = db.execute(
            "SELECT params, artifacts, mlflow, metrics FROM model_versions ORDER BY version"
        ).fetchall()
    finally:
        db.close()
    return [
        {
            "params": json.loads(r[0]),
            "artifacts": json.loads(r[1]),
            "mlflow": json.loads(r[2]),
            "metrics": json.loads(r[3]),
        }
        for r in rows
    ]


@pytest.mark.timeout(300)
def test_an_experiment_is_imported_once_with_its_artifacts(
    mlflow_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    uri, run_ids = mlflow_server
    root = make_repo(tmp_path)
    args = ["import", "mlflow", "--tracking-uri", uri, "--experiment", "team", "--model", "m"]
    first = run_cli(root, *args, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "imported 2 run(s) as versions of m" in first.stdout
    found = imported_versions()
    assert [v["mlflow"]["run_id"] for v in found] == run_ids
    assert [v["params"] for v in found] == [{"lr": 0.1}, {"lr": 0.2}]
    assert found[0]["metrics"] == {"loss": pytest.approx(0.1)}
    assert found[0]["mlflow"]["tags"] == {"owner": "ana"}
    assert found[0]["mlflow"]["imported_from"] == uri
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    assert store.path(found[0]["artifacts"]["model/weights.txt"]).read_text() == "weights"

    again = run_cli(root, *args, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "2 run(s) were imported before" in again.stdout
    assert len(imported_versions()) == 2


@pytest.mark.timeout(300)
def test_one_run_by_id_and_by_reference(
    mlflow_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    uri, run_ids = mlflow_server
    root = make_repo(tmp_path)
    only = run_cli(
        root,
        *["import", "mlflow", "--tracking-uri", uri, "--experiment", "team", "--model", "m"],
        *["--run", run_ids[1], "--no-download"],
        timeout=120,
    )
    assert only.returncode == 0, only.stderr
    (version,) = imported_versions()
    assert version["mlflow"]["run_id"] == run_ids[1]
    assert version["artifacts"] == {}
    assert version["mlflow"]["artifact_uris"]["model/weights.txt"].endswith("model/weights.txt")


@pytest.mark.timeout(300)
def test_a_missing_experiment_is_one_line(
    mlflow_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    uri, _ = mlflow_server
    root = make_repo(tmp_path)
    refused = run_cli(
        root,
        *["import", "mlflow", "--tracking-uri", uri, "--experiment", "nope", "--model", "m"],
        timeout=120,
    )
    assert refused.returncode != 0
    assert "--experiment 'nope': no such experiment" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_without_mlflow_installed_the_command_says_how_to_install_it(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker" / "mlflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named mlflow')\n")
    root = make_repo(tmp_path)
    env = cli_env()
    env["PYTHONPATH"] = f"{blocker.parent}:{env['PYTHONPATH']}"
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "import",
            "mlflow",
            "--tracking-uri",
            "http://x",
            "--experiment",
            "e",
            "--model",
            "m",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "pip install -e '.[mlflow]' in the Watchkeeper checkout" in refused.stderr
    assert "Traceback" not in refused.stderr
