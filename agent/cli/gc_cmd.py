"""The `gc` command: free the blobs and run folders that no kept version needs."""

from __future__ import annotations

import time

import click
from sqlite_utils import Database

from agent.cli import common
from agent.formatting import format_size
from agent.ledger.gc import (
    GRACE_SECONDS,
    KIND_ORDER,
    KIND_TITLES,
    RUN_FOLDERS,
    RetiredVersion,
    collect,
    plan_gc,
)
from agent.paths import WatchkeeperPaths
from agent.runs.reproduce import parked_worktrees, remove_parked_worktrees


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Print what would be freed; change nothing.")
@click.option(
    "--keep-last",
    type=click.IntRange(min=0),
    metavar="N",
    help="Mark deleted every version but the newest N of each model (aliased, current and "
    "running versions are always kept).",
)
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    metavar="DAYS",
    help="Mark deleted the versions started more than DAYS ago (with --keep-last: only those "
    "outside the newest N), and remove run folders of runs that ended before then.",
)
@click.option(
    "--remote",
    "remotes",
    multiple=True,
    metavar="NAME",
    help="Also collect the upload cache and run folders of remote NAME (repeatable).",
)
def gc(
    dry_run: bool, keep_last: int | None, older_than: float | None, remotes: tuple[str, ...]
) -> None:
    """Remove blobs (artifacts, data, diffs) and run folders that no kept version needs.

    Blobs listed by a version not deleted, by the newest snapshot of a data source, or by a
    running run are kept, and so is any blob written in the last hour. The code a finished
    reproduction parked for the next one is removed too. Without --keep-last or
    --older-than no version is deleted: only what `models delete` marked is freed.
    """
    paths = WatchkeeperPaths.from_environment()
    now = time.time()
    with common.ledger_session() as db:
        if dry_run:
            plan = plan_gc(db, paths, keep_last=keep_last, older_than_days=older_than, now=now)
            totals = plan.totals()
        else:
            plan, result = collect(db, paths, keep_last=keep_last, older_than_days=older_than)
            totals = {kind: (count, size) for kind, (count, size) in result.freed.items()}
        remote_reports = [_collect_remote(db, name, dry_run, older_than, now) for name in remotes]
    parked = parked_worktrees(paths) if dry_run else remove_parked_worktrees(paths)
    verb = "would free" if dry_run else "freed"
    if plan.retired:
        marked = "would mark" if dry_run else "marked"
        click.echo(f"{marked} {len(plan.retired)} versions deleted: {_listing(plan.retired)}")
    _print_totals(verb, "local", totals)
    if plan.kept_young:
        click.echo(
            f"  kept {plan.kept_young} unreferenced blobs newer than the grace period "
            f"({GRACE_SECONDS / 3600:g} h): a training may be about to list them"
        )
    if parked:
        click.echo(
            f"  {'would remove' if dry_run else 'removed'} {len(parked)} parked reproduction "
            "worktree(s) (the code of a finished reproduction, kept for the next)"
        )
    for line in remote_reports:
        click.echo(line)


def _listing(retired: list[RetiredVersion]) -> str:
    shown = [f"{version.model}@{version.version}" for version in retired[:10]]
    more = f" and {len(retired) - 10} more" if len(retired) > 10 else ""
    return ", ".join(shown) + more


def _print_totals(verb: str, where: str, totals: dict[str, tuple[int, int]]) -> None:
    count = sum(count for count, _ in totals.values())
    size = sum(size for _, size in totals.values())
    click.echo(f"{where}: {verb} {format_size(size)}")
    for kind in KIND_ORDER:
        if kind not in totals or (totals[kind][0] == 0 and kind != RUN_FOLDERS):
            continue
        kind_count, kind_size = totals[kind]
        click.echo(f"  {KIND_TITLES[kind]:<15} {kind_count:>7}  {format_size(kind_size):>10}")
    if count == 0:
        click.echo("  nothing to free")


def _collect_remote(
    db: Database, name: str, dry_run: bool, older_than: float | None, now: float
) -> str:
    from agent.remote.cache_gc import collect_remote_cache

    freed = collect_remote_cache(db, name, dry_run=dry_run, older_than_days=older_than, now=now)
    if freed.busy:
        return (
            f"remote {name}: an upload to its cache is in progress; nothing was collected there "
            "(run gc again once it is done)"
        )
    verb = "would free" if dry_run else "freed"
    return (
        f"remote {name}: {verb} {format_size(freed.blob_bytes + freed.run_folder_bytes)}\n"
        f"  {'cache blobs':<15} {freed.blobs:>7}  {format_size(freed.blob_bytes):>10}\n"
        f"  {'run folders':<15} {freed.run_folders:>7}  {format_size(freed.run_folder_bytes):>10}"
    )
