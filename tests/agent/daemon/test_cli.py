"""`watchkeeper watch` and `alerts`: on the ledger when no agent runs, else via the socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from agent.cli import main
from agent.config import UserConfig
from agent.daemon.alerts import insert_alert
from agent.daemon.lifecycle import running_pid
from agent.ledger import open_ledger
from agent.paths import WatchkeeperPaths
from tests.agent.daemon.conftest import REPO_ROOT, make_repo


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_watch_add_list_remove_without_an_agent(tmp_path: Path, watchkeeper_home: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    data = tmp_path / "data"
    data.mkdir()
    assert run("watch", "add", str(repo)) == (
        0,
        f"added repo {repo}; the agent watches it once started\n",
    )
    assert run("watch", "add", str(data), "--data")[0] == 0
    code, output = run("watch", "add", str(data))
    assert code == 2
    assert "not the root of a git repository" in output and "--data" in output
    code, output = run("watch", "add", str(tmp_path / "missing"))
    assert code == 2 and "no such file or folder" in output
    code, output = run("watch", "list", "--json")
    assert code == 0
    assert [(row["path"], row["kind"]) for row in json.loads(output)] == [
        (str(repo), "repo"),
        (str(data), "data"),
    ]
    assert run("watch", "remove", str(repo)) == (0, f"no longer watching {repo}\n")
    code, output = run("watch", "remove", str(repo))
    assert code == 2 and "is not watched" in output and str(data) in output
    assert UserConfig.load().watched_repos == []


def test_alerts_list_and_ack_without_an_agent(watchkeeper_home: Path) -> None:
    paths = WatchkeeperPaths.from_environment()
    db = open_ledger(paths.ledger)
    first = insert_alert(db, kind="watch", message="folder gone", dedupe_key="w:1")
    second = insert_alert(db, kind="watch", message="other folder gone", dedupe_key="w:2")
    assert insert_alert(db, kind="watch", message="again", dedupe_key="w:1") is None
    db.close()
    assert first and second
    code, output = run("alerts", "--json")
    assert code == 0
    assert [row["id"] for row in json.loads(output)] == [second["id"], first["id"]]
    assert run("alerts", "ack", str(first["id"])) == (
        0,
        f"acknowledged alert {first['id']}: folder gone\n",
    )
    code, output = run("alerts", "--json")
    assert [row["id"] for row in json.loads(output)] == [second["id"]]
    code, output = run("alerts", "--all", "--json")
    assert len(json.loads(output)) == 2
    code, output = run("alerts", "ack", "999")
    assert code == 2 and "no alert with id 999" in output
    code, output = run("alerts")
    assert code == 0 and "other folder gone" in output


def test_the_cli_goes_through_the_running_agent(tmp_path: Path, watchkeeper_home: Path) -> None:
    paths = WatchkeeperPaths.from_environment()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    started = subprocess.run(
        [sys.executable, "-m", "agent", "agent", "start"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    try:
        repo = make_repo(tmp_path / "repo")
        code, output = run("watch", "add", str(repo))
        assert (code, output) == (0, f"watching repo {repo} (inotify)\n")
        code, output = run("watch", "list", "--json")
        assert json.loads(output)[0]["mode"] == "inotify"
        code, output = run("agent", "status", "--json")
        status = json.loads(output)
        assert status["running"] is True and status["pid"] == running_pid(paths)
        assert run("alerts", "--json") == (0, "[]\n")
    finally:
        subprocess.run(
            [sys.executable, "-m", "agent", "agent", "stop"], env=env, cwd=REPO_ROOT, timeout=30
        )
