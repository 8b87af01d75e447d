"""The `coding-time` command: personal (or team) coding-time estimates from git and file saves."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.activity.estimates import (
    ActivityRequest,
    PersonalReport,
    TeamReport,
    load_commits,
    personal_report,
    team_report,
)
from agent.activity.git_log import CommitTable
from agent.activity.html_report import WEEKDAYS, write_html
from agent.activity.identities import default_identities
from agent.activity.ledger_events import read_ledger_saves
from agent.config import UserConfig
from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths

SHADES = " ░▒▓█"
MAX_DAY_ROWS = 31
MAX_TEAM_ROWS = 50


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


def _print_personal(report: PersonalReport, console: Console) -> None:
    estimate = report.estimate
    dates = estimate.dates
    who = ", ".join(report.authors) or "events file"
    console.print(
        f"[bold]Coding time[/bold] for {who}, {dates[0]} to {dates[-1]} ({report.zone}), "
        f"{estimate.event_counts.get('commit', 0)} commits, "
        f"{estimate.event_counts.get('save', 0)} saves"
        + (f" ({report.ledger_saves} recorded by the agent)" if report.ledger_saves else "")
    )
    table = Table(title="Minutes per day", title_justify="left")
    for column in ("date", "HMM", "git-hours", "15-min timeout"):
        table.add_column(column, justify="right")
    rows = [
        i
        for i in range(estimate.n_days)
        if estimate.coding_minutes[i] >= 0.5
        or estimate.git_hours_minutes[i] > 0
        or estimate.timeout_minutes[i] > 0
    ]
    for i in rows[-MAX_DAY_ROWS:]:
        table.add_row(
            dates[i],
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
        table.add_row(
            row.email,
            row.name,
            f"{row.commits:,}",
            f"{row.active_days:,}",
            f"{row.coding_minutes / 60:,.1f}",
            f"{row.git_hours_minutes / 60:,.1f}",
            f"{row.timeout_minutes / 60:,.1f}",
        )
    console.print(table)
    if len(report.rows) > MAX_TEAM_ROWS:
        console.print(f"(top {MAX_TEAM_ROWS} of {len(report.rows)} authors; --json for all)")


def _repos(given: tuple[Path, ...], events: Path | None, config: UserConfig) -> list[Path]:
    if given:
        for path in given:
            if not path.is_dir():
                what = "is not a folder" if path.exists() else "does not exist"
                raise WatchkeeperError(
                    f"--repo {path}: {what}; pass --repo with the folder of a git repository."
                )
        return list(given)
    watched = [Path(p).expanduser() for p in config.watched_repos]
    if watched:
        return watched
    return [] if events is not None else [Path(".")]


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
    as_json: bool,
    html_file: Path | None,
) -> None:
    """Estimate how many minutes a day you really code, from commits and file saves.

    Commits are read from git; file saves from the ledger, where the background agent
    records them, plus any --events file. An hour-of-week hidden Markov model (away / at the
    desk / coding) is fitted to your events; the report shows its minutes per day beside the
    git-hours heuristic and a 15-minute timeout, a weekday-by-hour heatmap, peak hours and
    good hours to ask for a review. See docs/coding-time.md.
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
    repo_paths = _repos(repos, events_file, config)
    if all_authors and not repo_paths:
        raise WatchkeeperError("--all-authors needs at least one --repo.")
    if all_authors and html_file is not None:
        raise WatchkeeperError("--html draws one person's report; drop --all-authors.")
    identities = list(authors) if authors else []
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
    )
    n_jobs = os.cpu_count() or 1
    table = _read_commits(request, errors) if repo_paths else None
    if all_authors:
        assert table is not None
        team = team_report(request, table, n_jobs=n_jobs)
        for warning in team.warnings:
            errors.print(f"[yellow]warning:[/yellow] {warning}")
        if as_json:
            click.echo(json.dumps(team.to_json()))
        else:
            _print_team(team, console)
        return
    ledger_saves = None
    if not no_ledger:
        ledger = WatchkeeperPaths.from_environment().ledger
        ledger_saves = read_ledger_saves(ledger, repo_paths or None)
    report = personal_report(request, table, ledger_saves=ledger_saves, n_jobs=n_jobs)
    for warning in report.warnings:
        errors.print(f"[yellow]warning:[/yellow] {warning}")
    if html_file is not None:
        write_html(report, html_file)
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        _print_personal(report, console)
        if html_file is not None:
            console.print(f"HTML report written to {html_file}")
