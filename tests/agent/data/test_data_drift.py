"""Drift of CSV files column by column, and strict CSV reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.data.drift import (
    column_kind,
    drift_against_snapshot,
    drift_between,
    drift_between_profiles,
)
from agent.data.fingerprint import StatCache, fingerprint
from agent.data.snapshots import record_snapshot
from agent.data.tabular import SAMPLE_ROWS, profile_csv, sample_size
from agent.errors import WatchkeeperError
from agent.ledger import open_ledger
from tests.agent.data.tables import customers, write_table


def test_same_distribution_resampled_does_not_drift_on_large_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    reference = profile_csv(write_table(tmp_path / "ref.csv", customers(rng, 5000)))
    current = profile_csv(write_table(tmp_path / "cur.csv", customers(rng, 5000)))
    report = drift_between_profiles(reference, current, "cur.csv")
    assert [c.drifted for c in report.columns] == [False] * 4, report.summary()
    assert all(c.statistic < 0.05 for c in report.columns)  # distances far below 0.1
    assert report.drifted_share == 0.0
    assert not report.dataset_drift
    assert report.summary() == "0/4 columns drifted"


def test_same_distribution_resampled_rarely_drifts_on_small_samples(tmp_path: Path) -> None:
    """p < 0.05 tests flag about 5% of columns of resampled data, and whole datasets rarely."""
    rng = np.random.default_rng(8)
    reference = profile_csv(write_table(tmp_path / "ref.csv", customers(rng, 500)))
    column_flags, dataset_flags, trials = 0, 0, 40
    for _ in range(trials):
        current = profile_csv(write_table(tmp_path / "cur.csv", customers(rng, 500)))
        report = drift_between_profiles(reference, current, "cur.csv")
        assert {c.test for c in report.columns} == {"ks", "chisquare"}
        column_flags += sum(c.drifted for c in report.columns)
        dataset_flags += report.dataset_drift
    assert column_flags / (4 * trials) <= 0.12
    assert dataset_flags / trials <= 0.1


def test_small_samples_use_ks_and_chi_square(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    reference = profile_csv(write_table(tmp_path / "ref.csv", customers(rng, 400)))
    shifted = customers(rng, 400, age_shift=8.0, city_p=[0.2, 0.3, 0.5])
    current = profile_csv(write_table(tmp_path / "cur.csv", shifted))
    report = drift_between_profiles(reference, current, "cur.csv")
    by_name = {c.column: c for c in report.columns}
    assert (by_name["age"].kind, by_name["age"].test) == ("numeric", "ks")
    assert by_name["age"].drifted and by_name["age"].statistic < 0.05
    assert by_name["age"].threshold == 0.05
    assert (by_name["city"].kind, by_name["city"].test) == ("categorical", "chisquare")
    assert by_name["city"].drifted
    assert (by_name["plan"].kind, by_name["plan"].test) == ("categorical", "chisquare")
    assert not by_name["income"].drifted and not by_name["plan"].drifted
    assert report.drifted_share == 0.5
    assert report.dataset_drift
    assert report.summary().startswith("2/4 columns drifted: age (KS p=")
    assert "city (chi2 p=" in report.summary()
    assert report.summary().endswith("(dataset drift)")


def test_large_samples_use_wasserstein_and_jensen_shannon(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    reference = profile_csv(write_table(tmp_path / "ref.csv", customers(rng, 4000)))
    shifted = customers(rng, 4000, age_shift=3.0, city_p=[0.3, 0.3, 0.4])
    current = profile_csv(write_table(tmp_path / "cur.csv", shifted))
    report = drift_between_profiles(reference, current, "cur.csv")
    by_name = {c.column: c for c in report.columns}
    assert by_name["age"].test == "wasserstein"
    assert by_name["age"].statistic == pytest.approx(0.3, abs=0.06)  # a 3-unit shift over sd 10
    assert by_name["age"].drifted and by_name["age"].threshold == 0.1
    assert by_name["city"].test == "jensenshannon" and by_name["city"].drifted
    assert by_name["plan"].test == "jensenshannon" and not by_name["plan"].drifted
    assert by_name["income"].test == "wasserstein" and not by_name["income"].drifted


def test_small_shift_below_the_distance_threshold_is_not_drift(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    reference = profile_csv(write_table(tmp_path / "ref.csv", customers(rng, 4000)))
    current = profile_csv(write_table(tmp_path / "cur.csv", customers(rng, 4000, age_shift=0.3)))
    age = {c.column: c for c in drift_between_profiles(reference, current, "c").columns}["age"]
    assert age.statistic < 0.1 and not age.drifted


def test_psi_on_request(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    reference = profile_csv(write_table(tmp_path / "ref.csv", customers(rng, 3000)))
    same = profile_csv(write_table(tmp_path / "same.csv", customers(rng, 3000)))
    shifted = profile_csv(write_table(tmp_path / "shift.csv", customers(rng, 3000, age_shift=6.0)))
    quiet = drift_between_profiles(reference, same, "same.csv", method="psi")
    loud = drift_between_profiles(reference, shifted, "shift.csv", method="psi")
    assert {c.test for c in quiet.columns} == {"psi"}
    assert not any(c.drifted for c in quiet.columns)
    age = {c.column: c for c in loud.columns}["age"]
    assert age.drifted and age.statistic >= 0.1 and age.threshold == 0.1
    with pytest.raises(WatchkeeperError, match="unknown drift method"):
        drift_between_profiles(reference, same, "x", method="magic")


def test_removed_added_and_retyped_columns_count_as_drift(tmp_path: Path) -> None:
    reference = profile_csv(
        write_table(tmp_path / "ref.csv", {"a": list(range(20)), "b": list(range(20))})
    )
    current = profile_csv(
        write_table(tmp_path / "cur.csv", {"a": ["x"] * 20, "c": list(range(20))})
    )
    report = drift_between_profiles(reference, current, "cur.csv")
    tests = {c.column: c.test for c in report.columns}
    assert tests == {"a": "type", "b": "missing", "c": "added"}
    assert report.drifted_share == 1.0


def test_column_kinds_follow_the_five_unique_values_rule(tmp_path: Path) -> None:
    columns = {"five": [1, 2, 3, 4, 5, 1], "six": [1, 2, 3, 4, 5, 6], "s": ["a"] * 6}
    profile = profile_csv(write_table(tmp_path / "t.csv", columns))
    kinds = {c.name: column_kind(c) for c in profile.columns}
    assert kinds == {"five": "categorical", "six": "numeric", "s": "categorical"}


def test_missing_values_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("x,y\n1,a\n,b\nNA,\n2.5,c\n")
    profile = profile_csv(path)
    assert profile.column("x") is not None
    assert profile.column("x").values == [1.0, None, None, 2.5]  # type: ignore[union-attr]
    assert profile.column("y").values == ["a", "b", None, "c"]  # type: ignore[union-attr]


def test_the_reference_sample_is_bounded(tmp_path: Path) -> None:
    n = SAMPLE_ROWS + 2500
    path = write_table(tmp_path / "big.csv", {"i": list(range(n))})
    profile = profile_csv(path)
    assert profile.n_rows == n
    values = profile.columns[0].values
    assert len(values) == SAMPLE_ROWS
    assert max(values) > SAMPLE_ROWS  # rows after the first 10,000 get their chance
    assert profile_csv(path).columns[0].values == values  # reproducible


def test_a_ragged_row_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('a,b\n1,2\n"x, y",3\n4,5,6\n')
    with pytest.raises(
        WatchkeeperError, match=r"bad\.csv:4: row has 3 fields but the header has 2"
    ):
        profile_csv(path)


def test_a_quoted_field_spanning_lines_keeps_line_numbers_right(tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    path.write_text('a,b\n"line one\nline two",2\n3\n')
    with pytest.raises(WatchkeeperError, match=r"multi\.csv:4: row has 1 fields"):
        profile_csv(path)


def test_text_that_is_not_utf8_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,city\nana,lyon\nzoé,orléans\n".encode("latin-1"))
    with pytest.raises(WatchkeeperError, match=r"latin1\.csv:3: not UTF-8"):
        profile_csv(path)


def test_an_unterminated_quote_is_named(tmp_path: Path) -> None:
    path = tmp_path / "quote.csv"
    path.write_text('a,b\n1,"open\n')
    with pytest.raises(WatchkeeperError, match=r"quote\.csv:2: malformed CSV"):
        profile_csv(path)


def test_tsv_files_are_read_with_tabs(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("a\tb\n1\tx,y\n")
    profile = profile_csv(path)
    assert [c.name for c in profile.columns] == ["a", "b"]
    assert profile.columns[1].values == ["x,y"]


def test_drift_against_a_snapshot_after_the_file_changed(tmp_path: Path) -> None:
    db = open_ledger()
    rng = np.random.default_rng(5)
    data = tmp_path / "data"
    data.mkdir()
    write_table(data / "train.csv", customers(rng, 600))
    write_table(data / "stable.csv", customers(rng, 50))
    (data / "readme.txt").write_text("notes\n")
    snapshot_id = record_snapshot(db, fingerprint(data, cache=StatCache.in_memory()))
    reference_digest = fingerprint(data / "train.csv", cache=StatCache.in_memory()).digest
    # The training file is overwritten with shifted data: only its stored profile remains.
    write_table(data / "train.csv", customers(rng, 600, age_shift=10.0))
    (data / "readme.txt").write_text("other notes\n")
    reports = drift_against_snapshot(db, snapshot_id, data)
    assert [r.path for r in reports] == ["train.csv"]
    assert {c.column for c in reports[0].columns if c.drifted} == {"age"}
    assert reports[0].summary().startswith("1/4 columns drifted: age (KS p=")
    direct = drift_between(db, reference_digest, data / "train.csv")
    assert direct.columns == reports[0].columns


def test_drift_against_a_single_file_snapshot_resampled_is_quiet(tmp_path: Path) -> None:
    db = open_ledger()
    rng = np.random.default_rng(6)
    data = write_table(tmp_path / "train.csv", customers(rng, 2000))
    snapshot_id = record_snapshot(db, fingerprint(data, cache=StatCache.in_memory()))
    write_table(data, customers(rng, 2000))
    (report,) = drift_against_snapshot(db, snapshot_id, data)
    assert report.path == "train.csv"
    assert not any(c.drifted for c in report.columns), report.summary()


def test_drift_without_a_reference_profile_is_a_clear_error(tmp_path: Path) -> None:
    db = open_ledger()
    path = write_table(tmp_path / "x.csv", {"a": [1, 2, 3]})
    with pytest.raises(WatchkeeperError, match="no column profile for reference data abc"):
        drift_between(db, "abc" * 20, path)


def test_wide_tables_keep_fewer_rows_but_never_under_a_thousand() -> None:
    assert sample_size(4) == SAMPLE_ROWS
    assert sample_size(100) == SAMPLE_ROWS
    assert sample_size(400) == 2500
    assert sample_size(5000) == 1000
