"""`watchkeeper coding-time` on awkward input: identities, offsets, shallow and broken repos."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.config import UserConfig
from tests.agent.activity.gitrepo import (
    FakeCommit,
    add_raw_commit,
    build_repo,
    workday_commits,
)

MONDAY = 1704067200  # 2024-01-01T00:00:00Z
MAILMAP = "Alice Liddell <alice@example.com> <old@laptop.local>\n"


def run(*arguments: str) -> Result:
    return CliRunner().invoke(main, ["coding-time", "--no-ledger", *arguments])


@pytest.fixture(autouse=True)
def no_global_git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the repos' own git config counts (not the machine's user.email)."""
    empty = tmp_path / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def mapped_repo(tmp_path: Path) -> Path:
    commits = workday_commits("old@laptop.local", MONDAY, 7, per_day=3)
    commits += workday_commits("alice@example.com", MONDAY + 7 * 86400, 7, per_day=3)
    return build_repo(tmp_path / "repo", commits, mailmap=MAILMAP)


def _commits(result: Result) -> int:
    assert result.exit_code == 0, result.output
    return int(json.loads(result.stdout)["events"]["commits"])


def test_author_that_mailmap_maps_to_another_is_found(mapped_repo: Path) -> None:
    old = run("--repo", str(mapped_repo), "--author", "old@laptop.local", "--json")
    assert _commits(old) == 30
    canonical = run("--repo", str(mapped_repo), "--author", "alice@example.com", "--json")
    assert _commits(canonical) == 30


def test_git_user_email_that_mailmap_maps_to_another_is_found(mapped_repo: Path) -> None:
    subprocess.run(
        ["git", "-C", str(mapped_repo), "config", "user.email", "old@laptop.local"], check=True
    )
    result = run("--repo", str(mapped_repo), "--tz", "UTC")
    assert result.exit_code == 0, result.output
    assert "for old@laptop.local, alice@example.com" in result.stdout
    assert "30 commits" in result.stdout


def test_malformed_offset_is_reported_and_placed_in_utc(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", workday_commits("me@example.com", MONDAY, 5))
    for index in range(3):
        add_raw_commit(
            repo, "me@example.com", MONDAY + 86400 * 7 + 9 * 3600 + index * 900, "+51800"
        )
    add_raw_commit(repo, "me@example.com", MONDAY + 86400 * 7 + 11 * 3600, "-0575")
    result = run("--repo", str(repo), "--tz", "UTC", "--json")
    assert result.exit_code == 0, result.output
    assert "warning: 4 commits with a malformed UTC offset (+51800 (3), -0575 (1);" in (
        result.stderr
    )
    checks = json.loads(result.stdout)["input"]
    assert checks["malformed_offsets"] == [
        {"offset": "+51800", "commits": 3},
        {"offset": "-0575", "commits": 1},
    ]
    team = run("--repo", str(repo), "--all-authors", "--json")
    assert team.exit_code == 0, team.output
    assert json.loads(team.stdout)["input"]["malformed_offsets"][0]["commits"] == 3
    # in UTC the four commits fall on 2024-01-08, 09:00-11:00; at +18:00 they would be on
    # the 9th, at 03:00-05:00
    local = run("--repo", str(repo), "--all-authors", "--since", "2024-01-09", "--json")
    assert local.exit_code == 2 and "no commits in the requested range" in local.stderr


def test_watched_repo_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    config = UserConfig.load()
    config.set("watch", "repos", [str(missing)])
    config.save()
    result = run()
    assert result.exit_code == 2
    assert f"none of the watched repos in {config.path} exists ({missing})" in result.stderr
    assert "no identity" not in result.stderr
    repo = build_repo(tmp_path / "repo", workday_commits("me@example.com", MONDAY, 3))
    config.set("watch", "repos", [str(missing), str(repo)])
    config.save()
    result = run("--json")
    assert result.exit_code == 0, result.output
    assert f"watched repo {missing} does not exist; skipped" in result.stderr


def test_repo_without_commits_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    subprocess.run(["git", "init", "-q", str(empty)], check=True)
    result = run("--repo", str(empty), "--author", "me@example.com")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {empty}: no commits yet; commit something first."


def test_shallow_clone_says_from_when(tmp_path: Path) -> None:
    commits = [FakeCommit("me@example.com", MONDAY + day * 86400 + 9 * 3600) for day in range(9)]
    source = build_repo(tmp_path / "source", commits)
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "2", f"file://{source}", str(clone)], check=True
    )
    result = run("--repo", str(clone), "--author", "me@example.com", "--tz", "UTC", "--json")
    assert result.exit_code == 0, result.output
    assert f"{clone} is a shallow clone: its history is cut at 2024-01-08" in result.stderr
    assert json.loads(result.stdout)["input"]["shallow"][0]["cut_at"] == "2024-01-08"


def test_broken_mailmap_line_is_named_and_the_rest_applies(mapped_repo: Path) -> None:
    (mapped_repo / ".mailmap").write_text("Bob bob@example.com\n" + MAILMAP)
    result = run("--repo", str(mapped_repo), "--author", "alice@example.com", "--json")
    assert _commits(result) == 30
    assert f"warning: {mapped_repo}/.mailmap:1: no <email> in 'Bob bob@example.com'" in (
        result.stderr
    )
    errors = json.loads(result.stdout)["input"]["mailmap_errors"]
    assert [(e["line"], e["reason"]) for e in errors] == [(1, "no <email>")]


def test_commits_before_1990_or_in_the_future_are_counted_and_dropped(tmp_path: Path) -> None:
    future = int(time.time()) + 40 * 86400
    commits = workday_commits("me@example.com", MONDAY, 3)
    commits += [FakeCommit("me@example.com", 600000000), FakeCommit("me@example.com", future)]
    repo = build_repo(tmp_path / "repo", commits)
    result = run("--repo", str(repo), "--author", "me@example.com", "--tz", "UTC", "--json")
    assert result.exit_code == 0, result.output
    assert "dropped 2 commits with timestamps before 1990 or in the future" in result.stderr
    report = json.loads(result.stdout)
    assert report["events"]["commits"] == 12
    assert [d["date"] for d in report["days"]][::2] == ["2024-01-01", "2024-01-03"]
    team = run("--repo", str(repo), "--all-authors", "--json")
    assert team.exit_code == 0, team.output
    assert "dropped 2 commits" in team.stderr
    assert json.loads(team.stdout)["authors"][0]["commits"] == 12


def test_author_with_one_commit_in_both_views(tmp_path: Path) -> None:
    commits = workday_commits("busy@example.com", MONDAY, 5)
    commits.append(FakeCommit("once@example.com", MONDAY + 86400 + 10 * 3600))
    repo = build_repo(tmp_path / "repo", commits)
    result = run("--repo", str(repo), "--author", "once@example.com", "--tz", "UTC", "--json")
    assert result.exit_code == 0, result.output
    assert "only one event: the estimate rests almost entirely on the priors" in result.stderr
    assert json.loads(result.stdout)["events"]["commits"] == 1
    team = run("--repo", str(repo), "--all-authors", "--json")
    assert team.exit_code == 0, team.output
    rows = {row["email"]: row for row in json.loads(team.stdout)["authors"]}
    assert rows["once@example.com"]["commits"] == 1


def test_bad_events_line_is_named_by_number(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"ts": 1704100000, "kind": "save"}\n\n{"ts": 1704100060, "kind": "typing"}\n'
    )
    result = run("--events", str(events))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f'error: {events}:3: unknown kind \'typing\'; use "commit" or "save".'
    )


def test_folder_that_is_no_repo_is_named_not_no_identity(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run("--repo", str(plain))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {plain}: not a git repository")


def test_mailmap_warning_comes_before_no_commits_by(mapped_repo: Path) -> None:
    (mapped_repo / ".mailmap").write_text("Alice Liddell alice@example.com old@laptop.local\n")
    result = run("--repo", str(mapped_repo), "--author", "ghost@example.com")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"warning: {mapped_repo}/.mailmap:1: no <email>")
    assert lines[-1].startswith("error: no commits by ghost@example.com")
