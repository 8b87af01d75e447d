"""Keeping data and reproducing on a real XFS with reflinks: the blobs are clones, made in one
thread, and a later edit of the user's files never reaches them."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.data.deps import snapshot_data_dep
from agent.data.hashing import stat_key
from agent.data.stat_cache import StatCache
from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore, file_digest
from agent.paths import WatchkeeperPaths
from agent.runs.data_cache import keep_data_deps
from tests.agent.runs.gitrepo import run_cli
from tests.agent.runs.reproducible import make_data_repo, reproducible_spec
from tests.faults.tmpfs import mounted_xfs

EXTRA_FILES = 40


@pytest.fixture
def on_xfs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on a real XFS with reflinks, holding WATCHKEEPER_HOME (home/)."""
    with mounted_xfs() as folder:
        monkeypatch.setenv("WATCHKEEPER_HOME", str(folder / "home"))
        yield folder


def test_kept_data_is_cloned_without_threads_and_edits_of_the_source_do_not_reach_it(
    on_xfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(on_xfs)
    for index in range(EXTRA_FILES):
        (root / "data" / f"extra{index}.bin").write_bytes(os.urandom(64 << 10))
    db = open_ledger()
    paths = WatchkeeperPaths.from_environment()
    snapshot = snapshot_data_dep(db, root / "data", paths).snapshot_id
    hash_cache = StatCache.open(paths)
    hash_cache.racy_window_ns = 0  # the files just written vouched for at once, as if settled
    store = ArtifactStore(paths.artifacts, hash_cache)
    threads: list[int] = []
    keep_file = ArtifactStore.keep_file

    def keep_file_noting_its_thread(self: ArtifactStore, *args: Any, **kwargs: Any) -> str:
        threads.append(threading.get_ident())
        return keep_file(self, *args, **kwargs)

    monkeypatch.setattr(ArtifactStore, "keep_file", keep_file_noting_its_thread)
    kept = keep_data_deps(db, store, root, {"data": snapshot}, "always", 0)

    sizes = sum(path.stat().st_size for path in (root / "data").iterdir())
    assert (kept.cloned_bytes, kept.copied_bytes) == (sizes, 0)
    # The first file by keep_file, which finds that clones work; the vouched rest in C.
    assert threads == [threading.get_ident()], "clones contend in threads; Python costs more"
    edited = root / "data" / "extra0.bin"
    before = {blob.digest for blob in kept.blobs if blob.path.endswith("extra0.bin")}
    with edited.open("r+b") as handle:  # in place: the clone's shared blocks must be copied
        handle.write(b"\0" * 4096)
    for blob in kept.blobs:
        assert file_digest(store.path(blob.digest)) == blob.digest, blob.path
    assert file_digest(edited) not in before


def test_a_version_kept_by_clones_reproduces_exactly_after_its_data_was_edited(
    on_xfs: Path,
) -> None:
    root = make_data_repo(on_xfs, reproducible_spec('keep_data = "always"\n'))
    assert run_cli(root, "train", "churn").returncode == 0
    part = root / "data" / "part0.csv"
    with part.open("r+") as handle:  # the user's file edited in place after it was kept
        handle.write("x,y\n0,9")

    reproduced = run_cli(root, "reproduce", "churn@1", timeout=120)

    assert reproduced.returncode == 0, reproduced.stderr
    assert "reproduced exactly" in reproduced.stdout
    assert part.read_text().startswith("x,y\n0,9"), "the user's file is left as they made it"


def test_clone_vouched_takes_only_files_whose_stat_is_the_vouched_one(on_xfs: Path) -> None:
    folder = on_xfs / "data"
    folder.mkdir()
    names = ["vouched.bin", "unvouched.bin", "changed.bin", "stored.bin"]
    for name in names:
        (folder / name).write_bytes(os.urandom(256 << 10))
    sources = {name: folder / name for name in names}
    digests = {name: file_digest(path) for name, path in sources.items()}
    keys = {name: stat_key(path.stat()) for name, path in sources.items()}
    store = ArtifactStore(on_xfs / "store")
    store.put(sources["stored.bin"])
    os.utime(store.path(digests["stored.bin"]), (1, 1))
    with sources["changed.bin"].open("r+b") as handle:  # after its stat was vouched for
        handle.write(b"\0" * 4096)

    outcomes = store.clone_vouched(
        [
            (str(sources[name]), digests[name], None if name == "unvouched.bin" else keys[name])
            for name in names
        ]
    )

    assert outcomes == ["cloned", None, None, "present"]
    assert file_digest(store.path(digests["vouched.bin"])) == digests["vouched.bin"]
    assert not store.has(digests["unvouched.bin"]) and not store.has(digests["changed.bin"])
    assert store.path(digests["stored.bin"]).stat().st_mtime > 1  # claimed: gc keeps it
    blobs = {p for p in (on_xfs / "store").glob("*/*") if not p.name.startswith(".")}
    assert blobs == {store.path(digests[name]) for name in ("vouched.bin", "stored.bin")}
