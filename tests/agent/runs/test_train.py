"""`watchkeeper train` end to end: real git repos, real training scripts, a real ledger file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.errors import WatchkeeperError
from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.queries import versions
from tests.agent.runs.gitrepo import (
    PYTHON,
    SPEC,
    cli_command,
    cli_env,
    make_repo,
    run_cli,
)
from tests.agent.runs.processes import group_gone
from tests.support import wait_for

WAITING_SCRIPT = textwrap.dedent(
    """\
    import os, pathlib, time, json
    print("started", flush=True)
    release = pathlib.Path(os.environ["WK_TEST_RELEASE"])
    deadline = time.time() + 60
    while not release.exists() and time.time() < deadline:
        time.sleep(0.02)
    print("released", flush=True)
    pathlib.Path("model.pkl").write_text("late weights")
    json.dump({"auc": 0.5}, open("metrics.json", "w"))
    """
)


def waiting_spec() -> str:
    return SPEC.replace(f"{PYTHON} train.py", f"{PYTHON} wait.py").replace(
        '"train.py"', '"wait.py"'
    )


def train(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.chdir(root)
    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


def only_version(model: str = "churn") -> dict:
    db = open_ledger()
    rows = versions(db, model=model)
    assert len(rows) == 1
    return rows[0]


def run_row(run_id: str) -> dict:
    db = open_ledger()
    return dict(next(db.query("SELECT * FROM runs WHERE id = ?", [run_id])))


def test_a_successful_run_records_everything_it_was_built_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watchkeeper_home: Path
) -> None:
    root = make_repo(tmp_path)
    result = train(root, monkeypatch, "churn")
    assert result.exit_code == 0, result.output
    assert "training with" in result.output and "helper says committed helper" in result.output
    version = only_version()
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert version["version"] == 1 and version["status"] == "succeeded"
    assert version["commit_sha"] == head
    assert version["dirty"] == 0 and version["diff_hash"] is None
    assert version["params"] == {"lr": 0.01, "epochs": 5}
    assert version["metrics"] == {"auc": 0.91, "loss": 0.02}
    assert version["executor"] == "local" and version["host"]
    assert version["exit_code"] == 0
    assert version["started_at"] <= version["ended_at"]
    assert set(version["code"]) == {"train.py", "src"}
    assert version["data"] == {}
    store = ArtifactStore(watchkeeper_home / "artifacts")
    assert store.path(version["artifacts"]["model.pkl"]).read_text() == "weights lr=0.01"
    run = run_row(version["run_id"])
    assert run["state"] == "succeeded" and run["exit_code"] == 0 and run["pid"]
    run_dir = Path(run["run_dir"])
    assert run_dir.parent == watchkeeper_home / "runs"
    assert {p.name for p in run_dir.iterdir()} >= {
        "code",
        "data",
        "params.json",
        "run.sh",
        "log",
        "exitcode",
        "outs",
    }
    assert f"run dir {run_dir}" in (run_dir / "log").read_text()


def test_uncommitted_changes_are_trained_and_marked_dirty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path)
    (root / "src" / "helper.py").write_text('MESSAGE = "uncommitted helper"\n')
    (root / "src" / "extra.py").write_text("untracked = 1\n")
    first = train(root, monkeypatch, "churn")
    assert "helper says uncommitted helper" in first.output
    second = train(root, monkeypatch, "churn")
    assert second.exit_code == 0
    db = open_ledger()
    v2, v1 = versions(db, model="churn")
    assert v1["dirty"] == 1 and v1["diff_hash"].startswith("sha256:")
    assert v1["diff_hash"] == v2["diff_hash"]
    assert v1["code"] == v2["code"]
    (root / "src" / "extra.py").write_text("untracked = 2\n")
    train(root, monkeypatch, "churn")
    v3 = versions(db, model="churn")[0]
    assert v3["diff_hash"] != v1["diff_hash"] and v3["code"]["src"] != v1["code"]["src"]


def test_param_overrides_reach_the_command_and_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watchkeeper_home: Path
) -> None:
    root = make_repo(tmp_path)
    result = train(root, monkeypatch, "churn", "--param", "lr=0.5", "--param", "epochs=7")
    assert result.exit_code == 0, result.output
    version = only_version()
    assert version["params"] == {"lr": 0.5, "epochs": 7}
    store = ArtifactStore(watchkeeper_home / "artifacts")
    assert store.path(version["artifacts"]["model.pkl"]).read_text() == "weights lr=0.5"


def test_an_unknown_param_is_refused_with_a_suggestion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path)
    result = train(root, monkeypatch, "churn", "--param", "lrr=0.5")
    assert result.exit_code == 2
    assert "did you mean 'lr'?" in result.output


def test_a_failing_command_is_recorded_failed_and_its_exit_code_passed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SPEC.replace(
        f"{PYTHON} train.py",
        f"{PYTHON} -c 'import sys; print(\\\"diverged at epoch 3\\\"); sys.exit(3)'",
    )
    root = make_repo(tmp_path, spec=spec)
    result = train(root, monkeypatch, "churn")
    assert result.exit_code == 3
    assert "churn v1 failed" in result.output and "exited 3" in result.output
    assert result.output.count("diverged at epoch 3") == 2  # streamed, then in the tail
    version = only_version()
    assert version["status"] == "failed" and version["exit_code"] == 3
    assert version["artifacts"] == {} and version["metrics"] == {}
    assert run_row(version["run_id"])["state"] == "failed"


def test_a_command_that_is_not_found_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SPEC.replace(f"{PYTHON} train.py", "no-such-trainer --fast")
    root = make_repo(tmp_path, spec=spec)
    result = train(root, monkeypatch, "churn")
    assert result.exit_code == 127
    assert "command not found" in result.output and "no-such-trainer" in result.output
    assert only_version()["status"] == "failed"


def test_missing_outs_fail_the_version_and_register_no_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watchkeeper_home: Path
) -> None:
    spec = SPEC.replace('outs = ["model.pkl"]', 'outs = ["model.pkl", "vocab.json"]')
    root = make_repo(tmp_path, spec=spec)
    result = train(root, monkeypatch, "churn")
    assert result.exit_code == 2
    assert "outs missing after training: vocab.json" in result.output
    version = only_version()
    assert version["status"] == "failed" and version["exit_code"] == 0
    assert version["artifacts"] == {}


@pytest.mark.parametrize(
    ("metrics_text", "expected"),
    [("auc: 0.9", "is not JSON"), ("{'auc': 0.9}", "is not JSON")],
)
def test_a_metrics_file_that_is_not_json_fails_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metrics_text: str, expected: str
) -> None:
    script = (
        "import pathlib\n"
        "pathlib.Path('model.pkl').write_text('w')\n"
        f"pathlib.Path('metrics.json').write_text({metrics_text!r})\n"
    )
    root = make_repo(tmp_path, files={"train.py": script})
    result = train(root, monkeypatch, "churn")
    assert result.exit_code == 2
    assert "metrics file 'metrics.json'" in result.output and expected in result.output
    version = only_version()
    assert version["status"] == "failed" and version["metrics"] == {}


def test_an_unknown_model_lists_the_ones_that_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path)
    result = train(root, monkeypatch, "chrun")
    assert result.exit_code == 2
    assert "no model named 'chrun'" in result.output and "churn" in result.output


def test_a_missing_dep_is_named_with_the_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SPEC.replace('deps = ["train.py", "src/"]', 'deps = ["train.py", "src/", "lib/"]')
    root = make_repo(tmp_path, spec=spec)
    result = train(root, monkeypatch, "churn")
    assert result.exit_code == 2
    assert f"{root / 'watchkeeper.toml'}:3:" in result.output
    assert "'lib'" in result.output and "does not exist" in result.output


def test_training_on_an_unconfigured_remote_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path)
    result = train(root, monkeypatch, "churn", "--remote", "gpu-box")
    assert result.exit_code == 2
    assert "remote training needs a configured remote" in result.output
    assert "gpu-box" in result.output
    assert open_ledger()["model_versions"].count == 0


def test_the_log_streams_to_the_terminal_while_training_runs(tmp_path: Path) -> None:
    root = make_repo(tmp_path, files={"wait.py": WAITING_SCRIPT}, spec=waiting_spec())
    release = tmp_path / "release"
    process = subprocess.Popen(
        cli_command("train", "churn"),
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**cli_env(), "WK_TEST_RELEASE": str(release)},
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"started\n"
    assert process.poll() is None  # the line arrived while training still runs
    release.touch()
    rest, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    assert rest == b"released\n"


def interruptible() -> None:
    """Give the child Ctrl-C's default, as a terminal's foreground job has it.

    A test runner started as `cmd &` by a shell without job control ignores SIGINT, and its
    children inherit that: `train` would then rightly ignore Ctrl-C too.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_waiting_training(tmp_path: Path) -> tuple[Path, subprocess.Popen[bytes], dict]:
    root = make_repo(tmp_path, files={"wait.py": WAITING_SCRIPT}, spec=waiting_spec())
    process = subprocess.Popen(
        cli_command("train", "churn"),
        preexec_fn=interruptible,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**cli_env(), "WK_TEST_RELEASE": str(tmp_path / "release")},
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"started\n"
    db = open_ledger()
    run = dict(next(db.query("SELECT * FROM runs")))
    assert run["state"] == "running" and run["pid"]
    return root, process, run


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_cancels_the_run_and_records_it_cancelled(
    tmp_path: Path, signal_number: signal.Signals
) -> None:
    _, process, run = start_waiting_training(tmp_path)
    process.send_signal(signal_number)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 130
    assert b"cancelled" in errors
    assert group_gone(run["pid"])
    assert only_version()["status"] == "cancelled"
    assert run_row(run["id"])["state"] == "cancelled"


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_job_ended_does_not_claim_a_cancel(
    tmp_path: Path, signal_number: signal.Signals
) -> None:
    """The signal lands while the finished run is being recorded (the ledger is held busy)."""
    _, process, run = start_waiting_training(tmp_path)
    ledger = sqlite3.connect(Path(os.environ["WATCHKEEPER_HOME"]) / "ledger.db", timeout=30)
    ledger.execute("BEGIN IMMEDIATE")  # the train command cannot record the end until we let go
    try:
        (tmp_path / "release").touch()
        run_dir = Path(run["run_dir"])
        wait_for(lambda: (run_dir / "exitcode").exists(), 30, "the job to write its exitcode")
        artifacts = Path(os.environ["WATCHKEEPER_HOME"]) / "artifacts"
        wait_for(
            lambda: any(path.is_file() for path in artifacts.rglob("*")),
            30,
            "the train command to store the artifacts of the ended job",
        )
        process.send_signal(signal_number)
    finally:
        ledger.rollback()
        ledger.close()
    _, errors = process.communicate(timeout=60)
    assert b"recorded as cancelled" not in errors
    assert process.returncode == 0, errors
    assert only_version()["status"] == "succeeded"
    assert run_row(run["id"])["state"] == "succeeded"


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_right_as_the_job_ends_records_its_true_end(
    tmp_path: Path, signal_number: signal.Signals
) -> None:
    _, process, run = start_waiting_training(tmp_path)
    (tmp_path / "release").touch()
    run_dir = Path(run["run_dir"])
    wait_for(lambda: (run_dir / "exitcode").exists(), 30, "the job to write its exitcode", 0.002)
    process.send_signal(signal_number)
    _, errors = process.communicate(timeout=60)
    assert b"recorded as cancelled" not in errors
    assert process.returncode == 0, errors
    assert only_version()["status"] == "succeeded"
    assert run_row(run["id"])["state"] == "succeeded"


def test_kill_9_of_everything_is_marked_interrupted_by_the_next_command(
    tmp_path: Path,
) -> None:
    root, process, run = start_waiting_training(tmp_path)
    process.kill()
    os.killpg(run["pid"], signal.SIGKILL)
    process.wait(timeout=10)
    assert group_gone(run["pid"])
    listing = run_cli(root, "runs", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)[0]["state"] == "interrupted"
    assert only_version()["status"] == "interrupted"
    ledger = sqlite3.connect(Path(os.environ["WATCHKEEPER_HOME"]) / "ledger.db")
    assert ledger.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_run_killed_under_a_live_train_command_is_recorded_interrupted(
    tmp_path: Path,
) -> None:
    _, process, run = start_waiting_training(tmp_path)
    os.killpg(run["pid"], signal.SIGKILL)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 2
    assert b"interrupted" in errors
    assert only_version()["status"] == "interrupted"


def test_a_run_that_outlives_its_killed_train_command_is_recorded_later(
    tmp_path: Path,
) -> None:
    root, process, run = start_waiting_training(tmp_path)
    process.kill()
    process.wait(timeout=10)
    (tmp_path / "release").touch()
    assert group_gone(run["pid"])
    listing = run_cli(root, "models", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    [version] = json.loads(listing.stdout)
    assert version["status"] == "succeeded" and version["metrics"] == {"auc": 0.5}
    assert set(version["artifacts"]) == {"model.pkl"}


def test_a_full_disk_during_the_artifact_copy_registers_no_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watchkeeper_home: Path
) -> None:
    artifacts = watchkeeper_home / "artifacts"
    artifacts.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; test_artifacts covers EFBIG without it")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(artifacts)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        script = (
            "import pathlib, json\n"
            "pathlib.Path('model.pkl').write_bytes(b'w' * (3 << 20))\n"
            "json.dump({'auc': 1}, open('metrics.json', 'w'))\n"
        )
        root = make_repo(tmp_path, files={"train.py": script})
        result = train(root, monkeypatch, "churn")
        assert result.exit_code == 2
        assert f"the disk holding {artifacts} is full (0 bytes free)" in result.output
        assert "free space and retry" in result.output
        version = only_version()
        assert version["status"] == "failed" and version["artifacts"] == {}
        assert [p for p in artifacts.rglob("*") if p.is_file()] == []
    finally:
        subprocess.run(["umount", str(artifacts)], check=False)


def test_runs_logs_follow_streams_a_live_run_until_it_ends(tmp_path: Path) -> None:
    root, process, run = start_waiting_training(tmp_path)
    follower = subprocess.Popen(
        cli_command("runs", "logs", run["id"], "--follow"),
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert follower.stdout is not None
    assert follower.stdout.readline() == b"started\n"
    assert follower.poll() is None
    (tmp_path / "release").touch()
    rest, errors = follower.communicate(timeout=60)
    assert follower.returncode == 0, errors
    assert rest == b"released\n"
    process.communicate(timeout=60)
    assert process.returncode == 0


def test_param_values_are_read_as_toml_else_as_text() -> None:
    from agent.project.spec import ModelSpec
    from agent.runs.training import parse_param_overrides

    model = ModelSpec(
        name="m", train="x", params={"lr": 0.1, "name": "a", "fast": False}, params_env=True
    )
    params = parse_param_overrides(model, ["lr=1e-3", "name=resnet 50", "fast=true"])
    assert params == {"lr": 0.001, "name": "resnet 50", "fast": True}
    assert parse_param_overrides(model, ['name="quoted"'])["name"] == "quoted"
    with pytest.raises(WatchkeeperError, match="write it as key=value"):
        parse_param_overrides(model, ["lr"])


def test_an_overlong_model_name_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    name = "m" * 240
    root = make_repo(tmp_path, spec=SPEC.replace("[models.churn]", f"[models.{name}]"))
    result = run_cli(root, "train", name)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{root / 'watchkeeper.toml'}:1: [models.{name}] is 240 characters long" in result.stderr
    home = Path(os.environ["WATCHKEEPER_HOME"])
    assert not (home / "runs").exists() or list((home / "runs").iterdir()) == []
    listing = run_cli(root, "runs", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout) == []


@pytest.mark.parametrize(
    "nesting", ["[" * 100_000 + "]" * 100_000, "{a=" * 100_000 + "1" + "}" * 100_000]
)
def test_a_deeply_nested_project_file_is_a_one_line_error(tmp_path: Path, nesting: str) -> None:
    root = make_repo(tmp_path)
    (root / "watchkeeper.toml").write_text(f"x = {nesting}\n")
    result = run_cli(root, "train", "churn")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert (
        f"{root / 'watchkeeper.toml'}: " in result.stderr and "nested too deeply" in result.stderr
    )
