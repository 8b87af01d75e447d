"""`watchkeeper demo`: a real example repo, trained and recorded; --remove; `make run`'s loop."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.project.demo import customer_rows
from tests.agent.runs.gitrepo import REPO_ROOT, cli_env, git, run_cli


def ledger(home: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(home / "ledger.db")
    connection.row_factory = sqlite3.Row
    return connection


def versions(home: Path) -> list[sqlite3.Row]:
    with ledger(home) as db:
        return db.execute(
            "SELECT v.version, v.status, v.metrics, v.data, r.path FROM model_versions v "
            "JOIN models m ON m.id = v.model_id JOIN repos r ON r.id = m.repo_id "
            "WHERE m.name = 'churn' ORDER BY v.version"
        ).fetchall()


def watched(home: Path) -> str:
    config = home / "config.toml"
    return config.read_text() if config.exists() else ""


def test_demo_writes_a_committed_repo_and_records_a_succeeded_version(
    tmp_path: Path, watchkeeper_home: Path
) -> None:
    root = tmp_path / "churn-demo"
    result = run_cli(tmp_path, "demo", str(root), "--no-agent")
    assert result.returncode == 0, result.stderr
    assert "churn v1 succeeded" in result.stderr
    assert "watchkeeper status" in result.stdout and "demo --remove" in result.stdout

    assert git(root, "rev-list", "--count", "HEAD").strip() == "1"
    assert git(root, "status", "--porcelain") == ""
    tracked = set(git(root, "ls-files").split())
    assert {"train.py", "watchkeeper.toml", ".gitignore"} <= tracked
    assert "data/customers.csv" not in tracked  # data is git-ignored: a data dep
    with open(root / "data" / "customers.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 400
    assert {row["contract"] for row in rows} == {"month-to-month", "one-year", "two-year"}
    assert all(float(row["monthly_charges"]) > 0 for row in rows)

    [version] = versions(watchkeeper_home)
    assert version["status"] == "succeeded" and version["path"] == str(root)
    metrics = json.loads(version["metrics"])
    assert 0.6 < metrics["accuracy"] <= 1.0 and metrics["rows"] == 400
    assert list(json.loads(version["data"])) == ["data/customers.csv"]
    assert str(root) in watched(watchkeeper_home)

    status = run_cli(tmp_path, "status")
    assert status.returncode == 0 and "fresh churn v1" in status.stdout


def test_the_demo_data_is_the_same_on_every_machine() -> None:
    assert customer_rows() == customer_rows()
    assert customer_rows(5) != customer_rows(5, seed=1)


def test_demo_goes_to_the_data_folder_by_default(tmp_path: Path, watchkeeper_home: Path) -> None:
    result = run_cli(tmp_path, "demo", "--no-agent")
    assert result.returncode == 0, result.stderr
    assert (watchkeeper_home / "demo" / "churn-demo" / "watchkeeper.toml").is_file()


def test_demo_sets_a_repo_identity_only_when_git_has_none(tmp_path: Path) -> None:
    no_identity = {**cli_env(), "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    bare = tmp_path / "bare"
    result = subprocess.run(
        [sys.executable, "-m", "agent", "demo", str(bare), "--no-agent"],
        env=no_identity,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert git(bare, "config", "--local", "user.email").strip() == "demo@watchkeeper.invalid"

    global_config = tmp_path / "gitconfig"
    global_config.write_text("[user]\n\tname = Ada\n\temail = ada@example.com\n")
    mine = tmp_path / "mine"
    result = subprocess.run(
        [sys.executable, "-m", "agent", "demo", str(mine), "--no-agent"],
        env={**no_identity, "GIT_CONFIG_GLOBAL": str(global_config)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    local = subprocess.run(
        ["git", "-C", str(mine), "config", "--local", "user.email"], capture_output=True
    )
    assert local.returncode == 1  # nothing set in the repo: the user's identity was used
    log = subprocess.run(
        ["git", "-C", str(mine), "log", "--format=%ae"],
        env={**os.environ, "GIT_CONFIG_GLOBAL": str(global_config)},
        capture_output=True,
        text=True,
    )
    assert log.stdout.strip() == "ada@example.com"


def test_a_second_demo_reuses_the_project_and_trains_it_again(
    tmp_path: Path, watchkeeper_home: Path
) -> None:
    root = tmp_path / "churn-demo"
    assert run_cli(tmp_path, "demo", str(root), "--no-agent").returncode == 0
    train_script = (root / "train.py").read_text()
    again = run_cli(tmp_path, "demo", str(root), "--no-agent")
    assert again.returncode == 0, again.stderr
    assert "exists already" in again.stdout
    assert "churn v2 succeeded" in again.stderr
    assert [row["version"] for row in versions(watchkeeper_home)] == [1, 2]
    assert (root / "train.py").read_text() == train_script
    assert git(root, "rev-list", "--count", "HEAD").strip() == "1"
    assert watched(watchkeeper_home).count(str(root)) == 2  # the repo and its data file, once


def test_demo_refuses_a_folder_that_holds_other_files(
    tmp_path: Path, watchkeeper_home: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes\n")
    result = run_cli(tmp_path, "demo", str(mine), "--no-agent")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {mine} exists and is not empty, and it is not a demo project; choose another "
        "folder: `watchkeeper demo PATH`."
    ]
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert not (watchkeeper_home / "ledger.db").exists() or versions(watchkeeper_home) == []


def test_remove_deletes_the_demo_and_forgets_it(tmp_path: Path, watchkeeper_home: Path) -> None:
    root = tmp_path / "churn-demo"
    assert run_cli(tmp_path, "demo", str(root), "--no-agent").returncode == 0
    run_dirs = list((watchkeeper_home / "runs").iterdir())
    assert run_dirs

    result = run_cli(tmp_path, "demo", "--remove", str(root))
    assert result.returncode == 0, result.stderr
    assert f"removed the demo project {root}" in result.stdout
    assert not root.exists()
    assert versions(watchkeeper_home) == []
    with ledger(watchkeeper_home) as db:
        assert db.execute("SELECT COUNT(*) FROM repos").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM data_sources").fetchone()[0] == 0
    assert not any(run_dir.exists() for run_dir in run_dirs)
    assert str(root) not in watched(watchkeeper_home)


def test_remove_refuses_a_folder_that_is_not_a_demo(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "watchkeeper.toml").write_text("[models.churn]\ntrain = 'true'\n")
    result = run_cli(tmp_path, "demo", "--remove", str(mine))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {mine} is not a demo project")
    assert (mine / "watchkeeper.toml").is_file()
    missing = run_cli(tmp_path, "demo", "--remove", str(tmp_path / "gone"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.slow
def test_make_run_on_a_fresh_machine_without_a_display_shows_the_whole_loop(
    tmp_path: Path, watchkeeper_home: Path
) -> None:
    environment = cli_env()
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        environment.pop(name, None)
    try:
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "scripts" / "make_run.py")],
            cwd=tmp_path,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "churn v1 succeeded" in result.stderr
        verdict = result.stdout.split("$ watchkeeper status", 1)[1].split("$ watchkeeper alerts")[0]
        assert "stale churn v1" in verdict
        assert "data/customers.csv" in verdict
        alerts = run_cli(tmp_path, "alerts", "--json")
        assert alerts.returncode == 0, alerts.stderr
        assert len(json.loads(alerts.stdout)) >= 1

        demo_root = watchkeeper_home / "demo" / "churn-demo"
        removed = run_cli(tmp_path, "demo", "--remove")
        assert removed.returncode == 0, removed.stderr
        assert not demo_root.exists()
        watches = run_cli(tmp_path, "watch", "list", "--json")
        assert json.loads(watches.stdout) == []
    finally:
        stopped = run_cli(tmp_path, "agent", "stop")
        assert stopped.returncode == 0, stopped.stderr
