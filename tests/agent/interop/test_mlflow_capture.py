"""Runs whose code logs with MLflow: captured from the run folder's mlflow.db, unchanged."""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.errors import WatchkeeperError
from agent.interop.mlflow_capture import capture_run, read_mlflow_db
from agent.ledger import open_ledger
from agent.project.spec import load_project
from agent.runs.step_metrics import decode_floats
from agent.runs.step_queries import load_step_metrics
from agent.runs.training import train
from tests.agent.runs.gitrepo import PYTHON, make_repo, run_cli

pytest.importorskip("mlflow")

MLFLOW_TRAIN = textwrap.dedent(
    """\
    import os, pathlib, json
    import mlflow
    lr = float(os.environ["WK_PARAM_LR"])
    with mlflow.start_run():
        mlflow.log_param("lr", os.environ.get("LOGGED_LR", lr))
        mlflow.log_param("seed", 7)
        for step in range(50):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metric("acc", 0.5, step=0)
        mlflow.log_metric("acc", 0.75, step=10)
        mlflow.set_tag("stage", "dev")
        pathlib.Path("notes.txt").write_text("notes")
        mlflow.log_artifact("notes.txt")
    pathlib.Path("model.pkl").write_text("weights")
    json.dump({"auc": 0.9, "acc": 0.8}, open("metrics.json", "w"))
    """
)

KILLED_TRAIN = textwrap.dedent(
    """\
    import os, signal
    import mlflow
    mlflow.start_run()
    mlflow.log_param("lr", 0.01)
    for step in range(5):
        mlflow.log_metric("loss", 1.0 - step / 10, step=step)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)

LOCKING_TRAIN = textwrap.dedent(
    """\
    import os, pathlib, subprocess, sys, time
    import mlflow
    with mlflow.start_run():
        mlflow.log_metric("loss", 0.5, step=1)
    db = os.path.join(os.environ["WK_RUN_DIR"], "mlflow.db")
    locked = pathlib.Path(os.environ["WK_RUN_DIR"], "locked")
    holder = (
        "import sqlite3, sys, time, pathlib\\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\\n"
        "c.execute('BEGIN EXCLUSIVE')\\n"
        "pathlib.Path(sys.argv[2]).touch()\\n"
        "release = pathlib.Path(sys.argv[3])\\n"
        "deadline = time.time() + 60\\n"
        "while not release.exists() and time.time() < deadline:\\n"
        "    time.sleep(0.02)\\n"
    )
    subprocess.Popen(
        [sys.executable, "-c", holder, db, str(locked), os.environ["WK_TEST_RELEASE"]],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 30
    while not locked.exists() and time.time() < deadline:
        time.sleep(0.02)
    pathlib.Path("model.pkl").write_text("weights")
    """
)


def spec(extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        [models.churn]
        train = "{PYTHON} train.py"
        deps = ["train.py"]
        outs = ["model.pkl"]
        metrics = "metrics.json"
        params = {{ lr = 0.01 }}
        params_env = true
        {extra}
        """
    )


def version(run_id: str) -> dict[str, Any]:
    db = open_ledger()
    try:
        row = db.execute(
            "SELECT id, status, metrics, mlflow FROM model_versions WHERE run_id = ?", [run_id]
        ).fetchone()
        series = load_step_metrics(db, row[0])
    finally:
        db.close()
    return {
        "status": row[1],
        "metrics": json.loads(row[2]),
        "mlflow": json.loads(row[3]) if row[3] else None,
        "steps": {name: (s.steps.tolist(), s.values.tolist()) for name, s in series.items()},
    }


def train_model(root: Path) -> Any:
    db = open_ledger()
    try:
        return train(root, "churn", db=db)
    finally:
        db.close()


def test_a_script_logging_with_mlflow_is_recorded_on_its_version(tmp_path: Path) -> None:
    root = make_repo(tmp_path, files={"train.py": MLFLOW_TRAIN}, spec=spec())
    result = train_model(root)
    assert result.status == "succeeded", result.log_tail
    recorded = version(result.run_id)
    mlflow = recorded["mlflow"]
    assert mlflow["experiment"] == "churn"
    assert mlflow["run_name"] == "churn-v1"
    assert mlflow["status"] == "FINISHED"
    assert len(mlflow["run_id"]) == 32
    assert mlflow["params"] == {"lr": "0.01", "seed": "7"}
    assert mlflow["tags"] == {"stage": "dev"}
    assert mlflow["param_mismatches"] == {}
    assert "partial" not in mlflow
    loss_steps, loss_values = recorded["steps"]["loss"]
    assert loss_steps == [float(step) for step in range(50)]
    assert loss_values[0] == 1.0 and loss_values[-1] == 1 / 50
    assert recorded["steps"]["acc"] == ([0.0, 10.0], [0.5, 0.75])
    # The last logged value is final unless metrics.json names it.
    assert recorded["metrics"] == {"auc": 0.9, "acc": 0.8, "loss": 1 / 50}
    artifacts = list((result_run_dir(result.run_id)).rglob("notes.txt"))
    assert artifacts, "log_artifact wrote nowhere in the run folder"
    # Each point keeps the time MLflow logged it at.
    mlflow_db = sqlite3.connect(result_run_dir(result.run_id) / "mlflow.db")
    try:
        logged_ms = [
            row[0]
            for row in mlflow_db.execute(
                "SELECT timestamp FROM metrics WHERE key = 'loss' ORDER BY step, timestamp"
            )
        ]
    finally:
        mlflow_db.close()
    assert [round(t * 1000) for t in step_times(result.run_id, "loss")] == logged_ms


def step_times(run_id: str, name: str) -> list[float]:
    """The logging times the ledger keeps for one step metric of a run."""
    db = open_ledger()
    try:
        (blob,) = db.execute(
            "SELECT times_f8 FROM step_metrics WHERE run_id = ? AND name = ?", [run_id, name]
        ).fetchone()
    finally:
        db.close()
    assert blob is not None, f"no times kept for {name}"
    return decode_floats(blob)


def result_run_dir(run_id: str) -> Path:
    from agent.paths import WatchkeeperPaths

    return WatchkeeperPaths.from_environment().runs / run_id


def test_params_the_code_logged_otherwise_are_reported(tmp_path: Path) -> None:
    root = make_repo(
        tmp_path,
        files={"train.py": MLFLOW_TRAIN.replace('os.environ.get("LOGGED_LR", lr)', "0.5")},
        spec=spec(),
    )
    result = train_model(root)
    assert result.status == "succeeded", result.log_tail
    assert version(result.run_id)["mlflow"]["param_mismatches"] == {
        "lr": {"declared": 0.01, "logged": "0.5"}
    }
    shown = run_cli(root, "models", "show", "churn")
    assert shown.returncode == 0, shown.stderr
    assert "lr=0.5 (declared 0.01)" in shown.stdout
    status = run_cli(root, "status")
    assert "lr=0.5 (declared 0.01)" in status.stdout + status.stderr


def test_a_tracking_uri_in_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "own.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{own}")
    root = make_repo(tmp_path, files={"train.py": MLFLOW_TRAIN}, spec=spec())
    result = train_model(root)
    assert result.status == "succeeded", result.log_tail
    assert version(result.run_id)["mlflow"] is None
    assert not (result_run_dir(result.run_id) / "mlflow.db").exists()
    own_run = read_mlflow_db(own)
    assert own_run is not None and own_run.params["seed"] == "7"
    log = (result_run_dir(result.run_id) / "log").read_text()
    assert "MLFLOW_TRACKING_URI is set in the environment" in log


def test_mlflow_off_in_the_spec_leaves_the_uri_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = make_repo(
        tmp_path, files={"train.py": "open('model.pkl', 'w')\n"}, spec=spec('mlflow = "off"')
    )
    (root / "watchkeeper.toml").write_text(
        (root / "watchkeeper.toml").read_text().replace('metrics = "metrics.json"\n', "")
    )
    result = train_model(root)
    assert result.status == "succeeded", result.log_tail
    log = (result_run_dir(result.run_id) / "log").read_text()
    assert 'mlflow = "off" for this model' in log
    script = (result_run_dir(result.run_id) / "run.sh").read_text()
    assert "MLFLOW_TRACKING_URI" not in script


def test_a_bad_mlflow_value_in_the_spec_names_the_line(tmp_path: Path) -> None:
    root = make_repo(tmp_path, spec=spec('mlflow = "of"'))
    with pytest.raises(WatchkeeperError, match=r"watchkeeper.toml:\d+.*mlflow.*did you mean 'off'"):
        load_project(root)


def test_a_killed_training_is_recorded_with_a_partial_capture(tmp_path: Path) -> None:
    root = make_repo(tmp_path, files={"train.py": KILLED_TRAIN}, spec=spec())
    result = train_model(root)
    assert result.status == "failed"
    recorded = version(result.run_id)
    assert recorded["mlflow"]["partial"] is True
    assert "did not end (RUNNING)" in recorded["mlflow"]["problem"]
    assert recorded["mlflow"]["params"] == {"lr": "0.01"}
    assert recorded["steps"]["loss"] == ([0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 0.9, 0.8, 0.7, 0.6])


def test_a_training_killed_before_mlflow_wrote_anything_is_still_recorded(
    tmp_path: Path,
) -> None:
    script = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    root = make_repo(tmp_path, files={"train.py": script}, spec=spec())
    result = train_model(root)
    assert result.status == "failed"
    assert not (result_run_dir(result.run_id) / "mlflow.db").exists()
    assert version(result.run_id)["mlflow"] is None


def test_a_locked_mlflow_file_is_recorded_as_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = tmp_path / "release"
    monkeypatch.setenv("WK_TEST_RELEASE", str(release))
    root = make_repo(tmp_path, files={"train.py": LOCKING_TRAIN}, spec=spec())
    (root / "watchkeeper.toml").write_text(
        (root / "watchkeeper.toml").read_text().replace('metrics = "metrics.json"\n', "")
    )
    try:
        result = train_model(root)
    finally:
        release.touch()
    assert result.status == "succeeded", result.log_tail
    recorded = version(result.run_id)
    assert recorded["mlflow"]["partial"] is True
    assert "locked" in recorded["mlflow"]["problem"]


def test_a_file_that_is_not_sqlite_is_partial_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"not a database at all" * 100)
    capture = capture_run(tmp_path, {})
    assert capture.record is not None and capture.record["partial"] is True
    assert str(tmp_path / "mlflow.db") in capture.record["problem"]


def test_reading_needs_no_mlflow_package(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "mlflow.db")
    db.close()
    code = (
        "import sys; sys.modules['mlflow'] = None\n"
        "from agent.interop.mlflow_capture import capture_run\n"
        f"print(capture_run(__import__('pathlib').Path({str(tmp_path)!r}), {{}}).record)\n"
    )
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    assert completed.returncode == 0, completed.stderr
    assert "partial" in completed.stdout  # an empty file has no MLflow tables
