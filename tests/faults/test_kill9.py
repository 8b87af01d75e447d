"""kill -9 at seeded random points of `train` and `data snapshot`: nothing lost, nothing left."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.ledger.artifacts import ArtifactStore, file_digest
from tests.agent.runs.gitrepo import PYTHON, git, make_repo
from tests.faults.agent_process import REPO_ROOT
from tests.support import wait_for

KILL_POINTS = 6
TRAIN = """\
import json, os, pathlib
rows = sum(1 for p in sorted(pathlib.Path("data").iterdir()) for _ in p.open())
pathlib.Path("model.bin").write_bytes(os.urandom(4 * 1024 * 1024))
json.dump({"rows": rows}, open("metrics.json", "w"))
"""
SPEC = f"""\
[models.churn]
train = "{PYTHON} train.py"
deps = ["train.py", "data"]
outs = ["model.bin"]
metrics = "metrics.json"
"""


def cli_process(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the run's own group is separate; killpg reaches the CLI's
    )


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def ledger(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "ledger.db")


def kill_points(seconds: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return sorted(rng.uniform(0.0, seconds) for _ in range(KILL_POINTS))


def timed(process: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    process.wait(timeout=120)
    return time.monotonic() - started


@pytest.fixture
def data_repo(tmp_path: Path) -> Path:
    root = make_repo(tmp_path, {"train.py": TRAIN, ".gitignore": "data/\n"}, spec=SPEC)
    data = root / "data"
    data.mkdir()
    for index in range(400):
        (data / f"part-{index:03d}.csv").write_text("a,b\n" + f"{index},x\n" * 200)
    git(root, "add", "-A")
    return root


def test_kill_9_of_train_at_random_points_loses_nothing(
    data_repo: Path, watchkeeper_home: Path
) -> None:
    assert run_cli(data_repo, "init").returncode == 0
    clean = timed(cli_process(data_repo, "train", "churn"))
    for delay in kill_points(clean * 1.2, seed=11):
        process = cli_process(data_repo, "train", "churn")
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        settled = run_cli(data_repo, "runs", "list", "--json")  # settles what was cut off
        assert settled.returncode == 0, settled.stderr
    # Every run has ended (or ends soon: a run outlives its killed command by design).
    wait_for(
        lambda: all(
            r["state"] not in ("queued", "starting", "running")
            for r in json.loads(run_cli(data_repo, "runs", "list", "--json").stdout)
        ),
        timeout=60,
        what="every run to be settled",
    )
    final = run_cli(data_repo, "train", "churn")
    assert final.returncode == 0, final.stderr
    db = ledger(watchkeeper_home)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        statuses = [row[0] for row in db.execute("SELECT status FROM model_versions")]
        # A kill before anything was recorded leaves nothing; any later one leaves a run with
        # its version, never one without the other.
        assert 2 <= len(statuses) <= KILL_POINTS + 2
        runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        orphans = db.execute(
            "SELECT COUNT(*) FROM runs WHERE id NOT IN (SELECT run_id FROM model_versions"
            " WHERE run_id IS NOT NULL)"
        ).fetchone()[0]
        assert runs == len(statuses) and orphans == 0
        assert set(statuses) <= {"succeeded", "interrupted", "failed", "cancelled"}
        store = ArtifactStore(watchkeeper_home / "artifacts")
        for (artifacts,) in db.execute(
            "SELECT artifacts FROM model_versions WHERE status = 'succeeded'"
        ):
            for digest in json.loads(artifacts).values():
                assert file_digest(store.path(digest)) == digest  # every blob is whole
    finally:
        db.close()
    leftovers = list((watchkeeper_home / "artifacts").rglob(".incoming-*"))
    assert leftovers == []


def test_kill_9_of_data_snapshot_at_random_points_loses_nothing(
    data_repo: Path, watchkeeper_home: Path
) -> None:
    data = data_repo / "data"
    clean = timed(cli_process(data_repo, "data", "snapshot", str(data)))
    for index, delay in enumerate(kill_points(max(clean, 0.5) * 1.2, seed=5)):
        (data / f"part-{index:03d}.csv").write_text(f"a,b\n{index},changed\n")
        process = cli_process(data_repo, "data", "snapshot", str(data))
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    final = run_cli(data_repo, "data", "snapshot", str(data), "--json")
    assert final.returncode == 0, final.stderr
    db = ledger(watchkeeper_home)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (snapshot_id, n_files) = db.execute(
            "SELECT id, n_files FROM data_snapshots ORDER BY id DESC LIMIT 1"
        ).fetchone()
        files = db.execute(
            "SELECT COUNT(*) FROM data_snapshot_files WHERE snapshot_id = ?", [snapshot_id]
        ).fetchone()[0]
        # Every snapshot has all its file rows: none was cut in half.
        partial = db.execute(
            "SELECT COUNT(*) FROM data_snapshots s WHERE n_files != (SELECT COUNT(*)"
            " FROM data_snapshot_files f WHERE f.snapshot_id = s.id)"
        ).fetchone()[0]
    finally:
        db.close()
    assert n_files == files == 400 and partial == 0
    assert json.loads(final.stdout)["n_files"] == 400
