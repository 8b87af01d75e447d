"""MLflow logging of runs over SSH and on Slurm: written in the remote run folder, captured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.ledger import open_ledger
from agent.remote.config import RemoteConfig
from agent.runs.step_queries import load_step_metrics
from agent.runs.training import train
from tests.agent.interop.test_mlflow_capture import MLFLOW_TRAIN
from tests.agent.remote.test_slurm import cluster, slurm_cluster  # noqa: F401 (fixtures)
from tests.agent.runs.gitrepo import PYTHON, make_repo

pytest.importorskip("mlflow")
pytestmark = pytest.mark.ssh


def spec(remote: str) -> str:
    text = (
        "[models.churn]\n"
        f'train = "{PYTHON} train.py"\n'
        'deps = ["train.py"]\n'
        'outs = ["model.pkl"]\n'
        'metrics = "metrics.json"\n'
        "params = { lr = 0.01 }\n"
        "params_env = true\n"
        f'remote = "{remote}"\n'
    )
    if remote == "cluster":
        text += 'resources = { cpus = 1, memory = "500M", time = "00:05:00" }\n'
    return text


def train_and_check(tmp_path: Path, remote: RemoteConfig) -> None:
    root = make_repo(tmp_path, files={"train.py": MLFLOW_TRAIN}, spec=spec(remote.name))
    db = open_ledger()
    try:
        result = train(root, "churn", db=db)
        row = db.execute(
            "SELECT id, mlflow FROM model_versions WHERE run_id = ?", [result.run_id]
        ).fetchone()
        series = load_step_metrics(db, row[0])
    finally:
        db.close()
    assert result.status == "succeeded", (result.problem, result.log_tail)
    recorded = json.loads(row[1])
    assert (recorded["experiment"], recorded["run_name"]) == ("churn", "churn-v1")
    assert recorded["params"] == {"lr": "0.01", "seed": "7"}
    assert recorded["tags"] == {"stage": "dev"}
    assert series["loss"].steps.tolist() == [float(step) for step in range(50)]
    assert result.metrics["loss"] == 1 / 50
    remote_db = Path(remote.workdir, "runs", result.run_id, "mlflow.db")
    assert remote_db.is_file()  # logged on the remote, in its own run folder


@pytest.mark.timeout(300)
def test_mlflow_logging_over_ssh_is_captured(box: RemoteConfig, tmp_path: Path) -> None:
    train_and_check(tmp_path, box)


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_mlflow_logging_on_slurm_is_captured(
    cluster: RemoteConfig,  # noqa: F811
    tmp_path: Path,
) -> None:
    train_and_check(tmp_path, cluster)
