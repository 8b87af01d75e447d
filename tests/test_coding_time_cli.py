"""`watchkeeper coding-time` end to end on real git repositories."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from tests.agent.activity.gitrepo import FakeCommit, build_repo, workday_commits

MONDAY = 1704067200  # 2024-01-01T00:00:00Z
EXPECTED_KEYS = {
    "events",
    "days",
    "sessions",
    "heatmap",
    "peak_hours",
    "review_windows",
    "model",
    "input",
}


def run(*arguments: str) -> Result:
    return CliRunner().invoke(main, ["coding-time", *arguments])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    commits = workday_commits("me@example.com", MONDAY, 21, per_day=5, tz="+0100")
    commits += workday_commits("colleague@example.com", MONDAY, 14, per_day=2)
    return build_repo(tmp_path / "repo", commits)


def test_json_has_exactly_the_documented_shape(repo: Path) -> None:
    result = run("--repo", str(repo), "--tz", "Europe/Berlin", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == EXPECTED_KEYS
    assert report["days"][0]["date"] == "2024-01-01"
    assert len(report["days"]) == 19  # 2024-01-01 .. the last weekday with commits
    assert set(report["days"][0]) == {
        "date",
        "coding_minutes",
        "git_hours_minutes",
        "timeout_minutes",
    }
    monday = report["days"][0]
    assert monday["git_hours_minutes"] == pytest.approx(4 * 40)  # the very first adds nothing
    assert monday["timeout_minutes"] == 0
    assert 60 < monday["coding_minutes"] < 400
    saturday = report["days"][5]
    assert saturday["coding_minutes"] < 1 and saturday["git_hours_minutes"] == 0
    assert len(report["heatmap"]) == 7 and all(len(row) == 24 for row in report["heatmap"])
    assert report["heatmap"][0][10] > report["heatmap"][0][3]  # 10:00 Berlin, not 03:00
    assert all(0 <= hour < 24 for hour in report["peak_hours"])
    assert set(report["model"]) == {
        "parameters",
        "log_likelihood",
        "n_iter",
        "converged",
        "change_per_bin",
        "tolerance",
    }
    assert report["model"]["parameters"]["states"] == ["away", "desk", "coding"]
    for session in report["sessions"]:
        assert session["start"] < session["end"] and session["start"].endswith("+01:00")
    for window in report["review_windows"]:
        assert set(window) == {"weekday", "start_hour", "end_hour"}


def test_default_identity_is_git_user_email(repo: Path) -> None:
    mine = json.loads(run("--repo", str(repo), "--json").stdout)
    theirs = json.loads(
        run("--repo", str(repo), "--author", "colleague@example.com", "--json").stdout
    )
    assert sum(d["git_hours_minutes"] for d in mine["days"]) > sum(
        d["git_hours_minutes"] for d in theirs["days"]
    )


def test_terminal_report_and_html(repo: Path, tmp_path: Path) -> None:
    html_file = tmp_path / "out" / "report.html"
    result = run("--repo", str(repo), "--html", str(html_file), "--since", "2024-01-08")
    assert result.exit_code == 0, result.output
    for part in (
        "Minutes per day",
        "git-hours",
        "15-min timeout",
        "Peak hours",
        "Review windows",
        "2024-01-08",
    ):
        assert part in result.stdout
    assert "2024-01-05" not in result.stdout
    page = html_file.read_text(encoding="utf-8")
    assert page.count("<svg") == 4  # days, days by repo, heatmap, sessions
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "polyline" in page and "git-hours" in page


def test_events_file_adds_saves(tmp_path: Path) -> None:
    lines = []
    for minute in range(0, 120, 3):
        lines.append(json.dumps({"ts": MONDAY + 9 * 3600 + minute * 60, "kind": "save"}))
    lines.append(json.dumps({"ts": "2024-01-01T11:00:00+00:00", "kind": "commit"}))
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("--events", str(events), "--tz", "UTC", "--json")
    assert result.exit_code == 0, result.output
    day = json.loads(result.stdout)["days"][0]
    assert day["timeout_minutes"] == pytest.approx(120)  # saves 09:00-10:57, commit 11:00
    assert day["git_hours_minutes"] == 0  # a single commit scores 0
    assert 100 < day["coding_minutes"] < 150


def test_all_authors_table_and_json(tmp_path: Path) -> None:
    commits = workday_commits("me@example.com", MONDAY, 7)
    commits += [
        FakeCommit("latin@example.com", MONDAY + 3600 * h, name=b"Jos\xe9") for h in (9, 10, 11)
    ]
    repo = build_repo(tmp_path / "repo", commits)
    table = run("--repo", str(repo), "--all-authors")
    assert table.exit_code == 0, table.output
    assert "me@example.com" in table.stdout and "Jos\ufffd" in table.stdout
    report = json.loads(run("--repo", str(repo), "--all-authors", "--json").stdout)
    rows = {row["email"]: row for row in report["authors"]}
    assert rows["me@example.com"]["commits"] == 20 and rows["latin@example.com"]["commits"] == 3
    assert rows["latin@example.com"]["git_hours_minutes"] == 120
    assert rows["me@example.com"]["coding_minutes"] > rows["latin@example.com"]["coding_minutes"]


def test_not_a_git_repo_is_named(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    result = run("--repo", str(tmp_path / "plain"))
    assert result.exit_code == 2
    assert f"{tmp_path / 'plain'}: not a git repository" in result.stderr


def test_repo_without_commits(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "empty")], check=True)
    result = run("--repo", str(tmp_path / "empty"), "--author", "me@example.com")
    assert result.exit_code == 2
    assert "no commits yet" in result.stderr


def test_author_without_commits_lists_the_most_active(tmp_path: Path) -> None:
    commits = [
        FakeCommit(f"dev{i}@example.com", MONDAY + 3600 * (i * 10 + j))
        for i in range(7)
        for j in range(i + 1)
    ]
    repo = build_repo(tmp_path / "repo", commits)
    result = run("--repo", str(repo), "--author", "ghost@example.com")
    assert result.exit_code == 2
    assert "no commits by ghost@example.com" in result.stderr
    listed = result.stderr.split("Most active authors found:")[1]
    assert listed.index("dev6@example.com (7 commits)") < listed.index("dev2@example.com")
    assert "dev1@example.com" not in listed and "dev0@example.com" not in listed


def test_unknown_time_zone(repo: Path) -> None:
    result = run("--repo", str(repo), "--tz", "Mars/Olympus_Mons")
    assert result.exit_code == 2
    assert "unknown time zone" in result.stderr and "Mars/Olympus_Mons" in result.stderr


def test_bad_events_line_reports_its_number(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"ts": 1704100000, "kind": "save"}\n{"ts": 1704100060, "kind":\n')
    result = run("--events", str(events))
    assert result.exit_code == 2
    assert f"{events}:2: not valid JSON" in result.stderr


def test_implausible_timestamps_are_dropped_with_a_warning(tmp_path: Path) -> None:
    future = int(time.time()) + 30 * 86400
    lines = [
        {"ts": 1704100000, "kind": "save"},
        {"ts": 1704100120, "kind": "save"},
        {"ts": 600000000, "kind": "save"},  # 1989
        {"ts": future, "kind": "commit"},
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run("--events", str(events), "--json")
    assert result.exit_code == 0, result.output
    assert "dropped 2 events with timestamps before 1990 or in the future" in result.stderr
    assert [day["date"] for day in json.loads(result.stdout)["days"]] == ["2024-01-01"]


def test_single_commit(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", [FakeCommit("me@example.com", MONDAY + 10 * 3600)])
    result = run("--repo", str(repo), "--tz", "UTC", "--json")
    assert result.exit_code == 0, result.output
    assert "only one event" in result.stderr
    day = json.loads(result.stdout)["days"][0]
    assert day["git_hours_minutes"] == 0 and 5 <= day["coding_minutes"] < 240


def test_since_after_until(repo: Path) -> None:
    result = run("--repo", str(repo), "--since", "2024-02-01", "--until", "2024-01-01")
    assert result.exit_code == 2
    assert "--since 2024-02-01 is after --until 2024-01-01" in result.stderr


def test_bad_date_and_bin_length(repo: Path) -> None:
    assert "expected a date" in run("--repo", str(repo), "--since", "last week").stderr
    result = run("--repo", str(repo), "--bin-minutes", "7")
    assert result.exit_code == 2 and "must divide a day" in result.stderr


def test_merges_only_with_include_merges(tmp_path: Path) -> None:
    commits = [
        FakeCommit("me@example.com", MONDAY + 9 * 3600),
        FakeCommit("me@example.com", MONDAY + 10 * 3600, branch="topic"),
        FakeCommit("me@example.com", MONDAY + 13 * 3600, merge_of="topic"),
    ]
    repo = build_repo(tmp_path / "repo", commits)
    plain = json.loads(run("--repo", str(repo), "--tz", "UTC", "--json").stdout)
    merged = json.loads(
        run("--repo", str(repo), "--tz", "UTC", "--json", "--include-merges").stdout
    )
    # git-hours counts every commit, merges included, as the tool does: 60 + a new session
    assert plain["days"][0]["git_hours_minutes"] == 60 + 120
    assert merged["days"][0]["git_hours_minutes"] == 60 + 120
    assert plain["events"]["commits"] == 2 and merged["events"]["commits"] == 3
    assert merged["days"][0]["coding_minutes"] >= plain["days"][0]["coding_minutes"]


def test_progress_display_appears_only_after_a_second() -> None:
    import io

    from rich.console import Console

    from agent.cli.coding_time_cmd import _ReadingProgress

    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=100)
    quick = _ReadingProgress(console)
    quick(500)
    quick.close()
    assert quick.progress is None and output.getvalue() == ""
    slow = _ReadingProgress(console)
    slow.began -= 2.0
    slow(1000)
    slow(2500)
    slow.close()
    assert slow.progress is not None and slow.read == 3500
    assert "reading git history" in output.getvalue()


def test_saves_recorded_by_the_agent_are_read_from_the_ledger_by_default(tmp_path: Path) -> None:
    from agent.config import UserConfig
    from agent.daemon.ingest import SaveCoalescer, ingest_commits
    from agent.ledger import open_ledger
    from agent.paths import WatchkeeperPaths
    from tests.agent.activity.gitrepo import FakeCommit

    repo = build_repo(tmp_path / "repo", [FakeCommit("me@example.com", MONDAY + 11 * 3600)])
    other = build_repo(tmp_path / "other", [FakeCommit("me@example.com", MONDAY + 15 * 3600)])
    db = open_ledger(WatchkeeperPaths.from_environment().ledger)
    try:
        # What the agent records: the commits (with their own `commit` activity events) and the
        # coalesced saves, 40 in `repo` on Monday morning and 10 in `other` that afternoon.
        for path in (repo, other):
            ingest_commits(db, path, ["me@example.com"])
        saves = SaveCoalescer(30.0)
        for minute in range(0, 120, 3):
            saves.note(repo, "model.py", MONDAY + 9 * 3600 + minute * 60)
        for minute in range(0, 30, 3):
            saves.note(other, "notes.py", MONDAY + 14 * 3600 + minute * 60)
        assert saves.flush(db) == 50
        assert (
            db.execute("SELECT COUNT(*) FROM activity_events WHERE kind = 'commit'").fetchone()[0]
            == 2
        )
    finally:
        db.close()

    def report(*arguments: str) -> dict:
        result = run("--author", "me@example.com", "--tz", "UTC", "--json", *arguments)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    mine = report("--repo", str(repo))
    # Commits from git only (the agent's commit events are not counted again), saves of this
    # repo only.
    assert mine["events"] == {"commits": 1, "saves": 40, "ledger_saves": 40}
    day = mine["days"][0]
    assert day["timeout_minutes"] == pytest.approx(120)  # saves 09:00-10:57, commit 11:00
    assert day["git_hours_minutes"] == 0  # a single commit scores 0
    assert 100 < day["coding_minutes"] < 150

    without = report("--repo", str(repo), "--no-ledger")
    assert without["events"] == {"commits": 1, "saves": 0, "ledger_saves": 0}
    assert without["days"][0]["timeout_minutes"] == 0

    # --events adds to the ledger; a save present in both counts once.
    events = tmp_path / "events.jsonl"
    lines = [{"ts": MONDAY + 16 * 3600 + k * 60, "kind": "save"} for k in range(5)]
    lines.append({"ts": MONDAY + 9 * 3600, "kind": "save"})
    events.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    both = report("--repo", str(repo), "--events", str(events))
    assert both["events"]["saves"] == 45 and both["events"]["ledger_saves"] == 40

    # With no --repo: the watched repos, each with its own saves.
    config = UserConfig.load()
    config.set("watch", "repos", [str(repo), str(other)])
    config.save()
    watched = report()
    assert watched["events"] == {"commits": 2, "saves": 50, "ledger_saves": 50}
    text = run("--author", "me@example.com", "--tz", "UTC")
    assert text.exit_code == 0, text.output
    assert "2 commits, 50 saves, all recorded by the agent" in text.stdout


def test_a_bot_is_reported_as_automated_with_no_coding_time(tmp_path: Path) -> None:
    commits = workday_commits("me@example.com", MONDAY, 14, per_day=4)
    bot_email = "49699333+dependabot[bot]@users.noreply.github.com"
    commits += [
        FakeCommit(c.email, c.time + 600, name="dependabot[bot]")
        for c in workday_commits(bot_email, MONDAY, 14, per_day=3)
    ]
    repo = build_repo(tmp_path / "repo", sorted(commits, key=lambda c: c.time))
    report = json.loads(run("--repo", str(repo), "--all-authors", "--json").stdout)
    rows = {row["email"]: row for row in report["authors"]}
    assert rows[bot_email]["automated"] is True and rows[bot_email]["coding_minutes"] == 0.0
    assert rows[bot_email]["git_hours_minutes"] > 0  # git-hours counts it as the tool does
    assert rows["me@example.com"]["automated"] is False
    assert rows["me@example.com"]["coding_minutes"] > 0
    table = run("--repo", str(repo), "--all-authors")
    assert "dependabot[bot] (bot)" in table.stdout and "automated identity" in table.stdout
    as_person = json.loads(
        run("--repo", str(repo), "--all-authors", "--json", "--bots-as-people").stdout
    )
    bot_row = next(row for row in as_person["authors"] if row["email"] == bot_email)
    assert bot_row["automated"] is False and bot_row["coding_minutes"] > 0
    alone = run("--repo", str(repo), "--author", bot_email, "--json")
    assert alone.exit_code == 0, alone.output
    single = json.loads(alone.stdout)
    assert single["automated"] is True
    assert all(day["coding_minutes"] == 0.0 for day in single["days"])
    assert "automated identity" in alone.stderr
