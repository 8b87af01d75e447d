"""The data cache under a full disk and kill -9: nothing partial registered, nothing missing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.ledger.artifacts import INCOMING_PREFIX, ArtifactStore, file_digest
from tests.agent.runs.gitrepo import cli_command, cli_env, run_cli
from tests.agent.runs.reproducible import make_data_repo, reproducible_spec
from tests.faults.tmpfs import mounted_tmpfs
from tests.support import wait_for

BIG_BYTES = 6 << 20  # more than the 4 MiB home holds


@pytest.fixture
def small_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """WATCHKEEPER_HOME on a real 4 MiB tmpfs."""
    with mounted_tmpfs("4m") as home:
        monkeypatch.setenv("WATCHKEEPER_HOME", str(home))
        yield home


def kept_rows(home: Path) -> list[tuple[int, str, str, str]]:
    ledger = sqlite3.connect(f"file:{home / 'ledger.db'}?mode=ro", uri=True)
    try:
        assert ledger.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return ledger.execute("SELECT version_id, kind, path, digest FROM version_blobs").fetchall()
    finally:
        ledger.close()


def assert_every_reference_is_whole(home: Path) -> None:
    """Each blob a version lists exists and hashes to its name; no partial copy is left."""
    store = ArtifactStore(home / "artifacts")
    for _, _, path, digest in kept_rows(home):
        assert store.has(digest), f"{path} references the missing blob {digest}"
        assert file_digest(store.path(digest)) == digest


def test_a_full_disk_while_keeping_data_does_not_fail_training(
    tmp_path: Path, small_home: Path
) -> None:
    root = make_data_repo(tmp_path)
    (root / "data" / "zbig.bin").write_bytes(os.urandom(BIG_BYTES))

    result = run_cli(root, "train", "churn")

    assert result.returncode == 0, result.stderr
    assert "kept only in part" in result.stderr and f"the disk holding {small_home}" in (
        result.stderr
    )
    kept = {path for _, kind, path, _ in kept_rows(small_home) if kind == "data"}
    assert kept <= {"data/part0.csv", "data/part1.csv", "data/part2.csv"}  # never zbig.bin
    assert not list((small_home / "artifacts").rglob(f"{INCOMING_PREFIX}*"))
    assert_every_reference_is_whole(small_home)


def test_a_full_disk_fails_training_when_keep_data_is_always(
    tmp_path: Path, small_home: Path
) -> None:
    root = make_data_repo(tmp_path, reproducible_spec('keep_data = "always"\n'))
    (root / "data" / "zbig.bin").write_bytes(os.urandom(BIG_BYTES))

    result = run_cli(root, "train", "churn")

    assert result.returncode != 0
    assert 'keep_data = "always", and the content of data/' in result.stderr
    assert f"the disk holding {small_home}" in result.stderr and "Traceback" not in result.stderr
    assert not list((small_home / "artifacts").rglob(f"{INCOMING_PREFIX}*"))
    assert_every_reference_is_whole(small_home)


def test_kill_9_while_keeping_data_leaves_no_version_referencing_a_missing_blob(
    tmp_path: Path,
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_data_repo(tmp_path)
    chunk = os.urandom(1 << 20)
    for index in range(256):
        (root / "data" / f"f{index:03}.bin").write_bytes(chunk[index:] + chunk[:index])
    store = ArtifactStore(home / "artifacts")
    training = subprocess.Popen(
        cli_command("train", "churn"),
        cwd=root,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def whole_blobs() -> int:  # not the copies still incoming
        if not store.root.is_dir():
            return 0
        return sum(1 for p in store.root.glob("*/*") if not p.name.startswith("."))

    wait_for(whole_blobs, timeout=60, what="a first blob kept")
    os.killpg(training.pid, signal.SIGKILL)
    training.wait(timeout=10)
    kept_before = whole_blobs()
    assert 0 < kept_before < 256 + 3  # killed while the data was being kept

    assert_every_reference_is_whole(home)
    again = run_cli(root, "train", "churn")
    reproduced = run_cli(root, "reproduce", "churn@latest")

    assert again.returncode == 0, again.stderr
    assert not list(store.root.rglob(f"{INCOMING_PREFIX}*"))
    assert_every_reference_is_whole(home)
    assert reproduced.returncode == 0 and "reproduced exactly" in reproduced.stdout


def snapshot_rows(home: Path) -> list[tuple[int, str, str]]:
    ledger = sqlite3.connect(f"file:{home / 'ledger.db'}?mode=ro", uri=True)
    try:
        assert ledger.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return ledger.execute("SELECT snapshot_id, path, digest FROM snapshot_blobs").fetchall()
    finally:
        ledger.close()


def assert_every_snapshot_blob_is_whole(home: Path) -> None:
    store = ArtifactStore(home / "artifacts")
    for _, path, digest in snapshot_rows(home):
        assert store.has(digest), f"{path} references the missing blob {digest}"
        assert file_digest(store.path(digest)) == digest


def test_a_full_disk_while_a_snapshot_keeps_content_notes_it_and_keeps_the_snapshot(
    tmp_path: Path, small_home: Path
) -> None:
    root = make_data_repo(tmp_path)
    (root / "data" / "zbig.bin").write_bytes(os.urandom(BIG_BYTES))

    result = run_cli(root, "data", "snapshot", "data", "--keep-data", "always")

    assert result.returncode == 0, result.stderr
    assert "snapshot 1 recorded" in result.stdout
    assert "was kept only in part" in result.stdout and f"the disk holding {small_home}" in (
        result.stdout
    )
    kept = {path for _, path, _ in snapshot_rows(small_home)}
    assert kept <= {"part0.csv", "part1.csv", "part2.csv"}  # never zbig.bin
    assert not list((small_home / "artifacts").rglob(f"{INCOMING_PREFIX}*"))
    assert_every_snapshot_blob_is_whole(small_home)


def test_kill_9_while_a_snapshot_keeps_content_leaves_no_snapshot_listing_a_missing_blob(
    tmp_path: Path,
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_data_repo(tmp_path)
    chunk = os.urandom(1 << 20)
    for index in range(256):
        (root / "data" / f"f{index:03}.bin").write_bytes(chunk[index:] + chunk[:index])
    store = ArtifactStore(home / "artifacts")
    keeping = subprocess.Popen(
        cli_command("data", "snapshot", "data", "--keep-data", "always"),
        cwd=root,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(lambda: store.root.is_dir() and any(store.root.glob("*/*")), timeout=60)
    os.killpg(keeping.pid, signal.SIGKILL)
    keeping.wait(timeout=10)
    kept_before = sum(1 for p in store.root.glob("*/*") if not p.name.startswith("."))
    assert 0 < kept_before < 256 + 3  # killed while the content was being kept

    assert_every_snapshot_blob_is_whole(home)
    again = run_cli(root, "data", "snapshot", "data", "--keep-data", "always")

    assert again.returncode == 0, again.stderr
    assert "content kept: 259 files" in again.stdout
    assert not list(store.root.rglob(f"{INCOMING_PREFIX}*"))
    assert len(snapshot_rows(home)) == 259
    assert_every_snapshot_blob_is_whole(home)
