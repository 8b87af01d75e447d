"""Data snapshots in the ledger: recorded once, loaded back exactly, diffed, with profiles."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from agent.data.fingerprint import StatCache, fingerprint
from agent.data.snapshots import (
    diff_fingerprints,
    load_snapshot,
    record_snapshot,
    snapshot_info,
)
from agent.errors import WatchkeeperError
from agent.ledger import open_ledger


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "raw").mkdir(parents=True)
    (root / "train.csv").write_text("age,city\n31,paris\n45,lyon\n27,nice\n")
    (root / "raw" / "part-0.bin").write_bytes(b"\x00\x01" * 100)
    (root / "raw" / "labels.tsv").write_text("id\tlabel\n1\tcat\n2\tdog\n")
    return root


def fp_of(path: Path):  # type: ignore[no-untyped-def]
    return fingerprint(path, cache=StatCache.in_memory())


def test_record_snapshot_stores_the_source_files_and_profiles(data: Path) -> None:
    db = open_ledger()
    fp = fp_of(data)
    snapshot_id = record_snapshot(db, fp)
    source = db.execute("SELECT path, kind FROM data_sources").fetchall()
    assert source == [(str(data.resolve()), "folder")]
    row = db.execute(
        "SELECT fingerprint, n_files, total_bytes FROM data_snapshots WHERE id = ?", [snapshot_id]
    ).fetchone()
    assert row == (fp.digest, 3, fp.total_bytes)
    files = db.execute(
        "SELECT path, size, digest FROM data_snapshot_files WHERE snapshot_id = ? ORDER BY path",
        [snapshot_id],
    ).fetchall()
    assert files == sorted((e.path, e.size, e.digest) for e in fp.files.values())
    profiles = dict(db.execute("SELECT digest, profile FROM column_profiles").fetchall())
    csv_profile = json.loads(profiles[fp.files["train.csv"].digest])
    assert csv_profile["n_rows"] == 3
    assert [c["name"] for c in csv_profile["columns"]] == ["age", "city"]
    assert csv_profile["columns"][0]["values"] == [31.0, 45.0, 27.0]
    assert fp.files["raw/labels.tsv"].digest in profiles
    assert fp.files["raw/part-0.bin"].digest not in profiles


def test_recording_the_same_fingerprint_twice_gives_the_same_id(data: Path) -> None:
    db = open_ledger()
    first = record_snapshot(db, fp_of(data))
    assert record_snapshot(db, fp_of(data)) == first
    (data / "train.csv").write_text("age,city\n99,rome\n")
    second = record_snapshot(db, fp_of(data))
    assert second != first
    assert db.execute("SELECT count(*) FROM data_sources").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM data_snapshots").fetchone()[0] == 2
    assert db.execute("SELECT count(*) FROM column_profiles").fetchone()[0] == 3


def test_load_snapshot_gives_back_the_fingerprint(data: Path) -> None:
    db = open_ledger()
    fp = fp_of(data)
    loaded = load_snapshot(db, record_snapshot(db, fp))
    assert loaded.digest == fp.digest
    assert loaded.root == fp.root
    assert loaded.kind == "folder"
    assert dict(loaded.files) == dict(fp.files)
    assert list(loaded.files) == list(fp.files)


def test_a_single_file_snapshot(data: Path) -> None:
    db = open_ledger()
    fp = fp_of(data / "train.csv")
    loaded = load_snapshot(db, record_snapshot(db, fp))
    assert loaded.kind == "file"
    assert list(loaded.files) == ["train.csv"]
    assert loaded.digest == fp.files["train.csv"].digest


def test_diff_fingerprints_names_added_removed_and_modified_files(data: Path) -> None:
    db = open_ledger()
    before = load_snapshot(db, record_snapshot(db, fp_of(data)))
    (data / "train.csv").write_text("age,city\n1,x\n")
    (data / "raw" / "part-0.bin").unlink()
    (data / "raw" / "part-1.bin").write_bytes(b"new")
    after = fp_of(data)
    difference = diff_fingerprints(before, after)
    assert difference.added == ["raw/part-1.bin"]
    assert difference.removed == ["raw/part-0.bin"]
    assert difference.modified == ["train.csv"]
    assert difference.changed
    assert not diff_fingerprints(after, fp_of(data)).changed


def test_a_malformed_csv_is_snapshotted_with_its_error_kept(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = open_ledger()
    (data / "broken.csv").write_text("a,b\n1,2\n3\n")
    with caplog.at_level(logging.WARNING):
        fp = fp_of(data)
        record_snapshot(db, fp)
    assert "broken.csv:3: row has 1 fields but the header has 2" in caplog.text
    stored = db.execute(
        "SELECT profile FROM column_profiles WHERE digest = ?", [fp.files["broken.csv"].digest]
    ).fetchone()[0]
    assert "broken.csv:3" in json.loads(stored)["error"]


def test_loading_a_missing_snapshot_is_a_clear_error() -> None:
    with pytest.raises(WatchkeeperError, match="there is no data snapshot 42"):
        load_snapshot(open_ledger(), 42)


def test_a_snapshot_path_escaping_its_folder_is_refused(data: Path) -> None:
    db = open_ledger()
    snapshot_id = record_snapshot(db, fp_of(data))
    db.execute("UPDATE data_snapshot_files SET path = '../../etc/passwd' WHERE path = 'train.csv'")
    db.conn.commit()
    with pytest.raises(WatchkeeperError, match="a path outside its folder"):
        load_snapshot(db, snapshot_id)


def test_skipped_entries_are_stored_with_the_snapshot_and_loaded_back(data: Path) -> None:
    db = open_ledger()
    clean = record_snapshot(db, fp_of(data))
    os.mkfifo(data / "raw" / "feed")
    (data / "latest.csv").symlink_to("missing.csv")
    with_pipe = fp_of(data)
    assert record_snapshot(db, with_pipe) == clean  # the readable data did not change
    (data / "train.csv").write_text("age,city\n99,rome\n")
    changed = record_snapshot(db, fp_of(data))
    assert changed != clean
    stored = json.loads(
        db.execute("SELECT skipped FROM data_snapshots WHERE id = ?", [changed]).fetchone()[0]
    )
    assert stored == [
        {"path": "latest.csv", "reason": "dangling symlink (its target is missing)"},
        {"path": "raw/feed", "reason": "named pipe (FIFO)"},
    ]
    assert load_snapshot(db, changed).skipped == fp_of(data).skipped
    assert snapshot_info(db, changed).skipped == fp_of(data).skipped
    assert load_snapshot(db, clean).skipped == ()
