"""Step metrics of local runs: $WK_METRICS lines stored per version, streamed, and final."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore
from agent.paths import WatchkeeperPaths
from agent.runs.executor import LocalExecutor, Run
from agent.runs.step_metrics import (
    encode_floats,
    parse_step_lines,
    pull_steps,
    record_steps,
    step_progress,
)
from agent.runs.step_queries import load_step_metrics, step_metric_names, step_summary
from tests.agent.runs.gitrepo import PYTHON, SPEC, cli_command, cli_env, make_repo, run_cli
from tests.support import wait_for

STEPS_SCRIPT = textwrap.dedent(
    """\
    import json, os, pathlib
    with open(os.environ["WK_METRICS"], "a") as steps:
        for step in range(200):
            steps.write(json.dumps({"step": step, "loss": 1.0 / (step + 1), "acc": step / 200}))
            steps.write("\\n")
            if step == 50:
                steps.write("loss went down\\n")
                steps.write('{"step": "late", "loss": 0.5}\\n')
                steps.write('{"step": 50.5, "phase": "eval", "val_loss": 0.25}\\n')
        steps.write('{"step": 200, "loss": 0.001}')  # the last line has no newline
    pathlib.Path("model.pkl").write_text("weights")
    json.dump(
        {"acc": 0.97, "confusion": [[50, 2], [3, 45]], "label": "v2", "val_loss": None},
        open("metrics.json", "w"),
    )
    """
)

WAITING_STEPS_SCRIPT = textwrap.dedent(
    """\
    import json, os, pathlib, time
    steps = open(os.environ["WK_METRICS"], "a", buffering=1)
    lines = [json.dumps({"step": step, "loss": 1.0 - step / 10}) for step in range(3)]
    steps.write("\\n".join(lines) + "\\n")  # one write: a reader sees all three
    print("waiting", flush=True)
    release = pathlib.Path(os.environ["WK_TEST_RELEASE"])
    deadline = time.time() + 60
    while not release.exists() and time.time() < deadline:
        time.sleep(0.02)
    steps.write(json.dumps({"step": 3, "loss": 0.125}) + "\\n")
    pathlib.Path("model.pkl").write_text("weights")
    json.dump({"auc": 0.5}, open("metrics.json", "w"))
    """
)


def version_row(run_id: str) -> dict:
    db = open_ledger()
    try:
        row = db.execute(
            "SELECT id, status, metrics, metrics_extra, artifacts FROM model_versions "
            "WHERE run_id = ?",
            [run_id],
        ).fetchone()
    finally:
        db.close()
    return {
        "id": row[0],
        "status": row[1],
        "metrics": json.loads(row[2]),
        "metrics_extra": json.loads(row[3]) if row[3] else None,
        "artifacts": json.loads(row[4]),
    }


def only_run_id() -> str:
    db = open_ledger()
    try:
        return str(db.execute("SELECT id FROM runs").fetchone()[0])
    finally:
        db.close()


def test_lines_become_points_and_bad_lines_are_counted() -> None:
    data = (
        b'{"step": 1, "loss": 0.5, "note": "warm-up", "ok": true}\n'
        b"\n"
        b"[1, 2]\n"
        b'{"loss": 0.25}\n'
        b'{"step": true, "loss": 9}\n'
        b'{"step": 7, "loss": NaN}\n'
    )
    batch = parse_step_lines(data, first_line=11, lines_before=4)
    assert batch.points == {"loss": ([1.0, 5.0, 7.0], [0.5, 0.25, batch.points["loss"][1][2]])}
    assert batch.points["loss"][1][2] != batch.points["loss"][1][2]  # NaN kept as a point
    assert (batch.lines, batch.skipped) == (3, 2)
    assert batch.first_skipped == "line 13: [1, 2]"


def test_a_run_of_a_local_model_stores_steps_and_final_metrics(tmp_path: Path) -> None:
    root = make_repo(tmp_path, files={"train.py": STEPS_SCRIPT})
    trained = run_cli(root, "train", "churn")
    assert trained.returncode == 0, trained.stderr
    assert "warning: skipped 2 lines of $WK_METRICS" in trained.stderr
    assert "line 52: loss went down" in trained.stderr
    run_id = only_run_id()
    version = version_row(run_id)
    assert version["status"] == "succeeded"
    # The last value of each step metric is final unless metrics.json names it.
    assert version["metrics"] == {"loss": 0.001, "acc": 0.97}
    assert version["metrics_extra"] == {
        "confusion": [[50, 2], [3, 45]],
        "label": "v2",
        "val_loss": None,
    }
    assert "model.pkl" in version["artifacts"]
    db = open_ledger()
    try:
        series = load_step_metrics(db, version["id"])
        summary = step_summary(db, version["id"])
        chunks = db.execute(
            "SELECT name, count(*) FROM step_metrics WHERE run_id = ? GROUP BY name", [run_id]
        ).fetchall()
    finally:
        db.close()
    assert sorted(series) == ["acc", "loss", "val_loss"]
    assert series["loss"].steps.tolist() == [*map(float, range(200)), 200.0]
    assert series["loss"].values[:3].tolist() == [1.0, 0.5, 1 / 3]
    assert series["loss"].values[-1] == 0.001
    assert series["val_loss"].steps.tolist() == [50.5]
    assert summary is not None and (summary.lines, summary.skipped) == (202, 2)
    assert all(count == 1 for _, count in chunks)  # merged into one chunk per metric
    log = (WatchkeeperPaths.from_environment().runs / run_id / "log").read_text()
    assert "watchkeeper: skipped 2 lines of $WK_METRICS" in log
    shown = run_cli(root, "models", "show", "churn")
    assert shown.returncode == 0, shown.stderr
    assert "confusion = [[50, 2], [3, 45]]" in shown.stdout
    assert "step metrics 202 lines, 402 points: acc, loss, val_loss" in shown.stdout
    as_json = json.loads(run_cli(root, "models", "show", "churn", "--json").stdout)
    assert as_json["metrics_extra"]["label"] == "v2"
    assert as_json["step_metrics"]["last"]["loss"] == 0.001
    logs = run_cli(root, "runs", "logs", run_id)
    assert "[steps] warning: 2 lines are not JSON objects with a numeric step" in logs.stdout
    assert "[steps] step 200: loss=0.001" in logs.stdout


def test_a_metrics_file_with_non_numbers_keeps_the_artifacts(tmp_path: Path) -> None:
    script = (
        "import json, pathlib\n"
        "pathlib.Path('model.pkl').write_text('weights')\n"
        "json.dump({'auc': 0.9, 'confusion': [[5, 1], [0, 4]], 'best': True,\n"
        "           'classes': {'a': 1}}, open('metrics.json', 'w'))\n"
    )
    root = make_repo(tmp_path, files={"train.py": script})
    trained = run_cli(root, "train", "churn")
    assert trained.returncode == 0, trained.stderr
    version = version_row(only_run_id())
    assert version["status"] == "succeeded"
    assert version["metrics"] == {"auc": 0.9}
    assert version["metrics_extra"] == {
        "confusion": [[5, 1], [0, 4]],
        "best": True,
        "classes": {"a": 1},
    }
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    assert store.path(version["artifacts"]["model.pkl"]).read_text() == "weights"


def test_a_model_without_a_metrics_file_gets_its_last_step_values(tmp_path: Path) -> None:
    script = (
        "import os\n"
        "with open(os.environ['WK_METRICS'], 'a') as f:\n"
        '    f.write(\'{"loss": 0.5}\\n{"loss": 0.25, "acc": 0.75}\\n\')\n'
        "open('model.pkl', 'w').write('w')\n"
    )
    spec = SPEC.replace('metrics = "metrics.json"\n', "")
    root = make_repo(tmp_path, files={"train.py": script}, spec=spec)
    trained = run_cli(root, "train", "churn")
    assert trained.returncode == 0, trained.stderr
    assert "loss=0.25" in trained.stderr and "acc=0.75" in trained.stderr
    assert version_row(only_run_id())["metrics"] == {"loss": 0.25, "acc": 0.75}


def test_steps_stream_live_to_the_ledger_and_to_runs_logs_follow(tmp_path: Path) -> None:
    spec = SPEC.replace(f"{PYTHON} train.py", f"{PYTHON} wait.py").replace(
        '"train.py"', '"wait.py"'
    )
    root = make_repo(tmp_path, files={"wait.py": WAITING_STEPS_SCRIPT}, spec=spec)
    trainer = subprocess.Popen(
        cli_command("train", "churn"),
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**cli_env(), "WK_TEST_RELEASE": str(tmp_path / "release")},
    )
    try:
        assert trainer.stdout is not None
        assert trainer.stdout.readline() == b"waiting\n"
        run_id = only_run_id()
        db = open_ledger()
        try:

            def stored_while_running() -> list[float]:
                version_id = version_row(run_id)["id"]
                series = load_step_metrics(db, version_id)
                loss = series["loss"].values.tolist() if "loss" in series else []
                return loss if len(loss) >= 3 else []

            assert wait_for(stored_while_running, 30, "the first steps in the ledger") == [
                1.0,
                0.9,
                0.8,
            ]
            assert version_row(run_id)["status"] == "running"
        finally:
            db.close()
        follower = subprocess.Popen(
            cli_command("runs", "logs", run_id, "--follow"),
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        assert follower.stdout is not None
        assert follower.stdout.readline() == b"waiting\n"
        assert follower.stdout.readline() == b"[steps] step 2: loss=0.8\n"
        assert follower.poll() is None
        (tmp_path / "release").touch()
        rest, errors = follower.communicate(timeout=60)
        assert follower.returncode == 0, errors
        assert rest == b"[steps] step 3: loss=0.125\n"
        trainer.communicate(timeout=60)
        assert trainer.returncode == 0
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    version = version_row(run_id)
    assert version["metrics"] == {"auc": 0.5, "loss": 0.125}


def test_a_line_is_stored_once_even_with_two_readers(tmp_path: Path) -> None:
    root = make_repo(tmp_path, files={"train.py": STEPS_SCRIPT})
    assert run_cli(root, "train", "churn").returncode == 0
    run_id = only_run_id()
    db = open_ledger()
    try:
        progress = step_progress(db, run_id)
        stale_offset = progress.byte_offset - 10
        assert record_steps(db, run_id, 1, stale_offset, b'{"loss": 1}\n') is None
        run_row = db.query("SELECT * FROM runs WHERE id = ?", [run_id])
        run = Run.from_row(json_decoded(next(run_row)))
        assert pull_steps(db, run, LocalExecutor(), final=True) is None  # nothing new
        assert step_progress(db, run_id) == progress
        assert step_metric_names(db, version_row(run_id)["id"]) == ["acc", "loss", "val_loss"]
    finally:
        db.close()


def json_decoded(row: dict) -> dict:
    return {**row, "detail": json.loads(row["detail"])}


def test_points_round_trip_through_the_stored_encoding() -> None:
    import numpy as np

    values = [0.0, -1.5, 1e300, float("inf")]
    assert np.frombuffer(encode_floats(values), dtype="<f8").tolist() == values


@pytest.mark.parametrize("bad", [b"\xff\xfe not utf-8\n", b"{\n", b'"just a string"\n'])
def test_bad_lines_are_skipped_not_fatal(bad: bytes) -> None:
    batch = parse_step_lines(bad + b'{"step": 1, "loss": 2}\n', 1, 0)
    assert (batch.lines, batch.skipped) == (1, 1)
    assert batch.points == {"loss": ([1.0], [2.0])}


def test_steplog_writes_lines_the_reader_takes(tmp_path: Path) -> None:
    import numpy as np

    from agent.steplog import StepLog

    path = tmp_path / "steps.jsonl"
    steps = StepLog(str(path), flush_seconds=0)
    steps.log(0, loss=0.5, acc=1, big=1e300)
    assert path.read_text() == '{"step": 0, "loss": 0.5, "acc": 1, "big": 1e+300}\n'  # live
    steps.log(np.int64(1), loss=np.float64(0.25), nan=float("nan"), low=float("-inf"))
    steps.log(2.5, **{'odd "name"': 3.0})
    steps.close()
    batch = parse_step_lines(path.read_bytes(), 1, 0)
    assert (batch.lines, batch.skipped) == (3, 0)
    assert batch.points["loss"] == ([0.0, 1.0], [0.5, 0.25])
    assert batch.points['odd "name"'] == ([2.5], [3.0])
    assert batch.points["low"][1] == [float("-inf")]


def test_steplog_does_nothing_outside_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.steplog import StepLog

    monkeypatch.delenv("WK_METRICS", raising=False)
    StepLog().log(1, loss=0.5)  # no file, no error


def test_a_large_file_is_stored_in_pieces_with_the_right_line_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.runs import step_metrics
    from agent.runs.training import train

    monkeypatch.setattr(step_metrics, "STEP_BATCH_BYTES", 100)  # a few lines a transaction
    root = make_repo(tmp_path, files={"train.py": STEPS_SCRIPT})
    db = open_ledger()
    try:
        result = train(root, "churn", db=db)
        version_id = version_row(result.run_id)["id"]
        series = load_step_metrics(db, version_id)
        progress = step_progress(db, result.run_id)
    finally:
        db.close()
    assert result.status == "succeeded", result.problem
    assert "first: line 52: loss went down" in (result.step_warning or "")
    assert (progress.lines, progress.skipped, progress.file_lines) == (202, 2, 204)
    assert series["loss"].steps.tolist() == [*map(float, range(200)), 200.0]
    assert series["acc"].values.tolist() == [step / 200 for step in range(200)]


def test_an_event_carries_the_newest_points_of_a_large_batch() -> None:
    lines = b"".join(b'{"step": %d, "loss": %d}\n' % (n, n) for n in range(2500))
    event = parse_step_lines(lines, 1, 0).as_event()
    assert event["complete"] is False and event["lines"] == 2500
    assert event["points"]["loss"]["steps"][0] == 500.0
    assert len(event["points"]["loss"]["values"]) == 2000
    small = parse_step_lines(b'{"loss": NaN}\n', 1, 0).as_event()
    assert small == {
        "lines": 1,
        "skipped": 0,
        "complete": True,
        "points": {"loss": {"steps": [0.0], "values": [None]}},
    }
