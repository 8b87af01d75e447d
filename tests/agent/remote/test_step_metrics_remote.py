"""Step metrics of runs over SSH and on Slurm: read live from the remote, then final."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore
from agent.paths import WatchkeeperPaths
from agent.remote.config import RemoteConfig
from agent.runs.executor import Run
from agent.runs.step_metrics import StepBatch
from agent.runs.step_queries import load_step_metrics
from agent.runs.training import TrainResult, train
from tests.agent.remote.test_slurm import cluster, slurm_cluster  # noqa: F401 (fixtures)
from tests.agent.runs.gitrepo import make_repo
from tests.support import BackgroundCall, wait_for

pytestmark = pytest.mark.ssh

REMOTE_STEPS_TRAIN = textwrap.dedent(
    """\
    import json, os, pathlib, time
    with open(os.environ["WK_METRICS"], "a", buffering=1) as steps:
        lines = [json.dumps({"step": step, "loss": 1 - step / 10}) for step in range(3)]
        steps.write("\\n".join(lines) + "\\nnot json\\n")  # one write: seen whole
        print("waiting for release", flush=True)
        release = pathlib.Path(os.environ["WK_RUN_DIR"], "release")
        deadline = time.time() + 60
        while not release.exists() and time.time() < deadline:
            time.sleep(0.02)
        steps.write('{"step": 3, "loss": 0.5}')  # the last line, without its newline
    pathlib.Path("model.pkl").write_text("weights")
    json.dump({"auc": 0.75, "confusion": [[5, 1], [0, 4]]}, open("metrics.json", "w"))
    """
)


def spec(remote: str) -> str:
    text = (
        "[models.churn]\n"
        'train = "python train.py"\n'
        'deps = ["train.py"]\n'
        'outs = ["model.pkl"]\n'
        'metrics = "metrics.json"\n'
        f'remote = "{remote}"\n'
    )
    if remote == "cluster":
        text += 'resources = { cpus = 1, memory = "100M", time = "00:05:00" }\n'
    return text


def train_live(tmp_path: Path, remote: RemoteConfig) -> tuple[TrainResult, list[StepBatch]]:
    """Train on `remote`; while the run waits, see its first steps in the ledger, release it."""
    root = make_repo(tmp_path, files={"train.py": REMOTE_STEPS_TRAIN}, spec=spec(remote.name))
    batches: list[StepBatch] = []
    started: list[Run] = []
    log = bytearray()

    def run_training() -> TrainResult:
        db = open_ledger()
        try:
            return train(
                root,
                "churn",
                db=db,
                on_log=log.extend,
                on_start=lambda run, version: started.append(run),
                on_steps=batches.append,
            )
        finally:
            db.close()

    training = BackgroundCall(run_training, name="training on " + remote.name)
    wait_for(lambda: batches or training.done(), 120, lambda: f"live steps; log: {log.decode()}")
    assert not training.done(), training.result(1)
    run = started[0]
    assert batches[0].points["loss"] == ([0.0, 1.0, 2.0], [1.0, 0.9, 0.8])
    assert batches[0].skipped == 1
    assert stored_loss(run.detail["version_id"]) == [1.0, 0.9, 0.8]  # in the ledger, live
    Path(remote.workdir, "runs", run.id, "release").touch()
    return training.result(120), batches


def stored_loss(version_id: int) -> list[float]:
    db = open_ledger()
    try:
        series = load_step_metrics(db, version_id)
    finally:
        db.close()
    return series["loss"].values.tolist() if "loss" in series else []


def check_finished(result: TrainResult, version_id: int) -> None:
    assert result.status == "succeeded", (result.problem, result.log_tail)
    assert result.metrics == {"auc": 0.75, "loss": 0.5}
    assert result.metrics_extra == {"confusion": [[5, 1], [0, 4]]}
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    assert store.path(result.artifacts["model.pkl"]).read_text() == "weights"
    assert result.step_warning is not None and "line 4: not json" in result.step_warning
    assert stored_loss(version_id) == [1.0, 0.9, 0.8, 0.5]


def version_id_of(result: TrainResult) -> int:
    db = open_ledger()
    try:
        row = db.execute("SELECT id FROM model_versions WHERE run_id = ?", [result.run_id])
        return int(row.fetchone()[0])
    finally:
        db.close()


@pytest.mark.timeout(300)
def test_steps_of_an_ssh_run_arrive_live_and_in_full(box: RemoteConfig, tmp_path: Path) -> None:
    result, _ = train_live(tmp_path, box)
    check_finished(result, version_id_of(result))
    local_copy = WatchkeeperPaths.from_environment().runs / result.run_id / "steps.jsonl"
    assert local_copy.read_bytes().endswith(b'{"step": 3, "loss": 0.5}')


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_steps_of_a_slurm_run_arrive_live_and_in_full(
    cluster: RemoteConfig,  # noqa: F811
    tmp_path: Path,
) -> None:
    result, _ = train_live(tmp_path, cluster)
    check_finished(result, version_id_of(result))
    db = open_ledger()
    try:
        row: Any = db.execute(
            "SELECT executor, remote_job_id FROM model_versions WHERE run_id = ?",
            [result.run_id],
        ).fetchone()
    finally:
        db.close()
    assert row[0] == "slurm" and str(row[1]).isdigit()
