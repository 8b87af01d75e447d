"""Snapshots that keep their content: `[watch] keep_data`, sharing with training, gc, the agent."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from agent.daemon.ingest import DataTracker
from agent.data.stat_cache import StatCache
from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore, file_digest
from agent.ledger.blobs import blobs_of_snapshot, blobs_of_version
from agent.ledger.gc import stored_blobs
from agent.ledger.queries import versions
from agent.paths import WatchkeeperPaths
from tests.agent.runs.reproducible import cli, make_data_repo, write_csv

HOURS_AGO = 2 * 3600


def paths() -> WatchkeeperPaths:
    return WatchkeeperPaths.from_environment()


def store_digests() -> set[str]:
    return {blob.digest for blob in stored_blobs(paths().artifacts)}


def age_the_store() -> None:
    old = time.time() - HOURS_AGO
    for blob in stored_blobs(paths().artifacts):
        os.utime(blob.path, (old, old))


def write_config(text: str) -> None:
    paths().config.parent.mkdir(parents=True, exist_ok=True)
    paths().config.write_text(text)


def snapshot(root: Path, monkeypatch: pytest.MonkeyPatch, *options: str) -> dict:
    result = cli(root, monkeypatch, "data", "snapshot", "data", "--json", *options)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_snapshot_keeps_content_in_the_store_training_uses_and_each_blob_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    write_config('[watch]\nkeep_data = "always"\n')
    taken = snapshot(root, monkeypatch)
    kept = blobs_of_snapshot(open_ledger(), taken["snapshot_id"])
    stored_after_snapshot = store_digests()

    trained = cli(root, monkeypatch, "train", "churn")

    assert trained.exit_code == 0, trained.output
    assert taken["kept_files"] == 3 and taken["kept_bytes_copied"] > 0 and taken["keep_notes"] == []
    assert set(kept) == {"part0.csv", "part1.csv", "part2.csv"}
    (version,) = versions(open_ledger(), model="churn")
    data_blobs = blobs_of_version(open_ledger(), version["id"], "data")
    assert set(data_blobs.values()) == set(kept.values())  # the same blobs, stored once
    assert store_digests() - stored_after_snapshot == set(
        blobs_of_version(open_ledger(), version["id"], "artifact").values()
    )
    store = ArtifactStore(paths().artifacts)
    for name, digest in kept.items():
        user_file = root / "data" / name
        assert file_digest(store.path(digest)) == digest == file_digest(user_file)
        assert store.path(digest).stat().st_ino != user_file.stat().st_ino  # never a hard link


def test_training_first_then_a_snapshot_copies_nothing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    before = store_digests()

    taken = snapshot(root, monkeypatch, "--keep-data", "always")

    assert taken["kept_files"] == 3 and taken["kept_bytes_copied"] == 0
    assert store_digests() == before


def test_snapshots_keep_nothing_by_default_and_small_respects_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    plain = snapshot(root, monkeypatch)
    write_config('[watch]\nkeep_data = "small"\nkeep_data_limit = 10\n')
    write_csv(root, "part0.csv", [5, 6])

    limited = snapshot(root, monkeypatch)

    assert plain["kept_files"] == 0 and plain["keep_notes"] == []
    assert limited["kept_files"] == 0
    assert "over [watch] keep_data_limit of 10 B" in limited["keep_notes"][0]
    assert store_digests() == set()


def test_a_bad_watch_keep_data_names_the_file_line_and_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    write_config('[watch]\ndata = []\nkeep_data = "smal"\n')

    result = cli(root, monkeypatch, "data", "snapshot", "data")

    assert result.exit_code != 0
    assert f"{paths().config}:3: [watch] keep_data is 'smal'" in result.output
    assert "did you mean 'small'?" in result.output and "Traceback" not in result.output


def test_gc_frees_a_deleted_snapshots_content_only_when_nothing_else_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    write_config('[watch]\nkeep_data = "always"\n')
    first = snapshot(root, monkeypatch)["snapshot_id"]  # kept, though not the newest
    write_csv(root, "part1.csv", [10, 20])
    second = snapshot(root, monkeypatch)["snapshot_id"]
    write_csv(root, "part1.csv", [30, 40])
    write_csv(root, "part2.csv", [10, 20])  # the second's part1.csv content, held here too
    third = snapshot(root, monkeypatch)["snapshot_id"]
    write_csv(root, "part2.csv", [50, 60])
    write_csv(root, "part1.csv", [70, 80])
    snapshot(root, monkeypatch)  # the newest snapshot of data/
    db = open_ledger()
    held = {n: set(blobs_of_snapshot(db, n).values()) for n in (first, second, third)}
    (shared,) = held[second] - held[first]
    assert held[third] - held[first] - held[second] and shared in held[third]
    assert cli(root, monkeypatch, "data", "delete", str(second)).exit_code == 0
    age_the_store()

    still_held = cli(root, monkeypatch, "gc")

    assert still_held.exit_code == 0 and "nothing to free" in still_held.output
    assert held[second] <= store_digests()  # the third still holds its content
    deleted = cli(root, monkeypatch, "data", "delete", str(third))
    assert deleted.exit_code == 0 and f"snapshot {third} deleted" in deleted.output

    freed = cli(root, monkeypatch, "gc")

    assert freed.exit_code == 0 and "data" in freed.output, freed.output
    assert held[first] <= store_digests()  # a kept snapshot's content is never freed
    assert store_digests().isdisjoint((held[second] | held[third]) - held[first])
    for deleted_snapshot in (second, third):  # rows naming freed blobs went before them
        assert set(blobs_of_snapshot(open_ledger(), deleted_snapshot).values()) <= held[first]


def test_a_snapshot_holding_what_a_deleted_version_kept_keeps_it_from_gc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    held = snapshot(root, monkeypatch, "--keep-data", "always")["snapshot_id"]
    write_csv(root, "part0.csv", [7, 7])
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    assert cli(root, monkeypatch, "models", "delete", "churn@1").exit_code == 0
    age_the_store()

    assert cli(root, monkeypatch, "gc").exit_code == 0

    assert set(blobs_of_snapshot(open_ledger(), held).values()) <= store_digests()


def test_the_agents_tracker_keeps_content_as_configured(tmp_path: Path) -> None:
    data = tmp_path / "watched"
    data.mkdir()
    (data / "a.csv").write_text("id,v\n1,2\n")
    db = open_ledger()
    tracker = DataTracker(
        StatCache.open(paths()), keep=("small", 1 << 20), artifacts=paths().artifacts
    )

    outcome = tracker.snapshot(db, data)
    (data / "big.bin").write_bytes(os.urandom(2 << 20))
    over = tracker.snapshot(db, data)

    assert set(blobs_of_snapshot(db, outcome.snapshot_id)) == {"a.csv"}
    assert outcome.keep_notes == () and outcome.event["keep_notes"] == []
    assert blobs_of_snapshot(db, over.snapshot_id) == {}
    assert "over [watch] keep_data_limit" in over.keep_notes[0]
