"""Sweeps here: the grid as versions sharing a sweep id, at most N at once, cancel, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from agent.errors import WatchkeeperError
from agent.ledger import open_ledger
from agent.project.spec import ModelSpec
from agent.runs.sweeps import (
    HARD_MAX_POINTS,
    MAX_POINTS,
    SweepAxis,
    check_grid_size,
    parse_axes,
    spaced_values,
)
from tests.agent.runs.gitrepo import PYTHON, cli_command, cli_env, make_repo, run_cli
from tests.agent.runs.processes import group_gone
from tests.agent.runs.test_train import interruptible
from tests.support import wait_for

# Each point marks itself started in $WK_TEST_BOARD, waits (up to 10 s) for a partner to run
# beside it or for the release file, lingers half a second, notes the most points it saw
# running at once, then ends.
BOARD_TRAIN = textwrap.dedent(
    """\
    import json, os, pathlib, time
    board = pathlib.Path(os.environ["WK_TEST_BOARD"])
    me = "lr=%s,epochs=%s" % (os.environ["WK_PARAM_LR"], os.environ["WK_PARAM_EPOCHS"])
    (board / ("started " + me)).touch()
    def running():
        started = {p.name[8:] for p in board.glob("started *")}
        return len(started - {p.name[5:] for p in board.glob("done *")})
    seen = running()
    release = pathlib.Path(os.environ["WK_TEST_RELEASE"])
    deadline = time.time() + 10
    while not release.exists() and seen < 2 and time.time() < deadline:
        time.sleep(0.02)
        seen = max(seen, running())
    linger = time.time() + (0 if release.exists() else 0.5)  # a third would show up now
    while time.time() < linger:
        time.sleep(0.02)
        seen = max(seen, running())
    with open(os.environ["WK_METRICS"], "a") as steps:
        steps.write(json.dumps({"step": 1, "loss": float(os.environ["WK_PARAM_LR"])}) + "\\n")
    pathlib.Path("model.pkl").write_text(me)
    json.dump({"together": seen, "epochs_seen": int(os.environ["WK_PARAM_EPOCHS"])},
              open("metrics.json", "w"))
    (board / ("done " + me)).touch()
    """
)

WAIT_TRAIN = textwrap.dedent(
    """\
    import json, os, pathlib, time
    print("started", flush=True)
    release = pathlib.Path(os.environ["WK_TEST_RELEASE"])
    deadline = time.time() + 120
    while not release.exists() and time.time() < deadline:
        time.sleep(0.05)
    pathlib.Path("model.pkl").write_text("w")
    json.dump({"loss": float(os.environ["WK_PARAM_LR"])}, open("metrics.json", "w"))
    """
)


def sweep_spec(script: str = "train.py") -> str:
    return textwrap.dedent(
        f"""\
        [models.churn]
        train = "{PYTHON} {script} --lr {{lr}}"
        deps = ["{script}"]
        outs = ["model.pkl"]
        metrics = "metrics.json"
        params = {{ lr = 0.01, epochs = 5, name = "base" }}
        params_env = true
        """
    )


def sweep_repo(tmp_path: Path, script: str = BOARD_TRAIN) -> Path:
    root = make_repo(tmp_path, files={"train.py": script}, spec=sweep_spec())
    (tmp_path / "board").mkdir()
    return root


def run_sweep_cli(root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command("train", "churn", *args),
        cwd=root,
        env={
            **cli_env(),
            "WK_TEST_BOARD": str(tmp_path / "board"),
            "WK_TEST_RELEASE": str(tmp_path / "release"),
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def versions() -> list[dict]:
    db = open_ledger()
    try:
        rows = [dict(row) for row in db.query("SELECT * FROM model_versions ORDER BY version")]
    finally:
        db.close()
    for row in rows:
        for column in ("params", "metrics", "artifacts"):
            row[column] = json.loads(row[column] or "{}")
    return rows


def run_states() -> list[str]:
    db = open_ledger()
    try:
        return [row[0] for row in db.execute("SELECT state FROM runs ORDER BY created_at")]
    finally:
        db.close()


def test_a_grid_trains_every_point_as_a_version_of_one_sweep(tmp_path: Path) -> None:
    root = sweep_repo(tmp_path)
    result = run_sweep_cli(
        root, tmp_path, "--sweep", "lr=0.1,0.01", "--sweep", "epochs=5,10", "--parallel", "2"
    )
    assert result.returncode == 0, result.stderr
    rows = versions()
    assert [(row["params"]["lr"], row["params"]["epochs"]) for row in rows] == [
        (0.1, 5),
        (0.1, 10),
        (0.01, 5),
        (0.01, 10),
    ]
    assert len({row["sweep_id"] for row in rows}) == 1 and rows[0]["sweep_id"]
    assert all(row["status"] == "succeeded" for row in rows)
    # the params reached the code: the metrics echo them back
    assert [row["metrics"]["epochs_seen"] for row in rows] == [5, 10, 5, 10]
    assert [row["metrics"]["loss"] for row in rows] == [0.1, 0.1, 0.01, 0.01]
    # only the point with the declared params is not an experiment
    assert [row["experiment"] for row in rows] == [1, 1, 0, 1]
    # with --parallel 2, two points ran side by side, never three
    together = [row["metrics"]["together"] for row in rows]
    assert max(together) == 2, together
    sweep_id = rows[0]["sweep_id"]
    assert f"sweep {sweep_id}: 4 succeeded" in result.stderr

    listed = run_cli(root, "runs", "list", "--json")
    assert {run["sweep_id"] for run in json.loads(listed.stdout)} == {sweep_id}
    models = run_cli(root, "models", "list", "--all", "--json")
    assert {row["sweep_id"] for row in json.loads(models.stdout)} == {sweep_id}

    ranked = run_cli(
        root, "models", "compare", "churn", "--sweep", sweep_id[-6:], "--sort", "-loss", "--json"
    )
    assert ranked.returncode == 0, ranked.stderr
    report = json.loads(ranked.stdout)
    assert [entry["metrics"]["loss"] for entry in report["versions"]] == [0.1, 0.1, 0.01, 0.01]
    assert [entry["params"]["epochs"] for entry in report["versions"]] == [5, 10, 5, 10]
    assert set(report["differing_params"]) == {"lr", "epochs"}


def test_parallel_one_runs_the_points_one_after_another(tmp_path: Path) -> None:
    root = sweep_repo(tmp_path)
    (tmp_path / "release").touch()  # nobody waits for a partner
    result = run_sweep_cli(root, tmp_path, "--sweep", "lr=log:1e-3:1e-1:3")
    assert result.returncode == 0, result.stderr
    rows = versions()
    assert [row["params"]["lr"] for row in rows] == [0.001, 0.01, 0.1]
    assert [row["metrics"]["together"] for row in rows] == [1, 1, 1]
    assert "one at a time" in result.stderr
    again = run_cli(root, "runs", "cancel", rows[0]["sweep_id"][-6:])
    assert again.returncode == 2
    assert f"sweep {rows[0]['sweep_id']} has already ended (3 succeeded)" in again.stderr


def start_waiting_sweep(tmp_path: Path, *args: str) -> tuple[Path, subprocess.Popen[str]]:
    root = make_repo(tmp_path, files={"train.py": WAIT_TRAIN}, spec=sweep_spec())
    process = subprocess.Popen(
        cli_command("train", "churn", "--sweep", "lr=0.1,0.2,0.3", *args),
        preexec_fn=interruptible,
        cwd=root,
        env={**cli_env(), "WK_TEST_RELEASE": str(tmp_path / "release")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: "running" in run_states(), 60, "the first point to run")
    return root, process


def first_running_pid() -> int:
    db = open_ledger()
    try:
        return int(db.execute("SELECT pid FROM runs WHERE state = 'running'").fetchone()[0])
    finally:
        db.close()


def test_runs_cancel_of_the_sweep_cancels_every_point(tmp_path: Path) -> None:
    root, process = start_waiting_sweep(tmp_path, "--parallel", "2")
    wait_for(lambda: run_states().count("running") == 2, 60, "two points to run")
    pid = first_running_pid()
    sweep_id = versions()[0]["sweep_id"]
    cancel = run_cli(root, "runs", "cancel", sweep_id)
    assert cancel.returncode == 0, cancel.stderr
    assert "1 queued points dropped, 2 running points stopped" in cancel.stdout
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 1, errors
    assert group_gone(pid)
    assert run_states() == ["cancelled"] * 3
    assert [row["status"] for row in versions()] == ["cancelled"] * 3
    assert "3 cancelled" in errors


def test_ctrl_c_on_the_sweep_cancels_every_point(tmp_path: Path) -> None:
    root, process = start_waiting_sweep(tmp_path)
    pid = first_running_pid()
    assert run_states().count("queued") == 2  # one at a time by default
    listed = run_cli(root, "models", "list", "--all", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(entry["state"] for entry in json.loads(listed.stdout)) == [
        "queued",
        "queued",
        "running",
    ]  # the waiting points are not shown as running
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 130, errors
    assert group_gone(pid)
    assert run_states() == ["cancelled"] * 3
    assert "every point not yet ended was stopped" in errors


def test_a_plain_train_is_refused_while_a_sweep_runs(tmp_path: Path) -> None:
    root, process = start_waiting_sweep(tmp_path)
    second = run_cli(root, "train", "churn")
    assert second.returncode == 2
    assert "churn is already training" in second.stderr and "--allow-concurrent" in second.stderr
    (tmp_path / "release").touch()
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 0, errors
    assert run_states() == ["succeeded"] * 3


# -- bad input ----------------------------------------------------------------------------


MODEL = ModelSpec(
    "churn",
    "python t.py --lr {lr}",
    params={"lr": 0.01, "epochs": 5, "name": "base", "fast": False},
    params_env=True,
)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["lr"], "--sweep 'lr': write it as NAME=V1,V2"),
        (["lr="], "--sweep 'lr=': write it as NAME=V1,V2"),
        (["lrr=0.1,0.2"], "--sweep lrr: model 'churn' declares no param 'lrr'"),
        (["epochs=5,abc"], "--sweep epochs=abc: epochs is declared as an int"),
        (["lr=0.1,fast"], "--sweep lr=fast: lr is declared as a float"),
        (["lr=log:1e-4:1e-1"], "write it as lr=log:LOW:HIGH:COUNT"),
        (["lr=log:0:1:3"], "log: spacing needs LOW and HIGH above 0"),
        (["lr=lin:0:1:0"], "COUNT must be 1 or more"),
        (["lr=lin:0:x:3"], "write it as lr=lin:LOW:HIGH:COUNT"),
        (["name=log:1:10:3"], "spacing needs a number param, and name is declared as a string"),
        (["lr=0.1", "lr=0.2"], "--sweep lr: swept twice"),
    ],
)
def test_bad_sweeps_are_refused_naming_what_to_write(texts: list[str], message: str) -> None:
    with pytest.raises(WatchkeeperError) as error:
        parse_axes(MODEL, texts, [], "watchkeeper.toml:5")
    assert message in str(error.value)


def test_a_param_both_swept_and_set_is_refused() -> None:
    with pytest.raises(WatchkeeperError, match="also set by --param lr; drop one"):
        parse_axes(MODEL, ["lr=0.1,0.2"], ["lr=0.3"], "watchkeeper.toml")


def test_a_param_the_command_does_not_receive_is_refused() -> None:
    hidden = ModelSpec("churn", "python t.py", params={"lr": 0.01})
    with pytest.raises(WatchkeeperError, match="--sweep lr: the train command of 'churn' would"):
        parse_axes(hidden, ["lr=0.1,0.2"], [], "watchkeeper.toml")


def test_values_are_typed_like_the_declared_defaults() -> None:
    axes = parse_axes(MODEL, ["epochs=lin:1:10:4", "fast=yes,no", "name=a,'b,c'"], [], "w")
    assert [axis.values for axis in axes] == [(1, 4, 7, 10), (True, False), ("a", "b,c")]
    assert spaced_values("lr", "log:1e-4:1e-1:4", 0.1) == [0.0001, 0.001, 0.01, 0.1]
    assert spaced_values("epochs", "log:1:4:5", 1) == [1, 2, 3, 4]


def test_a_grid_over_a_thousand_points_needs_yes() -> None:
    axes = [SweepAxis("lr", tuple(range(MAX_POINTS + 1)))]
    with pytest.raises(WatchkeeperError, match=r"1,001 points .* Pass --yes"):
        check_grid_size(axes, confirmed=False)
    assert check_grid_size(axes, confirmed=True) == MAX_POINTS + 1
    huge = [SweepAxis("a", tuple(range(1000))), SweepAxis("b", tuple(range(1000)))]
    with pytest.raises(WatchkeeperError, match=f"at most {HARD_MAX_POINTS:,} are possible"):
        check_grid_size(huge, confirmed=True)


def test_the_cli_refuses_a_large_grid_and_records_nothing(tmp_path: Path) -> None:
    root = sweep_repo(tmp_path)
    result = run_sweep_cli(
        root, tmp_path, "--sweep", "lr=lin:0.001:1:101", "--sweep", "epochs=lin:1:10:10"
    )
    assert result.returncode == 2
    assert "the sweep has 1,010 points (101 lr x 10 epochs), more than 1,000" in result.stderr
    assert run_states() == []


def test_parallel_without_a_sweep_is_refused(tmp_path: Path) -> None:
    root = sweep_repo(tmp_path)
    result = run_sweep_cli(root, tmp_path, "--parallel", "2")
    assert result.returncode == 2
    assert "--parallel and --yes go with --sweep" in result.stderr


def test_compare_names_an_unknown_sweep(tmp_path: Path) -> None:
    root = sweep_repo(tmp_path)
    result = run_cli(root, "models", "compare", "churn", "--sweep", "nope")
    assert result.returncode == 2
    assert "--sweep nope: no sweep has that id" in result.stderr


def test_points_recorded_in_one_second_get_distinct_run_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run id is a second and three random bytes: in a large sweep two may meet."""
    from agent.runs import layout, sweeps, training

    root = sweep_repo(tmp_path)
    (tmp_path / "release").touch()
    monkeypatch.setenv("WK_TEST_BOARD", str(tmp_path / "board"))
    monkeypatch.setenv("WK_TEST_RELEASE", str(tmp_path / "release"))
    drawn = iter(["churn-20260101-120000-aaaaaa"] * 2)  # the first two ids drawn meet

    def run_id_drawn(model: str) -> str:
        return next(drawn, None) or layout.new_run_id(model)

    monkeypatch.setattr(training, "new_run_id", run_id_drawn)
    monkeypatch.setattr(sweeps, "new_run_id", run_id_drawn, raising=False)
    db = open_ledger()
    try:
        sweep = sweeps.train_sweep(root, "churn", sweeps=["lr=0.1,0.2"], db=db)
    finally:
        db.close()
    assert [point.result.status for point in sweep.points if point.result] == ["succeeded"] * 2
    assert len({point.run.id for point in sweep.points}) == 2


def test_runs_logs_follow_waits_for_a_queued_point_to_run(tmp_path: Path) -> None:
    root, process = start_waiting_sweep(tmp_path)
    db = open_ledger()
    try:
        queued = db.execute("SELECT id FROM runs WHERE state = 'queued' LIMIT 1").fetchone()[0]
    finally:
        db.close()
    follow = subprocess.Popen(
        cli_command("runs", "logs", "--follow", queued),
        cwd=root,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ledger = Path(os.environ["WATCHKEEPER_HOME"]) / "ledger.db"

    def reading_the_ledger() -> bool:
        assert follow.poll() is None, follow.communicate()
        fds = Path(f"/proc/{follow.pid}/fd")
        return any(os.path.realpath(fd) == str(ledger.resolve()) for fd in fds.iterdir())

    wait_for(reading_the_ledger, 30, "runs logs to open the ledger")
    (tmp_path / "release").touch()
    out, errors = follow.communicate(timeout=120)
    assert follow.returncode == 0, errors
    assert out.startswith("started"), (out, errors)
    assert "has ended" not in errors
    process.communicate(timeout=120)
    assert run_states() == ["succeeded"] * 3
