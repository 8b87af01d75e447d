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


def test_kept_data_is_cloned_in_one_thread_and_edits_of_the_source_do_not_reach_it(
    on_xfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(on_xfs)
    for index in range(EXTRA_FILES):
        (root / "data" / f"extra{index}.bin").write_bytes(os.urandom(64 << 10))
    db = open_ledger()
    paths = WatchkeeperPaths.from_environment()
    snapshot = snapshot_data_dep(db, root / "data", paths).snapshot_id
    store = ArtifactStore(paths.artifacts)
    threads: set[int] = set()
    keep_file = ArtifactStore.keep_file

    def keep_file_noting_its_thread(self: ArtifactStore, *args: Any, **kwargs: Any) -> str:
        threads.add(threading.get_ident())
        return keep_file(self, *args, **kwargs)

    monkeypatch.setattr(ArtifactStore, "keep_file", keep_file_noting_its_thread)
    kept = keep_data_deps(db, store, root, {"data": snapshot}, "always", 0)

    sizes = sum(path.stat().st_size for path in (root / "data").iterdir())
    assert (kept.cloned_bytes, kept.copied_bytes) == (sizes, 0)
    assert threads == {threading.get_ident()}, "clones contend in threads: one is faster"
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
