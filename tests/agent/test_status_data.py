"""Data deps end to end: fingerprinted at training, linked into the run, and drift in status."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.ledger import open_ledger
from tests.agent.runs.gitrepo import PYTHON, make_repo

DATA_TRAIN = """\
import csv, json, pathlib
rows = list(csv.DictReader(open("data/train.csv")))
print("read", len(rows), "rows", flush=True)
pathlib.Path("model.pkl").write_text(str(len(rows)))
json.dump({"rows": len(rows)}, open("metrics.json", "w"))
"""

DATA_SPEC = f"""\
[models.churn]
train = "{PYTHON} train.py"
deps = ["train.py", "data/"]
outs = ["model.pkl"]
metrics = "metrics.json"
"""


def write_csv(path: Path, rows: int, age_shift: float, cities: list[str], seed: int) -> None:
    generator = random.Random(seed)
    lines = ["age,income,city"]
    for _ in range(rows):
        age = generator.gauss(40, 8) + age_shift
        income = generator.gauss(50_000, 9_000)
        lines.append(f"{age:.2f},{income:.0f},{generator.choice(cities)}")
    path.write_text("\n".join(lines) + "\n")


def cli(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.chdir(root)
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def data_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_repo(
        tmp_path, files={".gitignore": "data/\n", "train.py": DATA_TRAIN}, spec=DATA_SPEC
    )
    (root / "data").mkdir()
    write_csv(root / "data" / "train.csv", 400, 0.0, ["paris", "lyon", "nice"], seed=1)
    (root / "data" / "extra.csv").write_text("a,b\n1,2\n")
    result = cli(root, monkeypatch, "train", "churn")
    assert result.exit_code == 0, result.output
    assert "read 400 rows" in result.output
    return root


def status_reasons(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[dict]]:
    result = cli(root, monkeypatch, "status", "--json")
    report = json.loads(result.output)
    return result.exit_code, report["repos"][0]["models"][0]["reasons"]


def test_a_data_dep_is_fingerprinted_and_recorded(
    data_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [entry] = json.loads(cli(data_repo, monkeypatch, "models", "list", "--json").output)
    assert list(entry["data"]) == ["data"] and len(entry["data"]["data"]) >= 32
    assert list(entry["code"]) == ["train.py"]
    db = open_ledger()
    [version] = list(db.query("SELECT data FROM model_versions"))
    record = json.loads(version["data"])["data"]
    files = {
        row["path"]
        for row in db.query(
            "SELECT path FROM data_snapshot_files WHERE snapshot_id = ?", [record["snapshot_id"]]
        )
    }
    assert files == {"train.csv", "extra.csv"}
    assert status_reasons(data_repo, monkeypatch) == (0, [])


def test_changed_data_names_the_files_and_reports_drift(
    data_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(data_repo / "data" / "train.csv", 400, 25.0, ["paris", "marseille"], seed=2)
    (data_repo / "data" / "extra.csv").unlink()
    (data_repo / "data" / "new.csv").write_text("x\n1\n")
    code, reasons = status_reasons(data_repo, monkeypatch)
    assert code == 1
    [reason] = reasons
    assert reason["kind"] == "data"
    assert "1 added (new.csv)" in reason["message"]
    assert "1 removed (extra.csv)" in reason["message"]
    assert "1 modified (train.csv)" in reason["message"]
    assert set(reason["paths"]) == {"data/new.csv", "data/extra.csv", "data/train.csv"}
    [drift] = reason["drift"]
    assert "train.csv" in drift and "age" in drift and "city" in drift
    assert "income (" not in drift


def test_models_diff_lists_data_files_between_versions(
    data_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (data_repo / "data" / "more.csv").write_text("y\n2\n")
    assert cli(data_repo, monkeypatch, "train", "churn").exit_code == 0
    diff = json.loads(
        cli(data_repo, monkeypatch, "models", "diff", "churn@1", "churn@2", "--json").output
    )
    assert diff["data"]["data"]["added"] == ["more.csv"]
    assert diff["data"]["data"]["removed"] == [] and diff["data"]["data"]["modified"] == []


def test_a_symlink_loop_in_a_data_dep_is_skipped_and_training_goes_on(
    data_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (data_repo / "data" / "loop").symlink_to("loop")
    result = cli(data_repo, monkeypatch, "train", "churn")
    assert result.exit_code == 0, result.output
    assert "read 400 rows" in result.output
    db = open_ledger()
    snapshots = db.execute(
        "SELECT version, json_extract(data, '$.data.snapshot_id') FROM model_versions"
    ).fetchall()
    assert snapshots == [(1, 1), (2, 1)]  # the readable data did not change
    skipped = db.execute("SELECT skipped FROM data_snapshots").fetchall()
    assert skipped == [("[]",)]  # recorded before the loop existed; the same data since
    status = cli(data_repo, monkeypatch, "status")
    assert status.exit_code == 0, status.output
