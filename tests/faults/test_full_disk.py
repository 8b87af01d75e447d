"""A full disk is reported as a full disk, not as a corrupt ledger, and loses nothing."""

from __future__ import annotations

import errno
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import WatchkeeperError
from agent.ledger import integrity_problem, open_ledger, write_transaction
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.queries import register_repo
from tests.agent.runs.gitrepo import PYTHON, SPEC, make_repo, run_cli
from tests.faults.tmpfs import mounted_tmpfs
from tests.support import ledger_with_clobbered_pages

BIG_MODEL = f"""
[models.big]
train = "{PYTHON} big.py"
deps = ["big.py"]
outs = ["big.bin"]
"""
# Writes twice what the 2 MiB disk holds.
BIG_SCRIPT = "import pathlib\npathlib.Path('big.bin').write_bytes(b'x' * 4_000_000)\n"
DISK_FULL = "is full ("
WHAT_TO_DO = "bytes free); free space and retry."


@pytest.fixture
def small_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """WATCHKEEPER_HOME on a real 2 MiB tmpfs."""
    with mounted_tmpfs("2m") as home:
        monkeypatch.setenv("WATCHKEEPER_HOME", str(home))
        yield home


def _fill(folder: Path) -> Path:
    """Write a file until the disk holding `folder` has no byte left."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def _assert_disk_full_message(result_stderr: str, home: Path) -> None:
    assert f"the disk holding {home}" in result_stderr
    assert DISK_FULL in result_stderr and WHAT_TO_DO in result_stderr
    assert "cannot be read" not in result_stderr and "damaged" not in result_stderr
    assert "Traceback" not in result_stderr


def test_a_full_disk_says_so_and_the_run_fails_with_that_reason(
    tmp_path: Path, small_home: Path
) -> None:
    root = make_repo(tmp_path, files={"big.py": BIG_SCRIPT}, spec=SPEC + BIG_MODEL)
    first = run_cli(root, "train", "churn")
    assert first.returncode == 0, first.stderr

    filled = run_cli(root, "train", "big")
    assert filled.returncode != 0
    _assert_disk_full_message(filled.stderr, small_home)

    # At 100 % even reading the ledger is impossible: SQLite cannot create its WAL index.
    filler = _fill(small_home)
    listed = run_cli(root, "runs", "list")
    assert listed.returncode != 0
    _assert_disk_full_message(listed.stderr, small_home)

    filler.unlink()
    ledger = sqlite3.connect(f"file:{small_home / 'ledger.db'}?mode=ro", uri=True)
    assert ledger.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    ledger.close()

    listed = run_cli(root, "runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    states = {row["model"]: row for row in json.loads(listed.stdout)}
    assert states["churn"]["state"] == "succeeded"
    assert states["big"]["state"] == "failed"
    problem = states["big"]["problem"]
    assert f"the disk holding {small_home / 'runs'}" in problem
    assert "free space and retry" in problem

    models = run_cli(root, "models", "show", "churn", "--json")
    assert models.returncode == 0, models.stderr
    churn = json.loads(models.stdout)
    assert churn["status"] == "succeeded"
    store = ArtifactStore(small_home / "artifacts")
    for digest in churn["artifacts"].values():
        assert store.path(digest).read_text() == "weights lr=0.01"


def test_a_ledger_is_called_damaged_only_when_its_integrity_check_fails(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger_with_clobbered_pages(path, first_page=2, pages=1)  # one table page
    finding = integrity_problem(path)
    assert finding is not None
    with pytest.raises(WatchkeeperError) as raised:
        db = open_ledger(path)
        with write_transaction(db):
            for number in range(200, 400):
                register_repo(db, tmp_path / f"repo-{number}")
    message = str(raised.value)
    assert f"the ledger {path} is damaged" in message and "integrity check:" in message
    assert "is full" not in message
