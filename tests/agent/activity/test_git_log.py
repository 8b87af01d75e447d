"""Reading commits from real git repositories built with fast-import."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from agent.activity.git_log import read_commits
from agent.activity.identities import default_identities
from agent.config import UserConfig
from agent.errors import WatchkeeperError
from tests.agent.activity.gitrepo import FakeCommit, build_repo, workday_commits

MONDAY = 1704067200  # 2024-01-01T00:00:00Z


def test_reads_every_field_of_every_commit(tmp_path: Path) -> None:
    commits = workday_commits("alice@example.com", MONDAY, 14, tz="+0130")
    commits += workday_commits("bob@example.com", MONDAY, 7, per_day=2, tz="-0800")
    repo = build_repo(tmp_path / "repo", commits)
    table = read_commits([repo])
    assert len(table) == len(commits)
    assert sorted(table.emails) == ["alice@example.com", "bob@example.com"]
    alice = table.author_code == table.emails.index("alice@example.com")
    assert sorted(table.author_time[alice].tolist()) == sorted(
        c.time for c in commits if c.email.startswith("alice")
    )
    assert set(table.author_tz_minutes[alice].tolist()) == {90}
    assert set(table.author_tz_minutes[~alice].tolist()) == {-480}
    assert table.sha.dtype == np.dtype("S40") and len(set(table.sha.tolist())) == len(commits)
    shas = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--all"], capture_output=True, check=True
    ).stdout.split()
    assert set(shas) == set(table.sha.tolist())
    assert not table.is_merge.any()


def test_all_branches_and_merges_only_on_request(tmp_path: Path) -> None:
    commits = [
        FakeCommit("a@example.com", MONDAY + 3600),
        FakeCommit("a@example.com", MONDAY + 7200, branch="feature"),
        FakeCommit("a@example.com", MONDAY + 9000, branch="other"),
        FakeCommit("a@example.com", MONDAY + 10800, merge_of="feature"),
    ]
    repo = build_repo(tmp_path / "repo", commits)
    without = read_commits([repo])
    assert len(without) == 3  # the commit on "other" is on no ancestry of main but is read
    with_merges = read_commits([repo], include_merges=True)
    assert len(with_merges) == 4
    assert int(with_merges.is_merge.sum()) == 1
    merge_time = with_merges.author_time[with_merges.is_merge][0]
    assert merge_time == MONDAY + 10800


def test_same_sha_in_two_clones_counts_once(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", workday_commits("a@example.com", MONDAY, 5))
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    extra = [FakeCommit("b@example.com", MONDAY + 86400 * 20)]
    other = build_repo(tmp_path / "other", extra)
    table = read_commits([repo, clone, other])
    assert len(table) == 5 * 4 + 1
    assert len(set(table.sha.tolist())) == len(table)
    assert sorted(table.emails) == ["a@example.com", "b@example.com"]


def test_mailmap_and_case_merge_identities(tmp_path: Path) -> None:
    commits = [
        FakeCommit("old@laptop.local", MONDAY + 3600, name="Al"),
        FakeCommit("Alice@Example.com", MONDAY + 7200, name="Alice"),
        FakeCommit("alice@example.com", MONDAY + 9000, name="Alice L."),
    ]
    repo = build_repo(
        tmp_path / "repo",
        commits,
        mailmap="Alice Liddell <alice@example.com> <old@laptop.local>\n",
    )
    table = read_commits([repo])
    assert table.emails == ["alice@example.com"]
    assert table.names[0] in {"Alice Liddell", "Alice L."}
    assert table.commit_counts().tolist() == [3]


def test_non_utf8_author_names_are_replaced_not_fatal(tmp_path: Path) -> None:
    commits = [
        FakeCommit("latin@example.com", MONDAY + 3600, name=b"Jos\xe9 M\xfcller"),
        FakeCommit("latin@example.com", MONDAY + 4000, name=b"Jos\xe9 M\xfcller"),
    ]
    table = read_commits([build_repo(tmp_path / "repo", commits)])
    assert table.names == ["Jos\ufffd M\ufffdller"]
    assert len(table) == 2


def test_since_until_bound_author_time(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", workday_commits("a@example.com", MONDAY, 14))
    table = read_commits([repo], since=MONDAY + 7 * 86400, until=MONDAY + 8 * 86400)
    assert len(table) == 4
    assert table.author_time.min() >= MONDAY + 7 * 86400


def test_not_a_repository_is_named(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(WatchkeeperError, match=r"plain: not a git repository"):
        read_commits([plain])
    with pytest.raises(WatchkeeperError, match=r"missing: no such folder"):
        read_commits([tmp_path / "missing"])


def test_repository_without_commits_reads_empty(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "empty")], check=True)
    assert len(read_commits([tmp_path / "empty"])) == 0


def test_large_history_parses_across_chunks(tmp_path: Path) -> None:
    commits = [
        FakeCommit(f"dev{i % 37}@example.com", MONDAY + i * 97, name=f"Dev {i % 37}")
        for i in range(3000)
    ]
    repo = build_repo(tmp_path / "repo", commits)
    import agent.activity.git_log as git_log

    original = git_log.READ_CHUNK_BYTES
    git_log.READ_CHUNK_BYTES = 1000  # force many partial records
    try:
        table = read_commits([repo])
    finally:
        git_log.READ_CHUNK_BYTES = original
    assert len(table) == 3000
    assert len(table.emails) == 37
    assert sorted(table.author_time.tolist()) == [MONDAY + i * 97 for i in range(3000)]


def test_identities_come_from_git_config_and_user_config(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", [FakeCommit("x@example.com", MONDAY)])
    config = UserConfig.load(tmp_path / "config.toml")
    config.set("identity", "emails", ["Work@Example.com", "me@example.com"])
    assert default_identities([repo], config) == ["me@example.com", "work@example.com"]


def test_progress_reports_every_commit(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", workday_commits("a@example.com", MONDAY, 10))
    seen: list[int] = []
    read_commits([repo], progress=seen.append)
    assert sum(seen) == 8 * 4  # ten days from a Monday hold eight weekdays


def test_fixed_width_times_parse_nine_digit_and_negative_values() -> None:
    from agent.activity.git_log import _right_aligned_integers

    text = b"" + b"  946684799" + b" 1700000000" + b"       -100" + b"          0"
    characters = np.frombuffer(text, dtype=np.uint8).reshape(4, 11)
    assert _right_aligned_integers(characters).tolist() == [946684799, 1700000000, -100, 0]


def test_commits_from_the_1990s_are_read(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", [FakeCommit("old@example.com", 700000000, "-0500")])
    table = read_commits([repo])
    assert table.author_time.tolist() == [700000000]
    assert table.author_tz_minutes.tolist() == [-300]
