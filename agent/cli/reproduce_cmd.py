"""The `reproduce` command: rebuild a version from its kept code, data and params, and compare."""

from __future__ import annotations

import sys

import click
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn
from rich.table import Table

from agent.cli import common
from agent.cli.models_cmds import resolve
from agent.runs.executor import Run
from agent.runs.reproduce import DEFAULT_TOLERANCE, DIFFERS, EXACTLY, label
from agent.runs.reproduce import reproduce as reproduce_version

EXIT_NOT_REPRODUCED = 1


@click.command()
@click.argument("reference", metavar="REF")
@click.option("--remote", metavar="NAME", help="Train the reproduction on this remote.")
@click.option(
    "--tolerance",
    type=float,
    default=DEFAULT_TOLERANCE,
    show_default=True,
    help="How far a metric may differ (relative or absolute) to count as reproduced.",
)
@click.option("--no-run", is_flag=True, help="Only lay out the worktree and data; print where.")
@click.option(
    "--allow-missing-data",
    is_flag=True,
    help="Use the current data for files whose content was not kept (not a reproduction).",
)
@click.pass_context
def reproduce(
    ctx: click.Context,
    reference: str,
    remote: str | None,
    tolerance: float,
    no_run: bool,
    allow_missing_data: bool,
) -> None:
    """Rebuild REF (such as churn@3) in a temporary worktree from its commit, kept
    uncommitted changes, kept data and params; train it and compare with the original.

    Exits 0 when it is reproduced exactly or its metrics are within the tolerance, 1 when
    it differs.
    """
    console = common.console(err=True)
    out = sys.stdout.buffer
    progress = Progress(
        TextColumn("restoring data"), BarColumn(), DownloadColumn(), console=console, transient=True
    )
    task: list[TaskID] = []

    def on_restore(done: int, total: int) -> None:
        if not task:
            progress.start()
            task.append(progress.add_task("data", total=total))
        progress.update(task[0], completed=done, total=total)

    def on_log(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    def on_start(run: Run, version: int) -> None:
        console.print(f"[bold]reproducing {escape(label(original))} as v{version}[/] run {run.id}")

    with common.ledger_session() as db:
        original = resolve(db, reference)
        try:
            done = reproduce_version(
                db,
                original,
                remote=remote,
                tolerance=tolerance,
                allow_missing_data=allow_missing_data,
                no_run=no_run,
                on_restore=on_restore,
                on_log=on_log,
                on_start=on_start,
            )
        finally:
            progress.stop()
    worktree = done.materialised.worktree
    if done.materialised.current_data:
        console.print(
            f"[yellow]not a reproduction[/]: the current data was used for "
            f"{len(done.materialised.current_data)} file(s) whose content was not kept: "
            + escape(", ".join(done.materialised.current_data[:20]))
        )
    if no_run:
        console.print(
            f"{escape(label(original))} laid out in {worktree} "
            f"({done.materialised.restored_files} data files restored); remove it with "
            f"`git worktree remove --force {worktree}`",
            markup=False,
        )
        click.echo(str(worktree))
        return
    assert done.result is not None and done.comparison is not None
    for note in done.result.notes:
        console.print(f"[yellow]note[/]: {escape(note)}")
    comparison = done.comparison
    table = Table("", escape(label(original)), f"v{done.result.version}", "", title_justify="left")
    for what, before, after, mark in comparison.rows:
        table.add_row(escape(what), escape(before), escape(after), escape(mark))
    common.console().print(table)
    colour = {EXACTLY: "green", DIFFERS: "red"}.get(comparison.verdict, "yellow")
    common.console().print(
        f"[{colour}]{comparison.verdict}[/]: v{done.result.version} "
        f"(run {done.result.run_id}) is a reproduction of {escape(label(original))}"
    )
    if comparison.exit_code:
        ctx.exit(EXIT_NOT_REPRODUCED)
