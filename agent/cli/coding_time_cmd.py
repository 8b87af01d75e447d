"""The `coding-time` command: personal (or team) coding-time estimates from git and file saves."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.activity.coding_time.by_repo import RepoDays, attribute_to_repos
from agent.activity.coding_time_store import (
    StoredEstimate,
    counted,
    events_recorded_since,
    freshness_note,
    read_stored,
    shown_peak_hours,
)
from agent.activity.estimates import (
    ActivityRequest,
    PersonalReport,
    TeamReport,
    load_commits,
    personal_report,
    team_report,
    to_local_seconds,
)
from agent.activity.events import read_events
from agent.activity.git_log import CommitTable, InputChecks, check_repository
from agent.activity.html_report import WEEKDAYS, write_html
from agent.activity.identities import canonical_identities, default_identities
from agent.activity.ledger_events import read_ledger_saves
from agent.config import UserConfig
from agent.errors import WatchkeeperError
from agent.ledger import open_ledger
from agent.paths import WatchkeeperPaths

SHADES = " ░▒▓█"
MAX_DAY_ROWS = 31
MAX_TEAM_ROWS = 50
EVENTS_FILE_REPO = "(events file)"


class _ReadingProgress:
    """A progress display that appears only once reading has taken more than a second."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.began = time.monotonic()
        self.read = 0
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, added: int) -> None:
        self.read += added
        if self.progress is None and time.monotonic() - self.began > 1.0:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("reading git history: {task.completed:,} commits"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("read", total=None)
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=self.read)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _read_commits(request: ActivityRequest, console: Console) -> CommitTable:
    progress = _ReadingProgress(console)
    try:
        return load_commits(request, progress)
    finally:
        progress.close()


def _minutes(value: float) -> str:
    return f"{value:,.0f}"


def saves_phrase(report: PersonalReport) -> str:
    """'40 saves' and, when the agent's record was read, how many saves it held.

    Saves from the agent's record and an --events file are merged (one save per second), and
    only the days shown count, so the record may hold more saves than are counted.
    """
    saves = report.estimate.event_counts.get("save", 0)
    phrase = counted(saves, "save")
    recorded = report.ledger_saves
    if recorded == 0:
        return phrase
    if recorded == saves:
        return f"{phrase}, all recorded by the agent"
    return (
        f"{phrase} counted (the agent recorded {recorded:,} for these repos; saves in the same "
        "second count once and saves outside the days shown are left out)"
    )


def _print_by_repo(report: PersonalReport, by_repo: RepoDays, console: Console) -> None:
    table = Table(title="Coding time per repo", title_justify="left")
    for column, justify in (
        ("repo", "left"),
        ("HMM min", "right"),
        ("share", "right"),
        ("events", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    totals = by_repo.totals
    whole = max(float(totals.sum()), 1e-12)
    for r in by_repo.order():
        table.add_row(
            by_repo.repos[r],
            _minutes(totals[r]),
            f"{totals[r] / whole:.0%}",
            f"{int(by_repo.events[r]):,}",
        )
    table.add_section()
    table.add_row("total", _minutes(report.estimate.coding_minutes.sum()), "", "")
    console.print(table)


def _print_personal(report: PersonalReport, console: Console, source_note: str = "") -> None:
    estimate = report.estimate
    dates = estimate.dates
    who = ", ".join(report.authors) or "events file"
    console.print(
        f"[bold]Coding time[/bold] for {who}, {dates[0]} to {dates[-1]} ({report.zone}), "
        f"{counted(estimate.event_counts.get('commit', 0), 'commit')}, {saves_phrase(report)}"
    )
    if source_note:
        console.print(source_note)
    table = Table(title="Minutes per day", title_justify="left")
    for column in ("date", "HMM", "git-hours", "15-min timeout"):
        table.add_column(column, justify="right")
    today = datetime.now(report.zone).date().isoformat()
    rows = [
        i
        for i in range(estimate.n_days)
        if estimate.coding_minutes[i] >= 0.5
        or estimate.git_hours_minutes[i] > 0
        or estimate.timeout_minutes[i] > 0
        or dates[i] == today
    ]
    for i in rows[-MAX_DAY_ROWS:]:
        table.add_row(
            f"{dates[i]} (today, so far)" if dates[i] == today else dates[i],
            _minutes(estimate.coding_minutes[i]),
            _minutes(estimate.git_hours_minutes[i]),
            _minutes(estimate.timeout_minutes[i]),
        )
    table.add_section()
    table.add_row(
        "total",
        _minutes(estimate.coding_minutes.sum()),
        _minutes(estimate.git_hours_total_minutes),  # git-hours' own total: whole hours
        _minutes(estimate.timeout_minutes.sum()),
    )
    console.print(table)
    if len(rows) > MAX_DAY_ROWS:
        console.print(
            f"(the last {MAX_DAY_ROWS} of {len(rows)} active days; --json or --html for all)"
        )
    heatmap = Table(title="Coding minutes per week by hour", title_justify="left", box=None)
    heatmap.add_column("", min_width=3, no_wrap=True)
    for hour in range(24):
        heatmap.add_column(f"{hour:02d}"[-2:], justify="center", min_width=2)
    peak = max(float(estimate.heatmap.max()), 1e-9)
    for day in range(7):
        cells = [
            SHADES[min(len(SHADES) - 1, round(v / peak * (len(SHADES) - 1)))] * 2
            for v in estimate.heatmap[day]
        ]
        heatmap.add_row(WEEKDAYS[day], *cells)
    console.print(heatmap)
    peaks = ", ".join(f"{h:02d}:00" for h in estimate.peak_hours) or "none"
    console.print(f"Peak hours: {peaks}")
    if estimate.review_windows:
        windows = "; ".join(
            f"{WEEKDAYS[w.weekday]} {w.start_hour:02d}-{w.end_hour:02d}"
            for w in estimate.review_windows
        )
        console.print(f"Review windows: {windows}")
    else:
        console.print("Review windows: none found (too little activity)")
    sessions = estimate.sessions
    if sessions.shape[0]:
        mean = float((sessions[:, 1] - sessions[:, 0]).mean()) / 60
        console.print(f"Sessions: {sessions.shape[0]}, {mean:.0f} minutes on average")


def _print_team(report: TeamReport, console: Console) -> None:
    table = Table(title="Coding hours per author", title_justify="left")
    for column, justify in (
        ("author", "left"),
        ("name", "left"),
        ("commits", "right"),
        ("active days", "right"),
        ("HMM h", "right"),
        ("git-hours h", "right"),
        ("timeout h", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in report.rows[:MAX_TEAM_ROWS]:
        table.add_row(  # names such as dependabot[bot] are text, not markup
            escape(row.email),
            escape(f"{row.name} (bot)" if row.automated else row.name),
            f"{row.commits:,}",
            f"{row.active_days:,}",
            f"{row.coding_minutes / 60:,.1f}",
            f"{row.git_hours_minutes / 60:,.1f}",
            f"{row.timeout_minutes / 60:,.1f}",
        )
    console.print(table)
    if len(report.rows) > MAX_TEAM_ROWS:
        console.print(f"(top {MAX_TEAM_ROWS} of {len(report.rows)} authors; --json for all)")
    if any(row.automated for row in report.rows):
        console.print(
            "(bot): an automated identity, by its name or email; 0 coding minutes "
            "(--bots-as-people to estimate it like a person)"
        )


def _repos(
    given: tuple[Path, ...], events: Path | None, config: UserConfig, errors: Console
) -> list[Path]:
    if given:
        for path in given:
            if not path.is_dir():
                what = "is not a folder" if path.exists() else "does not exist"
                raise WatchkeeperError(
                    f"--repo {path}: {what}; pass --repo with the folder of a git repository."
                )
        return list(given)
    watched = [Path(p).expanduser() for p in config.watched_repos]
    present = [path for path in watched if path.is_dir()]
    for path in watched:
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            errors.print(
                f"[yellow]warning:[/yellow] watched repo {path} {what}; skipped "
                f"(`watchkeeper watch remove {path}` forgets it)."
            )
    if watched and not present:
        raise WatchkeeperError(
            f"none of the watched repos in {config.path} exists ({', '.join(map(str, watched))}); "
            "pass --repo with the folder of a git repository."
        )
    if present:
        return present
    return [] if events is not None else [Path(".")]


def _print_input_checks(checks: InputChecks, errors: Console) -> None:
    for warning in checks.warnings():
        errors.print(f"[yellow]warning:[/yellow] {escape(warning)}")


@click.command("coding-time")
@click.option(
    "--repo",
    "repos",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="A git repository to read (repeatable). Default: the watched repos, else the current "
    "folder (none when only --events is given).",
)
@click.option(
    "--author",
    "authors",
    multiple=True,
    help="An author email (repeatable); replaces git's user.email and [identity] emails.",
)
@click.option("--all-authors", is_flag=True, help="A table of every author (team view).")
@click.option(
    "--events",
    "events_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSON Lines of {"ts": epoch or ISO 8601 with offset, "kind": "commit"|"save"}; '
    "added to the saves the agent recorded in the ledger.",
)
@click.option(
    "--no-ledger",
    is_flag=True,
    help="Do not read the file saves the agent recorded in the ledger (git and --events only).",
)
@click.option("--since", help="First day to report (YYYY-MM-DD, in --tz).")
@click.option("--until", help="Last day to report, inclusive (YYYY-MM-DD, in --tz).")
@click.option("--tz", "zone_name", help="IANA time zone of the bins. Default: the system zone.")
@click.option(
    "--bin-minutes",
    type=click.IntRange(1, 60),
    default=5,
    show_default=True,
    help="Bin length in minutes (must divide a day).",
)
@click.option("--include-merges", is_flag=True, help="Count merge commits too.")
@click.option(
    "--bots-as-people",
    is_flag=True,
    help="Estimate automated identities (dependabot[bot], *-bot, ...) like a person instead "
    "of reporting them with 0 coding minutes.",
)
@click.option(
    "--by-repo",
    is_flag=True,
    help="Also show where the time went: coding minutes per repo (and per day and repo in "
    "--json), each bin's minutes shared among the repos of its events.",
)
@click.option(
    "--recompute",
    is_flag=True,
    help="Fit the model to git now instead of reading the estimate the agent stored.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the report.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write a self-contained HTML report to this file.",
)
def coding_time(
    repos: tuple[Path, ...],
    authors: tuple[str, ...],
    all_authors: bool,
    events_file: Path | None,
    no_ledger: bool,
    since: str | None,
    until: str | None,
    zone_name: str | None,
    bin_minutes: int,
    include_merges: bool,
    bots_as_people: bool,
    by_repo: bool,
    recompute: bool,
    as_json: bool,
    html_file: Path | None,
) -> None:
    """Estimate how many minutes a day you really code, from commits and file saves.

    Commits are read from git; file saves from the ledger, where the background agent
    records them, plus any --events file. An hour-of-week hidden Markov model (away / at the
    desk / coding) is fitted to your events; the report shows its minutes per day beside the
    git-hours heuristic and a 15-minute timeout, a weekday-by-hour heatmap, peak hours and
    good hours to ask for a review. See docs/coding-time.md.

    Without options that change what is read, the report is the estimate the agent stored
    (the one the app and the tray show); --recompute fits to git instead.
    """
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    if (24 * 60) % bin_minutes:
        raise WatchkeeperError(
            f"--bin-minutes {bin_minutes}: must divide a day evenly (e.g. 1, 5, 10, 15, 30)."
        )
    config = UserConfig.load()
    scoped = bool(
        repos
        or authors
        or all_authors
        or events_file
        or no_ledger
        or since
        or until
        or zone_name
        or include_merges
        or bots_as_people
        or bin_minutes != 5
    )
    stored = None if scoped or recompute else _stored_estimate()
    if stored is not None:
        _show_stored(stored, by_repo=by_repo, as_json=as_json, html_file=html_file, console=console)
        return
    repo_paths = _repos(repos, events_file, config, errors)
    if all_authors and not repo_paths:
        raise WatchkeeperError("--all-authors needs at least one --repo.")
    if all_authors and html_file is not None:
        raise WatchkeeperError("--html draws one person's report; drop --all-authors.")
    for path in repo_paths:
        check_repository(path)  # a folder that is no repo is named before any identity is sought
    identities = canonical_identities(repo_paths, [(None, a) for a in authors]) if authors else []
    if not identities and not all_authors and repo_paths:
        identities = default_identities(repo_paths, config)
        if not identities:
            raise WatchkeeperError(
                "no identity: set `git config user.email`, list emails under [identity] "
                "emails in config.toml, or pass --author EMAIL."
            )
    request = ActivityRequest(
        repos=repo_paths,
        authors=identities,
        events_file=events_file,
        since=since,
        until=until,
        zone_name=zone_name,
        bin_minutes=bin_minutes,
        include_merges=include_merges,
        bots_as_people=bots_as_people,
    )
    n_jobs = os.cpu_count() or 1
    table = _read_commits(request, errors) if repo_paths else None
    checks = InputChecks()
    if table is not None:
        checks = table.input_checks(None if all_authors else table.codes_for(identities))
    _print_input_checks(checks, errors)
    if all_authors:
        assert table is not None
        team = team_report(request, table, n_jobs=n_jobs)
        for warning in team.warnings:
            errors.print(f"[yellow]warning:[/yellow] {warning}")
        if as_json:
            click.echo(json.dumps({**team.to_json(), "input": checks.to_json()}))
        else:
            _print_team(team, console)
        return
    ledger_saves = None
    if not no_ledger:
        ledger_saves = read_ledger_saves(ledger_path(), repo_paths or None)
    report = personal_report(request, table, ledger_saves=ledger_saves, n_jobs=n_jobs)
    report.estimate.peak_hours = shown_peak_hours(report.estimate)
    for warning in report.warnings:
        errors.print(f"[yellow]warning:[/yellow] {warning}")
    repo_days = (
        _repo_days(report, request, table, None if no_ledger else ledger_path())
        if by_repo or html_file is not None
        else None
    )
    _show(
        report,
        repo_days if by_repo else None,
        repo_days,
        as_json=as_json,
        html_file=html_file,
        console=console,
        extra={"input": checks.to_json()},
    )


def ledger_path() -> Path:
    return WatchkeeperPaths.from_environment().ledger


def _stored_estimate() -> StoredEstimate | None:
    """The agent's stored estimate, when there is a ledger holding one."""
    path = ledger_path()
    if not path.exists():
        return None
    db = open_ledger(path, readonly=True)
    try:
        stored = read_stored(db)
        if stored is None:
            return None
        stored.model["newer_events"] = events_recorded_since(db, stored)
        return stored
    finally:
        db.close()


def _show_stored(
    stored: StoredEstimate,
    *,
    by_repo: bool,
    as_json: bool,
    html_file: Path | None,
    console: Console,
) -> None:
    newer = int(stored.model.pop("newer_events", 0))
    note = freshness_note(stored, newer)
    report = PersonalReport(stored.estimate, ZoneInfo(stored.zone), stored.identities)
    source = {
        "stored": True,
        "computed_at": stored.computed_at,
        "trigger": stored.trigger,
        "provisional": newer > 0,
        "newer_events": newer,
        "note": note,
        "today": str(stored.today()),
    }
    _show(
        report,
        stored.by_repo if by_repo else None,
        stored.by_repo,
        as_json=as_json,
        html_file=html_file,
        console=console,
        extra={"model": stored.model, "source": source},
        source_note=f"The agent's stored estimate ({note}); --recompute fits to git now.",
    )


def _show(
    report: PersonalReport,
    by_repo: RepoDays | None,
    html_repos: RepoDays | None,
    *,
    as_json: bool,
    html_file: Path | None,
    console: Console,
    extra: dict[str, Any],
    source_note: str = "",
) -> None:
    if html_file is not None:
        write_html(report, html_file, by_repo=html_repos, note=source_note)
    if as_json:
        document = {**report.to_json(), **extra}
        if by_repo is not None:
            document["by_repo"] = repo_days_json(report, by_repo)
        click.echo(json.dumps(document))
        return
    _print_personal(report, console, source_note)
    if by_repo is not None:
        _print_by_repo(report, by_repo, console)
    if html_file is not None:
        console.print(f"HTML report written to {html_file}")


def repo_days_json(report: PersonalReport, by_repo: RepoDays) -> dict[str, object]:
    """`{"repos": [{"repo", "coding_minutes", "events"}...], "days": [{"date", "repos"}...]}`."""
    dates = report.estimate.dates
    order = by_repo.order()
    return {
        "repos": [
            {
                "repo": by_repo.repos[r],
                "coding_minutes": round(float(by_repo.totals[r]), 1),
                "events": int(by_repo.events[r]),
            }
            for r in order
        ],
        "days": [
            {
                "date": dates[d],
                "repos": {
                    by_repo.repos[r]: round(float(by_repo.minutes[d, r]), 1)
                    for r in order
                    if by_repo.minutes[d, r] >= 0.05
                },
            }
            for d in range(min(len(dates), by_repo.minutes.shape[0]))
            if by_repo.minutes[d].sum() >= 0.05
        ],
    }


def _repo_days(
    report: PersonalReport,
    request: ActivityRequest,
    table: CommitTable | None,
    ledger: Path | None,
) -> RepoDays:
    """The report's coding minutes shared among the repos of its events."""
    times: list[np.ndarray] = []
    repos: list[str] = []
    if table is not None and len(table):
        mine = np.isin(table.author_code, table.codes_for(request.authors))
        names = [str(path.resolve()) for path in request.repos]
        times.append(table.author_time[mine].astype(np.float64))
        repos.extend(names[int(i)] for i in table.repo_index[mine])
    if ledger is not None and ledger.exists() and request.repos:
        db = open_ledger(ledger, readonly=True)
        try:
            marks = ", ".join("?" for _ in request.repos)
            rows = db.execute(
                "SELECT e.ts, r.path FROM activity_events e JOIN repos r ON r.id = e.repo_id "
                f"WHERE e.kind = 'save' AND r.path IN ({marks})",
                [str(path.resolve()) for path in request.repos],
            ).fetchall()
        finally:
            db.close()
        times.append(np.array([float(row[0]) for row in rows], dtype=np.float64))
        repos.extend(str(row[1]) for row in rows)
    if request.events_file is not None:
        events = read_events(request.events_file)
        times.append(events.times.astype(np.float64))
        repos.extend([EVENTS_FILE_REPO] * len(events))
    utc = np.concatenate(times) if times else np.zeros(0)
    estimate = report.estimate
    return attribute_to_repos(
        estimate.bin_numbers,
        estimate.bin_coding_minutes,
        estimate.bin_minutes * 60,
        estimate.first_day,
        estimate.n_days,
        to_local_seconds(utc, report.zone),
        repos,
        day_minutes=estimate.coding_minutes,
    )
