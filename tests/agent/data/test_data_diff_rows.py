"""`watchkeeper data diff` row by row: kept snapshots, keys, lines, binary files, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.data.row_diff import NotTextError, diff_rows
from agent.errors import WatchkeeperError

OLD_ROWS = "id,city,amount\n1,Oslo,10\n2,Roma,20\n3,Lima,30\n4,Pune,40\n5,Kyiv,50\n"
# 2 removed; 4 changed (amount); 5 changed (city and amount); 6 and 7 added; 1 and 3 the same
NEW_ROWS = "id,city,amount\n1,Oslo,10\n3,Lima,30\n4,Pune,41\n5,Riga,55\n6,Baku,60\n7,Doha,70\n"


def wk(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def kept_snapshot(folder: Path) -> str:
    result = wk("data", "snapshot", str(folder), "--keep-data", "always", "--json")
    assert result.exit_code == 0, result.output
    return str(json.loads(result.output)["snapshot_id"])


def two_kept_snapshots(tmp_path: Path, old: str, new: str, name: str = "sales.csv") -> list[str]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / name).write_text(old)
    first = kept_snapshot(data)
    (data / name).write_text(new)
    second = kept_snapshot(data)
    (data / name).write_text("id,city,amount\n")  # the folder moves on: only the store has them
    return [first, second]


def test_rows_added_removed_and_changed_between_kept_snapshots_by_the_id_column(
    tmp_path: Path,
) -> None:
    first, second = two_kept_snapshots(tmp_path, OLD_ROWS, NEW_ROWS)

    result = wk("data", "diff", first, second)
    as_json = json.loads(wk("data", "diff", first, second, "--json", "--rows", "1").output)

    assert result.exit_code == 1, result.output
    assert "rows     sales.csv: 2 added, 1 removed, 2 changed (rows matched by id)" in (
        result.output
    )
    assert result.output.splitlines()[-5:] == [
        "    + 6,Baku,60",
        "    + 7,Doha,70",
        "    - 2,Roma,20",
        "    ~ id=4: amount 40 → 41",
        "    ~ id=5: city Kyiv → Riga, amount 50 → 55",
    ]
    (rows,) = as_json["rows"]
    assert (rows["added"], rows["removed"], rows["changed"], rows["key"]) == (2, 1, 2, "id")
    assert rows["sample_added"] == ["6,Baku,60"] and rows["sample_removed"] == ["2,Roma,20"]
    assert rows["sample_changed"] == [{"key": "4", "cells": [["amount", "40", "41"]]}]
    assert as_json["rows_not_shown"] == {}


def test_without_a_key_column_whole_lines_are_compared_and_the_sample_is_bounded(
    tmp_path: Path,
) -> None:
    old = "city,amount\n" + "".join(f"c{i},{i}\n" for i in range(50))
    new = "city,amount\n" + "".join(f"c{i},{i}\n" for i in range(10, 60)) + "c11,11\n"
    first, second = two_kept_snapshots(tmp_path, old, new, "plain.csv")

    result = wk("data", "diff", first, second, "--rows", "2")

    assert "rows     plain.csv: 11 added, 10 removed (whole lines compared" in result.output
    assert "    + c50,50\n    + c51,51\n    + … 9 more\n" in result.output
    assert "    - c0,0\n    - c1,1\n    - … 8 more\n" in result.output


def test_a_given_key_that_is_not_a_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    first, second = two_kept_snapshots(tmp_path, OLD_ROWS, NEW_ROWS)

    result = wk("data", "diff", first, second, "--key", "cty")

    assert result.exit_code == 2, result.output
    assert "sales.csv has no column 'cty' to match rows by (its columns: id, city, amount)" in (
        result.output
    )
    assert "did you mean 'city'?" in result.output and "Traceback" not in result.output


def test_a_given_key_with_repeated_values_is_refused_and_a_guessed_one_falls_back(
    tmp_path: Path,
) -> None:
    repeated = NEW_ROWS + "6,Oslo,61\n"
    first, second = two_kept_snapshots(tmp_path, OLD_ROWS, repeated)

    given = wk("data", "diff", first, second, "--key", "id")
    guessed = wk("data", "diff", first, second)

    assert given.exit_code == 2
    assert "sales.csv: column 'id' is not a key: '6' is on more than one row" in given.output
    assert "rows     sales.csv: 5 added, 3 removed (whole lines compared" in guessed.output


def test_a_binary_file_says_its_rows_cannot_be_shown(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "weights.bin").write_bytes(b"\x00\x01" * 100)
    first = kept_snapshot(data)
    (data / "weights.bin").write_bytes(b"\x00\x02" * 100)
    second = kept_snapshot(data)

    result = wk("data", "diff", first, second)

    assert result.exit_code == 1
    assert "  rows     weights.bin is a binary file; rows cannot be shown\n" in result.output


def test_content_not_kept_is_said_in_one_line_with_how_to_keep_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text(OLD_ROWS)
    (data / "b.csv").write_text(OLD_ROWS)
    first = json.loads(wk("data", "snapshot", str(data), "--json").output)["snapshot_id"]
    (data / "a.csv").write_text(NEW_ROWS)
    (data / "b.csv").write_text(NEW_ROWS)

    result = wk("data", "diff", str(first), str(data))

    not_kept = [line for line in result.output.splitlines() if "not kept" in line]
    assert not_kept == [
        f"  rows     not shown for a.csv, b.csv: the content of snapshot {first} ({data}) was "
        "not kept (keep it with [watch] keep_data in config.toml for snapshots, keep_data in "
        "watchkeeper.toml for training)"
    ]


def test_a_kept_snapshot_against_the_folder_as_it_is_now(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "sales.csv").write_text(OLD_ROWS)
    first = kept_snapshot(data)
    (data / "sales.csv").write_text(NEW_ROWS)

    result = wk("data", "diff", first, str(data))

    assert "rows     sales.csv: 2 added, 1 removed, 2 changed (rows matched by id)" in (
        result.output
    )


def test_quoted_cells_with_commas_and_newlines_are_matched_by_key(tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    new = tmp_path / "new.csv"
    old.write_text('id,note\n1,"a, b"\n2,"two\nlines"\n3,x\n')
    new.write_text('id,note\n1,"a, b"\n2,"two\nlines, changed"\n4,y\n')

    found = diff_rows(old, new, "notes.csv")

    assert (found.added, found.removed, found.changed) == (1, 1, 1)
    assert found.sample_removed == ["3,x"] and found.sample_added == ["4,y"]
    assert found.sample_changed[0].cells == [("note", "two\nlines", "two\nlines, changed")]


def test_text_files_are_compared_as_lines_and_binary_ones_refused(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\ntwo\ntwo\n")
    (tmp_path / "b.txt").write_text("two\nthree\n")
    (tmp_path / "c.bin").write_bytes(b"PK\x00\x03")

    found = diff_rows(tmp_path / "a.txt", tmp_path / "b.txt", "notes.txt")

    assert (found.added, found.removed, found.key) == (1, 2, None)
    assert found.sample_removed == ["one", "two"] and found.sample_added == ["three"]
    with pytest.raises(NotTextError, match=r"model\.bin is a binary file"):
        diff_rows(tmp_path / "c.bin", tmp_path / "a.txt", "model.bin")
    with pytest.raises(WatchkeeperError, match="has no column 'nope'"):
        diff_rows(tmp_path / "a.txt", tmp_path / "b.txt", "t.csv", key="nope")
