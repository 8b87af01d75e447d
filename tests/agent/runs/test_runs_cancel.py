"""`watchkeeper runs cancel`: a live local run is stopped and recorded as cancelled."""

from __future__ import annotations

import subprocess
from pathlib import Path

from agent.ledger import open_ledger
from tests.agent.runs.gitrepo import cli_command, cli_env
from tests.agent.runs.processes import group_gone
from tests.agent.runs.test_train import start_waiting_training


def test_runs_cancel_stops_a_live_run_and_records_it_cancelled(tmp_path: Path) -> None:
    root, training, run = start_waiting_training(tmp_path)
    cancel = subprocess.run(
        cli_command("runs", "cancel", run["id"]), cwd=root, capture_output=True, env=cli_env()
    )
    assert cancel.returncode == 0, cancel.stderr
    assert group_gone(run["pid"])
    training.communicate(timeout=60)
    assert training.returncode != 0
    state = open_ledger().execute("SELECT state FROM runs WHERE id = ?", [run["id"]]).fetchone()
    assert state == ("cancelled",)


def test_runs_cancel_refuses_a_run_that_has_ended(tmp_path: Path) -> None:
    root, training, run = start_waiting_training(tmp_path)
    (tmp_path / "release").touch()
    training.communicate(timeout=60)
    again = subprocess.run(
        cli_command("runs", "cancel", run["id"]), cwd=root, capture_output=True, env=cli_env()
    )
    assert again.returncode == 2
    assert b"has already ended (succeeded)" in again.stderr
