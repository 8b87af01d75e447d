"""A remote helper that answers with bad sizes, garbage, silence or floods never wedges training.

Each test points a remote's python at a real hostile stand-in on the real sshd. The run must end
within a bound, as `failed` with a one-line reason naming the remote, and the ledger stays whole.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import WatchkeeperError
from agent.runs.training import TrainResult
from tests.faults.conftest import HostileFactory, ledger_is_intact, run_rows
from tests.faults.support import cli_bounded, error_lines, make_project, train_bounded

pytestmark = pytest.mark.ssh

RSS_BOUND_KIB = 400 * 1024  # the flood is 300 MB; reading it all would pass this bound


def assert_failed_with(reason: str) -> None:
    (row,) = run_rows()
    assert row["state"] == "failed", row
    problem = str(row["detail"].get("problem", ""))
    assert reason in problem, problem
    assert "\n" not in problem.strip()
    assert ledger_is_intact()


def test_a_negative_pack_size_fails_the_run_and_the_command_exits(
    hostile_remote: HostileFactory, tmp_path: Path
) -> None:
    hostile = hostile_remote("gpu1")
    hostile.attack("pack", "negative_size")
    root = make_project(tmp_path)
    completed, _ = cli_bounded(root, "train", "churn")
    reason = (
        "remote gpu1: the helper sent a pack header with size -5; expected a non-negative integer"
    )
    assert completed.returncode != 0
    lines = error_lines(completed.stderr)
    assert reason in lines[-1] and lines[-1].startswith("error: "), completed.stderr
    assert "Traceback" not in completed.stderr
    assert_failed_with(reason)


def test_a_stalled_pack_is_retried_then_fails_the_run(
    hostile_remote: HostileFactory, tmp_path: Path
) -> None:
    hostile = hostile_remote("gpu1")
    hostile.attack("pack", "stall")
    root = make_project(tmp_path)
    completed, _ = cli_bounded(root, "train", "churn", seconds=60)
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert "remote gpu1: no data for 2 s" in error_lines(completed.stderr)[-1], completed.stderr
    assert_failed_with("remote gpu1: no data for 2 s")
    assert len(hostile.pids()) == 2  # tried once more, then gave up


PACK_FAULTS = {
    "huge_size": "pack header with size 4611686018427387904; expected a non-negative integer",
    "string_size": "pack header with size '12'; expected a non-negative integer",
    "garbage": "a pack header that is not JSON",
    "non_utf8": "a pack header that is not UTF-8 text",
    "json_list": "a pack header that is a list; expected a JSON object",
    "non_str_name": "pack header with path ['outs', 'model.pkl']; expected a string",
    "empty": "the helper ended the pack stream before its end marker",
    "huge": "a pack header longer than",
}


@pytest.mark.parametrize("action", sorted(PACK_FAULTS))
def test_a_bad_pack_stream_fails_the_run_with_its_reason(
    hostile_remote: HostileFactory, tmp_path: Path, action: str
) -> None:
    hostile = hostile_remote("gpu1")
    hostile.attack("pack", action)
    result = train_bounded(make_project(tmp_path))
    assert isinstance(result, TrainResult), result
    assert result.status == "failed"
    assert result.problem is not None and "remote gpu1: " in result.problem
    assert PACK_FAULTS[action] in result.problem
    assert_failed_with(PACK_FAULTS[action])


def test_a_name_with_a_nul_byte_is_refused_and_noted(
    hostile_remote: HostileFactory, tmp_path: Path
) -> None:
    hostile = hostile_remote("gpu1")
    hostile.attack("pack", "nul_name")
    result = train_bounded(make_project(tmp_path))
    assert isinstance(result, TrainResult), result
    assert result.status == "failed"
    (row,) = run_rows()
    refused = " ".join(row["detail"]["refused_outs"])
    assert "refusing 'outs/model\\x00.pkl'" in refused
    assert "outs missing after training: model.pkl" in str(row["detail"]["problem"])
    assert ledger_is_intact()


POLL_FAULTS = {
    "garbage": "the helper's poll reply is not JSON",
    "non_utf8": "the helper's poll reply is not UTF-8 text",
    "empty": "the helper's poll reply is empty",
    "json_list": "the helper's poll reply is a list; expected a JSON object",
    "bad_state": "the helper's poll reply has state 17; expected one of",
    "huge": "the helper's poll reply is longer than",
    "silent": "remote gpu1: no data for 2 s",
}


@pytest.mark.parametrize("action", sorted(POLL_FAULTS))
def test_a_bad_poll_reply_fails_the_run_with_its_reason(
    hostile_remote: HostileFactory, tmp_path: Path, action: str
) -> None:
    hostile = hostile_remote("gpu1")
    hostile.attack("poll", action)
    result = train_bounded(make_project(tmp_path))
    assert isinstance(result, TrainResult), result
    assert result.status == "failed"
    assert result.problem is not None and POLL_FAULTS[action] in result.problem
    assert "remote gpu1" in result.problem
    assert_failed_with(POLL_FAULTS[action])


PROBE_FAULTS = {
    "garbage": "the helper's probe reply is not JSON",
    "non_utf8": "the helper's probe reply is not UTF-8 text",
    "empty": "the helper's probe reply is empty",
    "json_list": "the helper's probe reply is a list; expected a JSON object",
    "nul_name": "the helper's probe reply has home '/root\\x00x'; expected an absolute path",
    "huge": "the helper's probe reply is longer than",
    "silent": "remote gpu1: no data for 2 s",
}


@pytest.mark.parametrize("action", sorted(PROBE_FAULTS))
def test_remote_test_reports_a_bad_probe_on_one_line_with_bounded_memory(
    hostile_remote: HostileFactory, tmp_path: Path, action: str
) -> None:
    hostile = hostile_remote("gpu1")
    hostile.attack("probe", action)
    completed, peak_kib = cli_bounded(tmp_path, "remote", "test", "gpu1", seconds=60)
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    failures = [line for line in completed.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1 and failures[0].startswith("FAIL python: remote gpu1: ")
    assert PROBE_FAULTS[action] in failures[0], failures
    assert peak_kib < RSS_BOUND_KIB


def test_a_bad_probe_stops_training_before_upload(
    hostile_remote: HostileFactory, tmp_path: Path
) -> None:
    hostile = hostile_remote("gpu1")
    hostile.attack("probe", "json_list")
    result = train_bounded(make_project(tmp_path))
    assert isinstance(result, WatchkeeperError), result
    assert "remote gpu1: the helper's probe reply is a list" in str(result)
    assert_failed_with("remote gpu1: the helper's probe reply is a list")
    assert not (Path(hostile.remote.workdir) / "cache").exists()


UPLOAD_FAULTS = {
    ("plan", "json_list"): "the helper's cache check reply is a list; expected a JSON object",
    ("plan", "silent"): "remote gpu1: no data for 2 s",
    ("receive", "garbage"): "the helper's receive reply is not JSON",
}


@pytest.mark.parametrize(("mode", "action"), sorted(UPLOAD_FAULTS))
def test_a_bad_upload_reply_fails_the_start_with_its_reason(
    hostile_remote: HostileFactory, tmp_path: Path, mode: str, action: str
) -> None:
    hostile = hostile_remote("gpu1")
    hostile.attack(mode, action)
    result = train_bounded(make_project(tmp_path))
    assert isinstance(result, WatchkeeperError), result
    assert UPLOAD_FAULTS[(mode, action)] in str(result)
    assert "\n" not in str(result).strip()
    assert_failed_with(UPLOAD_FAULTS[(mode, action)])
