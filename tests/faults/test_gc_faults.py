"""gc killed with -9 at several points, and a `train` that claims blobs a paused gc is removing."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.ledger.artifacts import GC_LOCK_NAME
from agent.ledger.gc import SWEEP_BATCH, stored_blobs
from tests.agent.runs.gitrepo import cli_command, cli_env, run_cli
from tests.agent.runs.reproducible import make_data_repo
from tests.support import wait_for

DATA_FILES = 2000
KILL_AFTER_FREED = (1, 300, 700, 1100, 1500)  # blobs gone when each gc is killed


def write_data(root: Path, generation: int) -> None:
    data = root / "data"
    for index in range(DATA_FILES):
        (data / f"f{index:04d}.csv").write_text(f"x,y\n{index},{generation}\n")


def store_count(home: Path) -> int:
    return sum(1 for _ in stored_blobs(home / "artifacts"))


def missing_listed_blobs(home: Path) -> list[str]:
    """Digests some version lists in version_blobs that the store does not hold."""
    db = sqlite3.connect(home / "ledger.db")
    try:
        listed = {row[0] for row in db.execute("SELECT DISTINCT digest FROM version_blobs")}
    finally:
        db.close()
    held = {blob.digest for blob in stored_blobs(home / "artifacts")}
    return sorted(listed - held)


def age_the_store(home: Path) -> None:
    old = time.time() - 2 * 3600
    for blob in stored_blobs(home / "artifacts"):
        os.utime(blob.path, (old, old))


@pytest.fixture
def deleted_version(tmp_path: Path) -> Path:
    """A repo whose v1 (2,000 kept data files) is deleted and whose v2 is current, aged."""
    root = make_data_repo(tmp_path)
    write_data(root, 1)
    assert run_cli(root, "train", "churn", timeout=120).returncode == 0
    write_data(root, 2)
    assert run_cli(root, "train", "churn", timeout=120).returncode == 0
    deleted = run_cli(root, "models", "delete", "churn@1")
    assert deleted.returncode == 0, deleted.stderr
    age_the_store(Path(os.environ["WATCHKEEPER_HOME"]))
    return root


def gc_process(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cli_command("gc"),
        cwd=root,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def freed_or_ended(home: Path, left: int, process: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: store_count(home) <= left or process.poll() is not None


def test_kill_9_during_gc_never_leaves_a_version_listing_a_missing_blob(
    deleted_version: Path,
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    total = store_count(home)
    for freed in KILL_AFTER_FREED:
        process = gc_process(deleted_version)
        wait_for(
            freed_or_ended(home, total - freed, process), timeout=60, what=f"gc to free {freed}"
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert missing_listed_blobs(home) == []

    finished = run_cli(deleted_version, "gc")

    assert finished.returncode == 0, finished.stderr
    assert missing_listed_blobs(home) == []
    assert total - store_count(home) >= DATA_FILES  # v1's data is gone, v2's stays
    again = run_cli(deleted_version, "reproduce", "churn@2", timeout=120)
    assert again.returncode == 0 and "reproduced exactly" in again.stdout, again.stderr


def holds_gc_lock(home: Path) -> bool:
    """True while a gc holds the store's lock exclusively."""
    descriptor = os.open(home / "artifacts" / GC_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def has_open(pid: int, name: str) -> bool:
    folder = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(folder / fd).endswith(name) for fd in os.listdir(folder))
    except OSError:
        return False


def ledger_writable(home: Path) -> bool:
    """True when no process holds the ledger's write lock."""
    db = sqlite3.connect(home / "ledger.db", timeout=0)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.rollback()
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()
    return True


def pause_while_unlinking(process: subprocess.Popen[bytes], home: Path, stored: int) -> bool:
    """SIGSTOP gc half-way through a batch's unlinks: it holds the store's gc lock but not the
    ledger's write lock (the batch is committed), and part of the batch is gone (`stored` blobs
    were there before). False if gc ended first."""
    while process.poll() is None:
        if holds_gc_lock(home):
            process.send_signal(signal.SIGSTOP)
            gone = stored - store_count(home)
            if holds_gc_lock(home) and ledger_writable(home) and gone % SWEEP_BATCH != 0:
                return True
            process.send_signal(signal.SIGCONT)
            # Not there yet (say, the lock is held but no blob of the batch is gone yet): let
            # gc run a moment before stopping it again, else on a busy machine it is stopped
            # again before it has run at all, and never gets there.
            time.sleep(0.002)
    return False


def test_a_train_claiming_blobs_that_a_paused_gc_is_removing_keeps_them(
    deleted_version: Path,
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    write_data(deleted_version, 1)  # v3 is trained on v1's data again: its blobs are stored
    stored = store_count(home)
    collector = gc_process(deleted_version)
    try:
        assert pause_while_unlinking(collector, home, stored), "gc ended before it could be paused"
        training = subprocess.Popen(
            cli_command("train", "churn"),
            cwd=deleted_version,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: has_open(training.pid, GC_LOCK_NAME) or training.poll() is not None,
            timeout=60,
            what="train to wait for the store's gc lock",
        )
    finally:
        collector.send_signal(signal.SIGCONT)
    assert collector.wait(timeout=60) == 0
    errors, _ = training.communicate(timeout=120)

    assert training.returncode == 0, errors.decode()
    assert missing_listed_blobs(home) == []
    again = run_cli(deleted_version, "reproduce", "churn@3", timeout=120)
    assert again.returncode == 0 and "reproduced exactly" in again.stdout, again.stderr
