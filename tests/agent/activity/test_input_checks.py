"""Identities through .mailmap and the checks on what is read: offsets, shallow clones, .mailmap."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import agent.activity.git_log as git_log
from agent.activity.git_log import read_commits
from agent.activity.identities import canonical_identities, default_identities
from agent.activity.mailmap import check_line
from agent.config import UserConfig
from tests.agent.activity.gitrepo import (
    FakeCommit,
    add_raw_commit,
    build_repo,
    workday_commits,
)

MONDAY = 1704067200  # 2024-01-01T00:00:00Z
MAILMAP = "Alice Liddell <alice@example.com> <old@laptop.local>\n"


def _malformed_repo(path: Path) -> Path:
    repo = build_repo(path, workday_commits("a@example.com", MONDAY, 3, tz="+0100"))
    for index, tz in enumerate(["+51800", "+51800", "+1234567", "+0575", "-1500", "+1400"]):
        add_raw_commit(repo, "a@example.com", MONDAY + 86400 * 5 + index * 600, tz)
    return repo


def test_malformed_offsets_are_counted_and_read_as_utc(tmp_path: Path) -> None:
    table = read_commits([_malformed_repo(tmp_path / "repo")])
    assert len(table) == 3 * 4 + 6
    assert table.malformed_offsets() == {"+51800": 2, "+1234567": 1, "+0575": 1, "-1500": 1}
    offsets = dict(zip(table.author_time.tolist(), table.author_tz_minutes.tolist(), strict=True))
    late = MONDAY + 86400 * 5
    assert [offsets[late + i * 600] for i in range(6)] == [0, 0, 0, 0, 0, 840]
    assert set(table.author_tz_minutes[table.author_time < late].tolist()) == {60}
    warning = table.input_checks().warnings()[0]
    assert warning.startswith("5 commits with a malformed UTC offset (+0575 (1), +1234567 (1)")
    assert "placed in UTC" in warning


def test_malformed_offsets_survive_small_chunks_and_two_repos(tmp_path: Path) -> None:
    repo = _malformed_repo(tmp_path / "repo")
    other = build_repo(tmp_path / "other", [FakeCommit("b@example.com", MONDAY)])
    add_raw_commit(other, "b@example.com", MONDAY + 60, "+51800")
    original = git_log.READ_CHUNK_BYTES
    git_log.READ_CHUNK_BYTES = 150  # records split across reads
    try:
        table = read_commits([other, repo])
    finally:
        git_log.READ_CHUNK_BYTES = original
    assert table.malformed_offsets() == {"+51800": 3, "+1234567": 1, "+0575": 1, "-1500": 1}
    mine = table.codes_for(["b@example.com"])
    assert table.input_checks(mine).malformed_offsets == {"+51800": 1}
    bad = table.bad_offset
    assert bad is not None and (table.author_tz_minutes[bad >= 0] == 0).all()


def test_author_email_mapped_by_mailmap_finds_the_commits(tmp_path: Path) -> None:
    commits = [
        FakeCommit("old@laptop.local", MONDAY + 3600),
        FakeCommit("alice@example.com", MONDAY + 7200),
    ]
    repo = build_repo(tmp_path / "repo", commits, mailmap=MAILMAP)
    subprocess.run(["git", "-C", str(repo), "config", "user.email", "Old@Laptop.local"], check=True)
    identities = canonical_identities([repo], [(None, "old@laptop.local")])
    assert identities == ["old@laptop.local", "alice@example.com"]
    config = UserConfig.load(tmp_path / "config.toml")
    assert default_identities([repo], config) == ["old@laptop.local", "alice@example.com"]
    table = read_commits([repo])
    assert table.commit_counts()[table.codes_for(identities)].sum() == 2


def test_mailmap_entries_on_name_and_email_use_the_git_user_name(tmp_path: Path) -> None:
    mailmap = "Alice <alice@example.com> Al <shared@example.com>\n"
    commits = [FakeCommit("shared@example.com", MONDAY, name="Al")]
    repo = build_repo(tmp_path / "repo", commits, mailmap=mailmap)
    subprocess.run(
        ["git", "-C", str(repo), "config", "user.email", "shared@example.com"], check=True
    )
    config = UserConfig.load(tmp_path / "config.toml")
    subprocess.run(["git", "-C", str(repo), "config", "user.name", "Bo"], check=True)
    assert default_identities([repo], config) == ["shared@example.com"]
    subprocess.run(["git", "-C", str(repo), "config", "user.name", "Al"], check=True)
    assert default_identities([repo], config) == ["shared@example.com", "alice@example.com"]


def test_several_emails_of_one_person_merge(tmp_path: Path) -> None:
    mailmap = (
        "Alice <alice@example.com> <old@laptop.local>\nAlice <alice@example.com> <a@work.example>\n"
    )
    commits = [
        FakeCommit("old@laptop.local", MONDAY),
        FakeCommit("a@work.example", MONDAY + 600),
        FakeCommit("alice@example.com", MONDAY + 1200),
    ]
    repo = build_repo(tmp_path / "repo", commits, mailmap=mailmap)
    identities = canonical_identities(
        [repo], [(None, "old@laptop.local"), (None, "a@work.example")]
    )
    assert identities == ["old@laptop.local", "alice@example.com", "a@work.example"]
    table = read_commits([repo])
    assert table.emails == ["alice@example.com"] and table.commit_counts().tolist() == [3]


def test_mailmap_syntax_errors_are_named_by_line_and_the_rest_applies(tmp_path: Path) -> None:
    mailmap = (
        "# people\n"
        "Bob bob@example.com\n"  # no angle brackets: git skips the line
        "Alice <alice@example.com> <old@laptop.local>  # laptop\n"
        "Carol <carol@example.com> <c@old\n"  # unclosed second email
        "Dan <dan@example.com> <d@old.example>\n"
    )
    commits = [
        FakeCommit("old@laptop.local", MONDAY),
        FakeCommit("d@old.example", MONDAY + 60),
        FakeCommit("alice@example.com", MONDAY + 120),
    ]
    repo = build_repo(tmp_path / "repo", commits, mailmap=mailmap)
    table = read_commits([repo])
    assert sorted(table.emails) == ["alice@example.com", "dan@example.com"]
    problems = table.input_checks().notes.mailmap_problems
    assert [(p.line, p.reason) for p in problems] == [
        (2, "no <email>"),
        (4, "the second email has no closing '>'"),
    ]
    message = problems[0].message()
    assert message.startswith(f"{repo.resolve()}/.mailmap:2: no <email> in 'Bob bob@example.com'")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("A <a@x> <b@y>", None),
        ("<a@x> <b@y>", None),
        ("A <a@x>", None),
        ("  # indented comment", None),
        ("A <a@x> B <> ", None),
        ("A <> <b@y>", "an empty <>"),
        ("A <a@x", "the email has no closing '>'"),
        ("A <a@x> b@y", "text after the first <email> is not an <email> (missing angle brackets?)"),
        ("A <a@x> <b@y> <c@z>", "text after the second <email> is ignored"),
    ],
)
def test_mailmap_lines_are_read_as_git_reads_them(line: str, reason: str | None) -> None:
    assert check_line(line) == reason


def test_mailmap_file_setting_is_checked_too(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", [FakeCommit("x@example.com", MONDAY)])
    extra = tmp_path / "people.mailmap"
    extra.write_text("X <x@example.com> <x@old>\nnot an entry\n")
    subprocess.run(["git", "-C", str(repo), "config", "mailmap.file", str(extra)], check=True)
    problems = read_commits([repo]).input_checks().notes.mailmap_problems
    assert [(p.source, p.line) for p in problems] == [(str(extra), 2)]


def test_shallow_clone_says_where_history_is_cut(tmp_path: Path) -> None:
    commits = [FakeCommit("a@example.com", MONDAY + day * 86400 + 9 * 3600) for day in range(10)]
    source = build_repo(tmp_path / "source", commits)
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "3", f"file://{source}", str(clone)], check=True
    )
    table = read_commits([clone])
    assert len(table) == 3
    boundary = table.notes.shallow
    assert len(boundary) == 1 and boundary[0].to_json()["cut_at"] == "2024-01-08"
    assert (
        f"{clone} is a shallow clone: its history is cut at 2024-01-08"
        in (table.input_checks().warnings()[0])
    )
    assert read_commits([source]).notes.shallow == []


def test_well_formed_history_has_no_input_warnings(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", workday_commits("a@example.com", MONDAY, 5, tz="-0930"))
    table = read_commits([repo])
    assert table.bad_offset is None and table.input_checks().warnings() == []
    assert np.unique(table.author_tz_minutes).tolist() == [-570]


def test_history_of_only_wide_offsets_is_read(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    add_raw_commit(repo, "a@example.com", MONDAY, "+1234567")
    add_raw_commit(repo, "a@example.com", MONDAY + 60, "-99999999")
    table = read_commits([repo])
    assert sorted(table.author_time.tolist()) == [MONDAY, MONDAY + 60]
    assert table.malformed_offsets() == {"+1234567": 1, "-99999999": 1}
