"""`watchkeeper data snapshot | diff | drift` through the real CLI, ledger and training runs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.ledger import open_ledger
from tests.agent.data.tables import customers, write_table

TRAIN_SCRIPT = textwrap.dedent(
    """\
    import json, pathlib
    pathlib.Path("model.pkl").write_text("weights")
    json.dump({"auc": 0.9}, open("metrics.json", "w"))
    """
)
SPEC = textwrap.dedent(
    f"""\
    [models.churn]
    train = "{shlex.quote(sys.executable)} train.py"
    deps = ["train.py", "data/"]
    outs = ["model.pkl"]
    metrics = "metrics.json"
    """
)


def wk(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real git repo whose model trains on data/customers.csv, trained once (version 1)."""
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text(TRAIN_SCRIPT)
    (root / "watchkeeper.toml").write_text(SPEC)
    (root / ".gitignore").write_text("data/\n")  # ignored deps are data deps
    write_table(root / "data" / "customers.csv", customers(np.random.default_rng(11), 800))
    (root / "data" / "notes.txt").write_text("collected in May\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "-c", "user.email=d@example.com", "-c", "user.name=D", "add", "-A")
    git(root, "-c", "user.email=d@example.com", "-c", "user.name=D", "commit", "-qm", "start")
    monkeypatch.chdir(root)
    result = wk("train", "churn")
    assert result.exit_code == 0, result.output
    return root


def test_snapshot_records_once_and_reports_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x,y\n1,2\n")
    (data / "b.bin").write_bytes(b"\x00" * 10)
    first = wk("data", "snapshot", str(data))
    assert first.exit_code == 0, first.output
    assert f"snapshot 1 recorded: {data} (folder, 2 files, 18 B)" in first.output
    assert "read 2 files (18 B); 0 unchanged" in first.output
    again = wk("data", "snapshot", str(data), "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.output)
    assert report["snapshot_id"] == 1 and report["new"] is False
    assert report["n_files"] == 2 and report["kind"] == "folder"
    # Both files were written within the racy window of the first check: read again, once.
    assert report["files_read"] == 2
    assert report["source"] == str(data.resolve())
    assert len(report["fingerprint"]) == 64


def test_snapshot_warns_about_a_malformed_csv(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4,5\n")
    result = wk("data", "snapshot", str(bad))
    assert result.exit_code == 0, result.output
    assert f"warning: no column profile: {bad}:3: row has 3 fields" in result.output


def test_snapshot_of_a_missing_path_is_an_error(tmp_path: Path) -> None:
    result = wk("data", "snapshot", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert "error: " in result.output and "nowhere: no such file or folder" in result.output


def test_snapshot_skips_a_link_leaving_the_folder_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x\n1\n")
    (data / "passwd").symlink_to("/etc/passwd")
    result = wk("data", "snapshot", str(data))
    assert result.exit_code == 0, result.output
    assert "(folder, 1 file, 4 B)" in result.output
    warnings = [line.strip() for line in result.output.splitlines() if "skipped" in line]
    assert warnings == [
        f"warning: skipped {data / 'passwd'}: symlink leading outside the data folder "
        "(to /etc/passwd)"
    ]


@pytest.mark.timeout(30)
def test_snapshot_warns_once_per_skipped_entry_up_to_a_cap(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x\n1\n")
    for index in range(13):
        os.mkfifo(data / f"pipe{index:02d}")
    result = wk("data", "snapshot", str(data))
    assert result.exit_code == 0, result.output
    warnings = [line.strip() for line in result.output.splitlines() if "warning:" in line]
    assert warnings[:10] == [
        f"warning: skipped {data / f'pipe{index:02d}'}: named pipe (FIFO)" for index in range(10)
    ]
    assert warnings[10:] == [
        "warning: and 3 more skipped entries (`watchkeeper data snapshot --json` lists them all)"
    ]
    report = json.loads(wk("data", "snapshot", str(data), "--json").output)
    assert len(report["skipped"]) == 13 and report["new"] is False


def test_diff_of_paths_and_snapshots(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    write_table(data / "people.csv", customers(rng, 300))
    (data / "old.txt").write_text("old\n")
    assert wk("data", "snapshot", str(data)).exit_code == 0
    same = wk("data", "diff", "1", str(data))
    assert same.exit_code == 0, same.output
    assert "same data" in same.output
    write_table(data / "people.csv", customers(rng, 300, age_shift=9.0))
    (data / "old.txt").unlink()
    (data / "new.txt").write_text("new\n")
    changed = wk("data", "diff", "1", str(data))
    assert changed.exit_code == 1, changed.output
    lines = changed.output.splitlines()
    assert "  added    new.txt" in lines
    assert "  removed  old.txt" in lines
    assert "  modified people.csv" in lines
    assert any(
        line.startswith("  drift    people.csv: 1/4 columns drifted: age (KS p=") for line in lines
    )
    as_json = json.loads(wk("data", "diff", "1", str(data), "--json").output)
    assert as_json["a"]["snapshot_id"] == 1 and as_json["b"]["snapshot_id"] is None
    assert as_json["modified"] == ["people.csv"]
    assert [c["column"] for c in as_json["drift"][0]["columns"] if c["drifted"]] == ["age"]


def test_diff_of_an_unknown_snapshot_is_an_error() -> None:
    result = wk("data", "diff", "7", "8")
    assert result.exit_code == 2
    assert "error: there is no data snapshot 7" in result.output


def test_diff_of_two_single_csv_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    a = write_table(tmp_path / "jan.csv", customers(rng, 2000))
    b = write_table(tmp_path / "feb.csv", customers(rng, 2000, city_p=[0.1, 0.1, 0.8]))
    result = wk("data", "diff", str(a), str(b))
    assert result.exit_code == 1
    assert "jan.csv -> feb.csv" in result.output
    assert "feb.csv: 1/4 columns drifted: city (JS " in result.output


def test_drift_against_the_model_version_that_trained_on_the_data(repo: Path) -> None:
    db = open_ledger()
    (data_json,) = [json.loads(row[0]) for row in db.execute("SELECT data FROM model_versions")]
    assert set(data_json) == {"data/"} or set(data_json) == {"data"}
    quiet = wk("data", "drift", "data", "--against", "churn")
    assert quiet.exit_code == 0, quiet.output
    assert "no CSV file changed since that snapshot" in quiet.output
    # New data arrives: ages shift, the file is overwritten in place.
    shifted = customers(np.random.default_rng(12), 800, age_shift=12.0)
    write_table(repo / "data" / "customers.csv", shifted)
    loud = wk("data", "drift", "data/customers.csv", "--against", "churn@1")
    assert loud.exit_code == 0, loud.output  # one column of four: no dataset drift
    assert "customers.csv: 1/4 columns drifted: age (KS p=" in loud.output
    assert "DRIFT" in loud.output and "chisquare" in loud.output
    report = json.loads(wk("data", "drift", "data", "--against", "churn", "--json").output)
    assert report["model"] == "churn" and report["version"] == 1
    (file_report,) = report["reports"]
    assert file_report["path"] == "customers.csv"
    assert {c["column"]: c["drifted"] for c in file_report["columns"]} == {
        "age": True,
        "income": False,
        "city": False,
        "plan": False,
    }
    psi = json.loads(wk("data", "drift", "data", "--against", "churn", "--json", "--psi").output)
    assert {c["test"] for c in psi["reports"][0]["columns"]} == {"psi"}


def test_drift_exit_code_is_one_on_dataset_drift(repo: Path, tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    rng = np.random.default_rng(13)
    write_table(batch / "customers.csv", customers(rng, 800, age_shift=12, city_p=[0.1, 0.1, 0.8]))
    result = wk("data", "drift", str(batch / "customers.csv"), "--against", "churn")
    assert result.exit_code == 1, result.output
    assert "2/4 columns drifted" in result.output and "(dataset drift)" in result.output


def test_drift_names_a_malformed_current_file(repo: Path) -> None:
    (repo / "data" / "customers.csv").write_text("age,income,city,plan\n30,1,paris,1\n31,2\n")
    result = wk("data", "drift", "data", "--against", "churn")
    assert result.exit_code == 2
    assert "customers.csv:3: row has 2 fields but the header has 4" in result.output


def test_drift_against_an_unknown_model_lists_the_known_ones(repo: Path) -> None:
    result = wk("data", "drift", "data", "--against", "churm")
    assert result.exit_code == 2
    assert "no model named 'churm'" in result.output and "churn" in result.output


def test_drift_of_a_path_unrelated_to_the_model_is_refused(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.csv").write_text("q\n1\n")
    (repo / "data" / "second.csv").write_text("q\n1\n")
    assert wk("train", "churn").exit_code == 0
    result = wk("data", "drift", str(tmp_path / "elsewhere.csv"), "--against", "churn")
    assert result.exit_code == 2
    assert "cannot tell which training file elsewhere.csv should be compared with" in result.output
