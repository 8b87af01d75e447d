"""`[share] mlflow` in config.toml: the running agent exports new versions on its own, and
versions that waited through an outage go once the server is back, across a restart."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from agent.daemon.lifecycle import LOG_FILE_NAME, running_pid
from agent.paths import WatchkeeperPaths
from tests.agent.interop.mlflow_support import MlflowServer, add_versions, free_port
from tests.agent.runs.gitrepo import REPO_ROOT, make_repo
from tests.support import wait_for

pytest.importorskip("mlflow")


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )


def exported_ids(uri: str, experiment: str) -> Counter[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return Counter()
    return Counter(
        run.data.tags["watchkeeper.global_id"] for run in client.search_runs([found.experiment_id])
    )


def recorded_exports(paths: WatchkeeperPaths, uri: str) -> int:
    with sqlite3.connect(paths.ledger) as db:
        return int(
            db.execute(
                "SELECT COUNT(*) FROM mlflow_exports WHERE tracking_uri = ?", [uri]
            ).fetchone()[0]
        )


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_versions_wait_through_an_outage_and_a_restart_then_go(tmp_path: Path) -> None:
    paths = WatchkeeperPaths.from_environment().ensure()
    server = MlflowServer(tmp_path / "server", free_port())
    server.folder.mkdir()
    paths.config.write_text(
        f'[schedule]\nrun_poll_seconds = 1\n\n[share]\nmlflow = "{server.uri}"\n'
    )
    model = f"m{uuid.uuid4().hex[:8]}"
    root = make_repo(tmp_path)
    home = Path(os.environ["WATCHKEEPER_HOME"])
    first = add_versions(home, root, model, 1)
    agent_log = paths.logs / LOG_FILE_NAME
    try:
        assert agent_cli("agent", "start").returncode == 0
        wait_for(
            lambda: agent_log.is_file() and "MLflow export failed" in agent_log.read_text(),
            120,
            lambda: agent_log.read_text()[-3000:] if agent_log.is_file() else "no agent log",
        )
        assert recorded_exports(paths, server.uri) == 0
        assert agent_cli("agent", "stop").returncode == 0

        server.start()
        assert agent_cli("agent", "start").returncode == 0
        wait_for(lambda: recorded_exports(paths, server.uri) == 1, 180, agent_log.read_text)
        assert exported_ids(server.uri, model) == Counter(first)

        second = add_versions(home, root, model, 1)
        wait_for(lambda: recorded_exports(paths, server.uri) == 2, 180, agent_log.read_text)
        assert exported_ids(server.uri, model) == Counter(first + second)
    finally:
        agent_cli("agent", "stop")
        pid = running_pid(paths)
        if pid:
            os.kill(pid, 9)
        server.stop()
    assert "MLflow export: 1 runs exported" in agent_log.read_text()


@pytest.mark.parametrize(
    ("share", "message"),
    [
        (
            'mlflow = "mlflow.example.com"',
            ":5: [share] mlflow must be an MLflow tracking URI such as "
            "\"http://mlflow.example.com:5000\", not 'mlflow.example.com'.",
        ),
        (
            'mlflow = "http://h:5000"\nmlfow = "x"',
            ":6: unknown key 'mlfow' in [share]; known keys are mlflow.",
        ),
    ],
)
def test_a_bad_share_section_is_named_with_its_line(share: str, message: str) -> None:
    paths = WatchkeeperPaths.from_environment().ensure()
    paths.config.write_text(f"[watch]\nrepos = []\n\n[share]\n{share}\n")
    refused = agent_cli("watch", "list")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [f"error: {paths.config}{message}"]
