"""Keeping data at training time: a copy is trusted only when the hash cache vouches for it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from agent.data.deps import snapshot_data_dep
from agent.data.stat_cache import StatCache
from agent.errors import WatchkeeperError
from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore, file_digest
from agent.paths import WatchkeeperPaths
from agent.runs.data_cache import keep_data_deps


def dated_files(folder: Path, count: int, size: int, age_seconds: float) -> list[Path]:
    folder.mkdir(parents=True)
    when = time.time() - age_seconds
    files = []
    for index in range(count):
        path = folder / f"shard{index}.bin"
        path.write_bytes(os.urandom(size))
        os.utime(path, (when, when))
        files.append(path)
    return files


def test_settled_files_are_kept_unread_and_each_blob_hashes_to_its_name(tmp_path: Path) -> None:
    files = dated_files(tmp_path / "repo" / "data", 20, 64 << 10, age_seconds=3600)
    db, paths = open_ledger(), WatchkeeperPaths.from_environment()
    snapshot = snapshot_data_dep(db, tmp_path / "repo" / "data", paths).snapshot_id
    store = ArtifactStore(paths.artifacts, StatCache.open(paths))

    kept = keep_data_deps(db, store, tmp_path / "repo", {"data": snapshot}, "always", 0)

    assert len(kept.blobs) == 20 and kept.copied_bytes == 20 * (64 << 10)
    for blob in kept.blobs:
        assert file_digest(store.path(blob.digest)) == blob.digest
    assert {file_digest(path) for path in files} == {blob.digest for blob in kept.blobs}


def test_a_rewrite_that_keeps_size_and_mtime_is_not_kept_under_the_old_digest(
    tmp_path: Path,
) -> None:
    (shard,) = dated_files(tmp_path / "repo" / "data", 1, 4096, age_seconds=3600)
    db, paths = open_ledger(), WatchkeeperPaths.from_environment()
    snapshot = snapshot_data_dep(db, tmp_path / "repo" / "data", paths).snapshot_id
    recorded = shard.stat()
    shard.write_bytes(os.urandom(4096))  # same size; the mtime is put back as it was
    os.utime(shard, ns=(recorded.st_atime_ns, recorded.st_mtime_ns))
    store = ArtifactStore(paths.artifacts, StatCache.open(paths))

    small = keep_data_deps(db, store, tmp_path / "repo", {"data": snapshot}, "small", 1 << 30)
    with pytest.raises(WatchkeeperError, match="changed while it was being kept"):
        keep_data_deps(db, store, tmp_path / "repo", {"data": snapshot}, "always", 0)

    assert small.blobs == [] and "changed while training started" in small.notes[0]
    assert list(store.root.rglob("*")) == [] or all(p.is_dir() for p in store.root.rglob("*"))


def test_a_store_whose_folders_were_removed_meanwhile_keeps_again(tmp_path: Path) -> None:
    dated_files(tmp_path / "repo" / "data", 3, 1024, age_seconds=3600)
    db, paths = open_ledger(), WatchkeeperPaths.from_environment()
    snapshot = snapshot_data_dep(db, tmp_path / "repo" / "data", paths).snapshot_id
    store = ArtifactStore(paths.artifacts, StatCache.open(paths))
    keep_data_deps(db, store, tmp_path / "repo", {"data": snapshot}, "always", 0)
    shutil.rmtree(store.root)  # a collection emptied the store

    again = keep_data_deps(db, store, tmp_path / "repo", {"data": snapshot}, "always", 0)

    assert len(again.blobs) == 3 and all(store.has(blob.digest) for blob in again.blobs)
