"""`watchkeeper demo [PATH]`: write, register, train and watch an example project (or remove it)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click

from agent.cli import common
from agent.daemon import lifecycle, watchlist
from agent.errors import WatchkeeperError
from agent.ledger import write_transaction
from agent.ledger.queries import forget_repo, register_repo
from agent.paths import WatchkeeperPaths
from agent.project.demo import MARKER, MODEL, DemoProject, is_demo_project, write_demo_project

NEXT_STEP_WIDTH = 40


def default_demo_root(paths: WatchkeeperPaths) -> Path:
    """`<data dir>/demo/churn-demo`: under WATCHKEEPER_HOME when it is set."""
    return paths.data_dir / "demo" / "churn-demo"


def _agent_client(paths: WatchkeeperPaths) -> Any:
    from agent.client import AgentClient

    if lifecycle.running_pid(paths) is None:
        return None
    return AgentClient.connect_or_none(paths.socket)


@click.command("demo")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--remove", is_flag=True, help="Delete the demo project and forget it.")
@click.option("--no-agent", is_flag=True, help="Do not start the agent afterwards.")
@click.pass_context
def demo(ctx: click.Context, path: Path | None, remove: bool, no_agent: bool) -> None:
    """Create an example project (a git repo with a CSV, a NumPy model and watchkeeper.toml),
    register it, train it and start the agent, so that there is something to look at.

    PATH defaults to the `demo/churn-demo` folder in Watchkeeper's data folder. With --remove,
    delete the demo project (only one that `watchkeeper demo` created) and forget it.
    """
    paths = WatchkeeperPaths.from_environment().ensure()
    root = (path or default_demo_root(paths)).expanduser().absolute()
    if remove:
        _remove(paths, root)
        return
    if is_demo_project(root):
        click.echo(f"the demo project {root} exists already; training it again.")
        project = DemoProject(root)
    else:
        project = write_demo_project(root)
        click.echo(
            f"created the demo project {root}: a git repo with train.py, watchkeeper.toml and "
            f"{project.data_file.relative_to(root)} (git-ignored data)"
        )
    with common.ledger_session() as db, write_transaction(db):
        register_repo(db, root)
    click.echo(f"registered {root} in the ledger")
    from agent.cli.ledger_cmds import train

    ctx.invoke(train, model=MODEL, params=(), remote=None, repo=root)
    _watch(paths, project, start_agent=not no_agent)
    _print_next_steps(project)


def _watch(paths: WatchkeeperPaths, project: DemoProject, *, start_agent: bool) -> None:
    """Watch the repo and its data file, through the running agent or in the config."""
    client = _agent_client(paths)
    if client is not None:
        with client:
            client.call("watch_add", path=str(project.root), data=False)
            client.call("watch_add", path=str(project.data_file), data=True)
        click.echo(f"the running agent now watches {project.root}")
        return
    watchlist.add_watch(project.root, data=False)
    watchlist.add_watch(project.data_file, data=True)
    if not start_agent:
        click.echo(f"added {project.root} to the watch list; start the agent to watch it")
        return
    pid = lifecycle.start_background(paths)
    click.echo(f"agent started (pid {pid}); it watches {project.root}")


def _print_next_steps(project: DemoProject) -> None:
    data = project.data_file
    click.echo("")
    click.echo("Next, try:")
    steps = [
        ("watchkeeper status", f"{MODEL} is fresh"),
        (f"echo '36,80.5,4,month-to-month,east,1' >> {data}", "change the data under the model"),
        ("watchkeeper status", f"{MODEL} is stale: data changed in {data.name}"),
        ("watchkeeper alerts", "what the agent noticed"),
        (f"watchkeeper train {MODEL}", "a new version, fresh again"),
        (f"watchkeeper models diff {MODEL}@1 {MODEL}@2", "what changed between them"),
        ("watchkeeper app", "the same in the desktop app"),
        ("watchkeeper demo --remove", "delete the demo project and forget it"),
    ]
    width = max(len(command) for command, _ in steps if len(command) <= NEXT_STEP_WIDTH)
    for command, why in steps:
        click.echo(f"  {command:<{width}}  # {why}")


def _remove(paths: WatchkeeperPaths, root: Path) -> None:
    if not root.exists():
        raise WatchkeeperError(f"{root} does not exist; there is no demo project to remove.")
    if not is_demo_project(root):
        raise WatchkeeperError(
            f"{root} is not a demo project (no {MARKER} written by `watchkeeper demo`); "
            "nothing was removed."
        )
    project = DemoProject(root)
    watched = {entry.path for entry in watchlist.watched()}
    with common.ledger_session(settle_runs=False) as db, write_transaction(db):
        run_dirs = forget_repo(db, root)
    _unwatch(paths, [p for p in (project.root, project.data_file) if p in watched])
    for run_dir in run_dirs:
        if run_dir.parent == paths.runs:
            shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(root)
    click.echo(f"removed the demo project {root} and forgot it ({len(run_dirs)} runs)")


def _unwatch(paths: WatchkeeperPaths, targets: list[Path]) -> None:
    """Stop watching the demo's repo and data file. The ledger rows go first, so that a rescan
    in between cannot watch the data file again as a data dep of the demo model."""
    client = _agent_client(paths)
    for target in targets:
        if client is not None:
            client.call("watch_remove", path=str(target))
        else:
            watchlist.remove_watch(target)
    if client is not None:
        client.close()
