"""`watchkeeper gc` while the agent runs a retrain: the retrain keeps its blobs and run folder."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.client import AgentClient
from agent.ledger.gc import stored_blobs
from agent.paths import WatchkeeperPaths
from tests.agent.daemon.conftest import REPO_ROOT
from tests.agent.daemon.test_service import (  # noqa: F401 (fixtures)
    EventStream,
    agent_factory,
    paths,
    trained_repo,
    watch,
)
from tests.support import wait_for


def listed_and_missing(home: WatchkeeperPaths, version: int) -> tuple[set[str], set[str]]:
    connection = sqlite3.connect(f"file:{home.ledger}?mode=ro", uri=True, timeout=10)
    try:
        listed = {
            str(row[0])
            for row in connection.execute(
                "SELECT b.digest FROM version_blobs b JOIN model_versions v ON v.id = b.version_id"
                " WHERE v.version = ?",
                [version],
            )
        }
        deleted = connection.execute(
            "SELECT deleted_at FROM model_versions WHERE version = ?", [version]
        ).fetchone()[0]
    finally:
        connection.close()
    assert deleted is None
    held = {blob.digest for blob in stored_blobs(home.artifacts)}
    return listed, listed - held


def running_run(home: WatchkeeperPaths) -> str | None:
    connection = sqlite3.connect(f"file:{home.ledger}?mode=ro", uri=True, timeout=10)
    try:
        row = connection.execute("SELECT id FROM runs WHERE state = 'running'").fetchone()
    finally:
        connection.close()
    return str(row[0]) if row else None


def test_gc_while_the_agent_retrains_keeps_what_the_retrain_uses(
    tmp_path: Path,
    paths: WatchkeeperPaths,  # noqa: F811 (fixture)
    agent_factory: Any,  # noqa: F811 (fixture)
) -> None:
    repo = trained_repo(tmp_path, paths, on_stale="retrain")
    spec = repo / "watchkeeper.toml"
    spec.write_text(spec.read_text().replace("sleep = 0", "sleep = 60"))  # uncommitted: a diff
    watch(paths, repo)
    agent_factory(retrain_quiet_seconds=1.0)
    events = EventStream(paths.socket)
    try:
        with (repo / "data" / "train.csv").open("a") as handle:
            handle.write("55,Rome\n")
        run_id = str(wait_for(lambda: running_run(paths), timeout=60, what="a retrain to run"))
        old = time.time() - 2 * 3600  # every blob, the retrain's too, older than the grace
        for blob in stored_blobs(paths.artifacts):
            os.utime(blob.path, (old, old))

        collected = subprocess.run(
            [sys.executable, "-m", "agent", "gc", "--keep-last", "0"],
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert collected.returncode == 0, collected.stderr
        listed, missing = listed_and_missing(paths, 2)
        assert listed and missing == set()  # its diff and its data
        assert (paths.runs / run_id).is_dir()
        with AgentClient.connect(paths.socket) as client:
            runs = {run["id"]: run["state"] for run in client.call("runs")}
            assert runs[run_id] == "running"
            client.call("cancel", run=run_id)
        events.next("run_state", run=run_id, state="cancelled", timeout=30)
    finally:
        events.close()
