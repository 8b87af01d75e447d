"""One hashing engine: fingerprints, the upload's tree and the artifact store share digests."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import blake3
import pytest

import agent.remote.tree as tree_module
from agent.data.fingerprint import fingerprint
from agent.data.hashing import RACY_WINDOW_NS, file_digest
from agent.data.stat_cache import StatCache
from agent.ledger.artifacts import ArtifactStore
from agent.remote.tree import hash_tree

OLD_NS = time.time_ns() - 10 * RACY_WINDOW_NS
WINDOW_NS = 200_000_000  # a short racy window, so that files settle quickly here


def cache_at(path: Path, **options: bool) -> StatCache:
    return StatCache(path, racy_window_ns=WINDOW_NS, **options)


def settle(*paths: Path) -> None:
    """Wait until the files' ctimes (which utime cannot set back) leave the racy window."""
    newest = max(path.stat().st_ctime_ns for path in paths)
    while time.time_ns() <= newest + WINDOW_NS:
        time.sleep(0.02)


def settled_file(path: Path, content: bytes) -> Path:
    """A file whose timestamps are well outside the racy window, as data at rest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    files = [
        settled_file(root / f"part{index}.csv", f"row,{index}\n".encode() * (index + 1))
        for index in range(5)
    ]
    settle(*files)
    return root


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the upload's tree actually opens to hash."""
    opened: list[str] = []
    original = tree_module.hash_small_file

    def counting(path: str) -> tuple[bytes, bytes | None]:
        opened.append(path)
        return original(path)

    monkeypatch.setattr(tree_module, "hash_small_file", counting)
    return opened


def run_folder_linking(tmp_path: Path, data: Path) -> Path:
    """A run folder as training makes it: its data/ links to the user's data folder."""
    run = tmp_path / "run"
    (run / "code").mkdir(parents=True)
    (run / "code" / "train.py").write_text("print('hi')\n")
    (run / "data").mkdir()
    (run / "data" / "data").symlink_to(data)
    return run


def test_a_fingerprinted_data_file_is_not_read_again_by_the_upload(
    tmp_path: Path, data: Path, reads: list[str]
) -> None:
    cache = cache_at(tmp_path / "hash-cache.db")
    fingerprint(data, cache=cache)
    cache.close()
    run = run_folder_linking(tmp_path, data)
    files = {f.relative: f for f in hash_tree(run, cache_at(tmp_path / "hash-cache.db"))}
    assert reads == [str(run / "code" / "train.py")]  # only the file fingerprints never saw
    for index in range(5):
        content = (data / f"part{index}.csv").read_bytes()
        assert files[f"data/data/part{index}.csv"].digest == blake3.blake3(content).hexdigest()


def test_files_sent_before_are_known_to_fingerprints_and_the_artifact_store(
    tmp_path: Path, data: Path
) -> None:
    hash_tree(data, cache_at(tmp_path / "hash-cache.db"))
    cache = cache_at(tmp_path / "hash-cache.db")
    fingerprint(data, cache=cache)
    assert cache.stats.files_hashed == 0 and cache.stats.hits == 5
    store = ArtifactStore(tmp_path / "store", hash_cache=cache_at(tmp_path / "hash-cache.db"))
    digest = store.put(data / "part2.csv")
    assert store.hash_cache.stats.hits == 1
    assert store.path(digest).read_bytes() == (data / "part2.csv").read_bytes()


def test_a_racy_file_is_never_trusted_by_any_user(tmp_path: Path, reads: list[str]) -> None:
    """A file rewritten in the same tick keeps its stat; the racy rule makes every user read it."""
    data = tmp_path / "data"
    data.mkdir()
    target = data / "labels.csv"
    target.write_bytes(b"cat\n")
    tick = time.time_ns() + 1_000_000_000  # not older than the check: racy
    os.utime(target, ns=(tick, tick))
    cache = cache_at(tmp_path / "hash-cache.db", trust_ctime=False)
    fingerprint(data, cache=cache)
    target.write_bytes(b"dog\n")  # same size, same mtime: the stat key is unchanged
    os.utime(target, ns=(tick, tick))
    (sent,) = hash_tree(data, cache)
    assert sent.digest == blake3.blake3(b"dog\n").hexdigest()
    assert reads == [str(target)]
    target.write_bytes(b"eel\n")
    os.utime(target, ns=(tick, tick))
    assert file_digest(target, cache) == blake3.blake3(b"eel\n").hexdigest()
    assert fingerprint(data, cache=cache).files["labels.csv"].digest == (
        blake3.blake3(b"eel\n").hexdigest()
    )


def test_a_settled_file_rewritten_with_its_old_stat_is_trusted_by_every_user(
    tmp_path: Path, data: Path
) -> None:
    """The other side of the rule: an old stat vouches for the content, for all three users."""
    cache = cache_at(tmp_path / "hash-cache.db", trust_ctime=False)
    target = data / "part0.csv"
    original = blake3.blake3(target.read_bytes()).hexdigest()
    assert file_digest(target, cache) == original
    target.write_bytes(b"x" * target.stat().st_size)
    os.utime(target, ns=(OLD_NS, OLD_NS))
    assert file_digest(target, cache) == original  # not read: its stat vouches
    assert {f.relative: f.digest for f in hash_tree(data, cache)}["part0.csv"] == original


def test_the_cache_is_one_file_in_the_data_folder(data: Path) -> None:
    from agent.paths import WatchkeeperPaths

    paths = WatchkeeperPaths.from_environment()
    cache = StatCache.open(paths)
    cache.racy_window_ns = WINDOW_NS
    fingerprint(data, cache=cache)
    hash_tree(data, cache)
    ArtifactStore(paths.artifacts).put(data / "part1.csv")
    assert cache.path == paths.data_dir / "hash-cache.db" and cache.path.is_file()
    assert not (paths.data_dir / "stat-cache").exists()
    assert not (paths.data_dir / "sync-digests.db").exists()


def test_the_record_of_a_remote_cache_survives_and_merges_concurrent_writers(
    tmp_path: Path,
) -> None:
    first, second = (os.urandom(32) for _ in range(2))
    one = cache_at(tmp_path / "hash-cache.db")
    other = cache_at(tmp_path / "hash-cache.db")  # another process with the same file
    seen_by_one = one.held_digests("ana@gpu:22:/w/cache")
    seen_by_other = other.held_digests("ana@gpu:22:/w/cache")
    one.add_held_digests("ana@gpu:22:/w/cache", {first}, seen_by_one)
    other.add_held_digests("ana@gpu:22:/w/cache", {first, second}, seen_by_other)
    fresh = cache_at(tmp_path / "hash-cache.db")
    assert fresh.held_digests("ana@gpu:22:/w/cache") == {first, second}
    with sqlite3.connect(tmp_path / "hash-cache.db") as db:
        (packed,) = db.execute("SELECT digests FROM held_digests").fetchone()
    assert len(packed) == 64  # each digest once
    assert fresh.held_digests("ana@other:22:/w/cache") == set()
    fresh.forget_held_digests("ana@gpu:22:/w/cache")
    assert one.held_digests("ana@gpu:22:/w/cache") == set()


def test_many_inodes_are_looked_up_at_once_with_the_same_answers(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "hash-cache.db")
    old = time.time_ns() - 10 * RACY_WINDOW_NS
    stored = [((7, ino, 10, old, old), os.urandom(32)) for ino in range(3000)]
    cache.remember_digests(stored)
    asked = [key for key, _ in stored[::2]] + [(7, 5000 + ino, 10, old, old) for ino in range(99)]
    asked[0] = (7, 0, 11, old, old)  # the size changed: not trusted
    found = cache.cached_digests(asked)  # more than a few batches: the joined lookup
    expected = [None] + [digest for _, digest in stored[::2]][1:] + [None] * 99
    assert found == expected
    assert cache.cached_digests(asked[:3]) == expected[:3]  # the batched lookup agrees
