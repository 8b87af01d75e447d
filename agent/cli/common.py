"""What the CLI's command modules share: the rich console and a ledger session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from sqlite_utils import Database

from agent.ledger import ledger_errors, open_ledger
from agent.paths import WatchkeeperPaths

# Width used when output goes to a pipe or file, so tables are not cut at 80 columns.
PIPE_WIDTH = 160


def console(err: bool = False) -> Console:
    """A rich console on stdout (or stderr), wide enough for tables when not on a terminal."""
    terminal = Console(stderr=err, highlight=False, soft_wrap=True)
    if not terminal.is_terminal:
        terminal.width = PIPE_WIDTH
    return terminal


@contextmanager
def ledger_session(*, settle_runs: bool = True) -> Iterator[Database]:
    """The ledger, with SQLite errors made readable and closed afterwards.

    With `settle_runs`, local runs whose supervising command died are recorded first, so that
    what the command shows is current.
    """
    paths = WatchkeeperPaths.from_environment()
    db = open_ledger(paths.ledger)
    try:
        with ledger_errors(paths.ledger):
            if settle_runs:
                from agent.runs.training import reconcile_runs

                reconcile_runs(db, paths)
            yield db
    finally:
        db.close()
