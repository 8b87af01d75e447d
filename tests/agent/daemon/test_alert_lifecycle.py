"""Alerts from one verdict: one per model and cause, resolved when fixed, kept stale when acked."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.client import AgentClient
from agent.paths import WatchkeeperPaths
from tests.agent.daemon.test_service import (  # noqa: F401 (agent_factory is a fixture)
    EventStream,
    agent_factory,
    count,
    trained_repo,
    watch,
)


def cli(repo: Path, *args: str) -> Any:
    cwd = Path.cwd()
    os.chdir(repo)
    try:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(cwd)


def status_states(repo: Path) -> dict[str, str]:
    report = json.loads(cli(repo, "status", "--json").stdout)
    return {m["model"]: m["state"] for r in report["repos"] for m in r["models"]}


def append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def test_a_trained_repo_is_watched_without_watch_add(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = trained_repo(tmp_path, paths)  # `train` registered it; nothing was added by hand
    agent_factory()
    with AgentClient.connect(paths.socket) as client:
        why = {(w["path"], w["why"]) for w in client.call("watch_list")}
    assert why == {
        (str(repo), "registered repo"),
        (str(repo / "data" / "train.csv"), "data dep of churn"),
    }
    events = EventStream(paths.socket, ["alert"])
    try:
        append(repo / "data" / "train.csv", "55,Rome\n")
        alert = events.next("alert")
        assert alert["model"] == "churn" and alert["cause"] == "data"
    finally:
        events.close()
    listed = cli(repo, "watch", "list", "--json")
    assert {row["why"] for row in json.loads(listed.stdout)} == {
        "registered repo",
        "data dep of churn",
    }


def test_watch_remove_of_a_registered_repo_is_remembered(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = trained_repo(tmp_path, paths)
    assert cli(repo, "watch", "remove", str(repo)).exit_code == 0
    agent = agent_factory()
    assert (repo, "repo") not in agent.watches.roots
    assert (repo / "data" / "train.csv", "data") in agent.watches.roots


def test_one_write_seen_by_three_watches_raises_exactly_one_alert(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = trained_repo(tmp_path, paths)
    watch(paths, repo)
    watch(paths, repo / "data", data=True)
    agent = agent_factory()
    events = EventStream(paths.socket, ["alert"])
    try:
        append(repo / "data" / "train.csv", "55,Rome\n")
        alert = events.next("alert")
        # The drift check runs after every quick check of this change: then all have spoken.
        events.next("alert", id=alert["id"], updated=True)
        assert agent.worker.wait_idle(15)
        assert count(paths, "SELECT COUNT(*) FROM alerts") == 1
    finally:
        events.close()


def test_a_restart_does_not_duplicate_an_open_alert(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = trained_repo(tmp_path, paths)
    first = agent_factory()
    events = EventStream(paths.socket, ["alert"])
    try:
        append(repo / "data" / "train.csv", "55,Rome\n")
        events.next("alert")
    finally:
        events.close()
    first.stop()
    second = agent_factory()
    assert second.worker.wait_idle(20) and second.last_rescan is not None
    assert count(paths, "SELECT COUNT(*) FROM alerts") == 1
    assert count(paths, "SELECT COUNT(*) FROM alerts WHERE resolved_at IS NULL") == 1


def test_acknowledging_hides_the_alert_but_the_model_stays_stale(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = trained_repo(tmp_path, paths)
    agent_factory()
    events = EventStream(paths.socket, ["alert"])
    try:
        append(repo / "data" / "train.csv", "55,Rome\n")
        alert = events.next("alert")
    finally:
        events.close()
    acked = cli(repo, "alerts", "ack", str(alert["id"]))
    assert acked.exit_code == 0, acked.output
    assert cli(repo, "alerts").stdout.strip() == "no open alerts"
    assert status_states(repo) == {"churn": "stale"}
    result = cli(repo, "status")
    assert result.exit_code == 1 and "stale churn v1" in result.stdout
    [listed] = json.loads(cli(repo, "alerts", "--all", "--json").stdout)
    assert listed["state"] == "acknowledged"


def test_reverting_the_change_resolves_the_alert(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = trained_repo(tmp_path, paths)
    agent_factory()
    data = repo / "data" / "train.csv"
    original = data.read_text()
    events = EventStream(paths.socket, ["alert"])
    try:
        data.write_text(original + "55,Rome\n")
        alert = events.next("alert")
        data.write_text(original)
        resolved = events.next("alert", id=alert["id"], state="resolved")
    finally:
        events.close()
    assert resolved["resolution"] == "change reverted"
    assert resolved["message"] == alert["message"]
    assert status_states(repo) == {"churn": "fresh"}


def test_a_new_version_resolves_the_alert_and_the_verdict_follows(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = trained_repo(tmp_path, paths)
    agent_factory()
    events = EventStream(paths.socket, ["alert", "run_state", "verdicts"])
    try:
        append(repo / "data" / "train.csv", "55,Rome\n")
        alert = events.next("alert")
        with AgentClient.connect(paths.socket) as client:
            run = client.call("train", model="churn", repo=str(repo))["run"]
        events.next("run_state", run=run, state="succeeded", timeout=60)
        resolved = events.next("alert", id=alert["id"], state="resolved", timeout=30)
    finally:
        events.close()
    assert resolved["resolution"] == "v2 trained (fresh)"
    assert status_states(repo) == {"churn": "fresh"}
    with AgentClient.connect(paths.socket) as client:
        [verdict] = client.call("verdicts")
    assert (verdict["verdict"], verdict["version"]) == ("fresh", 2)


def test_ack_all_acknowledges_every_open_alert(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = trained_repo(tmp_path, paths)
    agent_factory()
    events = EventStream(paths.socket, ["alert"])
    try:
        append(repo / "data" / "train.csv", "55,Rome\n")
        events.next("alert")
        (repo / "train.py").write_text((repo / "train.py").read_text() + "# tuned\n")
        events.next("alert", cause="code")
    finally:
        events.close()
    result = cli(repo, "alerts", "ack", "--all")
    assert result.exit_code == 0 and result.stdout.count("acknowledged alert") == 2
    assert count(paths, "SELECT COUNT(*) FROM alerts WHERE acknowledged_at IS NULL") == 0
    with pytest.raises(SystemExit):
        main(["alerts", "ack"], standalone_mode=True)


def test_a_fifo_in_a_data_folder_is_one_watch_alert_and_the_rest_is_still_judged(
    tmp_path: Path,
    paths: WatchkeeperPaths,
    agent_factory: Any,  # noqa: F811
) -> None:
    repo = trained_repo(tmp_path, paths)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x\n1\n")
    watch(paths, data, data=True)
    agent_factory()
    events = EventStream(paths.socket, ["alert"])
    try:
        os.mkfifo(data / "pipe")
        (data / "link").symlink_to("/etc/passwd")
        alert = events.next("alert", kind="watch")
        assert "pipe" in alert["message"] and alert["cause"] == f"skipped:{data}"
        with AgentClient.connect(paths.socket) as client:
            [row] = [w for w in client.call("watch_list") if w["path"] == str(data)]
        assert any("pipe" in entry for entry in row["skipped"])
        # The folder is not blinded: a real change beside the pipe is still seen.
        append(repo / "data" / "train.csv", "55,Rome\n")
        assert events.next("alert", cause="data")["model"] == "churn"
        (data / "pipe").unlink()
        (data / "link").unlink()
        resolved = events.next("alert", id=alert["id"], state="resolved")
        assert resolved["resolution"] == "nothing is skipped any more"
    finally:
        events.close()
