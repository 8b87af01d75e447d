"""`watchkeeper push`, `pull` and `ci`: share versions through git and gate pull requests."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.errors import WatchkeeperError
from agent.project.git import repo_root
from agent.share import gitref

REMOTE_OPTION = click.option(
    "--remote-name",
    default=gitref.DEFAULT_REMOTE,
    show_default=True,
    help="The git remote whose ledger ref to use.",
)


if TYPE_CHECKING:
    from sqlite_utils import Database


def _root() -> Path:
    return repo_root(Path.cwd())


def _load_sqlite_utils_without_numpy() -> None:
    """Import sqlite-utils without letting it import numpy.

    Push and pull never hand sqlite-utils numpy values, and importing numpy would be a third of
    their start-up; a later `import numpy` in the process works as usual.
    """
    if "sqlite_utils" not in sys.modules and "numpy" not in sys.modules:
        sys.modules["numpy"] = None  # type: ignore[assignment]
        try:
            import sqlite_utils  # noqa: F401
        finally:
            del sys.modules["numpy"]


@contextmanager
def _lean_ledger() -> Iterator[Database]:
    """The ledger, for push and pull (see `_load_sqlite_utils_without_numpy`)."""
    _load_sqlite_utils_without_numpy()
    from agent.ledger import ledger_errors, open_ledger
    from agent.paths import WatchkeeperPaths

    path = WatchkeeperPaths.from_environment().ledger
    db = open_ledger(path)
    try:
        with ledger_errors(path):
            yield db
    finally:
        db.close()


@click.command()
@click.argument("models", nargs=-1)
@REMOTE_OPTION
@click.option(
    "--no-blobs",
    is_flag=True,
    help="Share records only: artifacts, data and diffs stay on this machine even when "
    "[share] store is set.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was pushed as JSON.")
@click.pass_context
def push(
    ctx: click.Context, models: tuple[str, ...], remote_name: str, no_blobs: bool, as_json: bool
) -> None:
    """Share this repo's finished versions (of MODELS, or all) and their aliases.

    The records go to `refs/watchkeeper/ledger` on the git remote; your branches, index and
    working tree are not touched. Pushing at the same time as a teammate is safe: the record
    sets are merged and the push retried. Exits 1 when the remote holds another record under
    one of your ids (each is named; the rest is pushed).
    """
    _load_sqlite_utils_without_numpy()
    from agent.ledger.artifacts import ArtifactStore
    from agent.paths import WatchkeeperPaths
    from agent.share.blob_store import configured_store
    from agent.share.sync import push as push_records

    root = _root()
    store = None if no_blobs else configured_store(root)
    try:
        with _lean_ledger() as db:
            result = push_records(
                db,
                root,
                remote_name,
                list(models) or None,
                store=store,
                local_store=ArtifactStore(WatchkeeperPaths.from_environment().artifacts),
            )
    finally:
        if store is not None:
            store.close()
    blobs = result.blobs
    if as_json:
        click.echo(
            json.dumps(
                {
                    "remote": result.remote,
                    "url": result.url,
                    "versions": result.pushed_versions,
                    "aliases": result.pushed_aliases,
                    "already": result.already,
                    "attempts": result.attempts,
                    "clashes": result.clashes,
                    "commit": result.commit,
                    "blobs": None
                    if blobs is None
                    else {
                        "store": blobs.store,
                        "uploaded": blobs.uploaded,
                        "present": blobs.present,
                    },
                },
                indent=2,
            )
        )
    else:
        if blobs is not None:
            click.echo(
                f"sent {blobs.uploaded} blobs to {blobs.store} ({blobs.present} already there)"
            )
        if result.pushed_versions or result.pushed_aliases:
            click.echo(
                f"pushed {result.pushed_versions} versions and {result.pushed_aliases} alias "
                f"settings to {result.remote} ({result.url}) {gitref.LEDGER_REF}"
                + (f" after {result.attempts} tries" if result.attempts > 1 else "")
            )
        else:
            click.echo(f"{result.remote} already has every version ({result.already} records)")
    for path in result.clashes:
        click.echo(
            f"error: {gitref.LEDGER_REF}:{path} on {result.remote} has other content than "
            "your record of that id (an id clash); the remote's record stays, yours was not "
            "pushed",
            err=True,
        )
    if result.clashes:
        ctx.exit(1)


@click.command()
@REMOTE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print what was pulled as JSON.")
@click.pass_context
def pull(ctx: click.Context, remote_name: str, as_json: bool) -> None:
    """Bring teammates' versions and aliases from the git remote into your ledger.

    They show in `models list` with their author, are judged stale or fresh like your own, and
    a running agent checks them at once. Exits 1 when a record was refused (each is named).
    """
    _load_sqlite_utils_without_numpy()
    from agent.share.sync import notify_agent
    from agent.share.sync import pull as pull_records

    root = _root()
    with _lean_ledger() as db:
        result = pull_records(db, root, remote_name)
    applied = result.applied
    agent_told = notify_agent(root, result) if applied.versions or applied.aliases else False
    if as_json:
        click.echo(
            json.dumps(
                {
                    "remote": result.remote,
                    "url": result.url,
                    "commit": result.commit,
                    "versions": applied.versions,
                    "aliases": applied.aliases,
                    "already": applied.already,
                    "refused": [{"path": p, "reason": r} for p, r in applied.refused],
                    "agent_notified": agent_told,
                    "newer": result.newer,
                },
                indent=2,
            )
        )
    else:
        if result.commit is None:
            click.echo(f"{remote_name} ({result.url}) has no shared ledger yet; nothing to pull")
        for version in applied.versions:
            author = version["author"]
            click.echo(
                f"pulled {version['model']} v{version['version']} ({version['id'][:10]}) by "
                f"{author.get('name')} <{author.get('email')}>"
            )
        for entry in result.newer:
            previous = entry["previous"]
            click.echo(
                f"{entry['model']} v{entry['version']} by {entry['author'] or 'a teammate'} is "
                "newer than "
                + (f"your current v{previous['version']}" if previous else "anything you had")
                + f"; the current version is now v{entry['current']}"
            )
        if result.commit is not None:
            click.echo(
                f"{len(applied.versions)} new versions, {applied.aliases} alias settings from "
                f"{remote_name}; {applied.already} already here"
            )
    for path, reason in applied.refused:
        click.echo(f"error: {gitref.LEDGER_REF}:{path}: refused: {reason}", err=True)
    if applied.refused:
        ctx.exit(1)


@click.command()
@click.option(
    "--base",
    metavar="REF",
    help="Compare with the merge base of HEAD and REF (default: the remote's default branch).",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report as Markdown (for a pull-request comment).",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON."
)
@click.option(
    "--fail-on",
    type=click.Choice(["never", "stale", "never-trained"]),
    default="stale",
    show_default=True,
    help="Exit 1 when a model is made stale (stale), also when one was never trained "
    "(never-trained), or not at all (never).",
)
@REMOTE_OPTION
@click.pass_context
def ci(
    ctx: click.Context,
    base: str | None,
    markdown_path: Path | None,
    json_path: Path | None,
    fail_on: str,
    remote_name: str,
) -> None:
    """Say which models the change under review makes stale, for a CI job.

    Fetches the shared ledger, reads watchkeeper.toml and judges each model's current version
    against the change from --base. Exits 0 when the gate passes, 1 when it fails, 2 on error.
    """
    from agent.cli import common
    from agent.share.ci import markdown, run_ci, write_reports

    try:
        root = _root()
    except WatchkeeperError as error:
        raise WatchkeeperError(f"watchkeeper ci: {error}") from error
    with common.ledger_session(settle_runs=False) as db:
        report = run_ci(db, root, base=base, remote_name=remote_name)
    write_reports(report, fail_on, markdown_path, json_path)
    click.echo(markdown(report, fail_on), nl=False)
    ctx.exit(report.exit_code(fail_on))
