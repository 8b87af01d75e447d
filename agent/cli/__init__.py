"""The `watchkeeper` command line: a thin layer over the agent library, loaded lazily."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sqlite3
from pathlib import Path
from typing import Any

import click

from agent import __version__
from agent.disk import disk_full_error, is_disk_full
from agent.errors import WatchkeeperError
from agent.paths import PRIVATE_UMASK

# name -> "module:attribute". Modules are imported only when their command runs or --help lists it.
SUBCOMMANDS: dict[str, str] = {
    "coding-time": "agent.cli.coding_time_cmd:coding_time",
    "init": "agent.cli.ledger_cmds:init",
    "train": "agent.cli.ledger_cmds:train",
    "status": "agent.cli.ledger_cmds:status",
    "reproduce": "agent.cli.reproduce_cmd:reproduce",
    "models": "agent.cli.models_cmds:models",
    "runs": "agent.cli.ledger_cmds:runs",
    "data": "agent.cli.data_cmds:data",
    "agent": "agent.cli.agent_cmds:agent",
    "watch": "agent.cli.agent_cmds:watch",
    "alerts": "agent.cli.agent_cmds:alerts",
    "remote": "agent.cli.remote_cmds:remote",
    "app": "agent.cli.app_cmd:app",
    "demo": "agent.cli.demo_cmd:demo",
    "push": "agent.cli.share_cmds:push",
    "pull": "agent.cli.share_cmds:pull",
    "ci": "agent.cli.share_cmds:ci",
    "gc": "agent.cli.gc_cmd:gc",
    "import": "agent.cli.interop_cmds:import_group",
    "export": "agent.cli.interop_cmds:export_group",
}


def _module_exists(module_name: str) -> bool:
    return importlib.util.find_spec(module_name) is not None


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use, so that `--help` stays fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [
            name for name, target in SUBCOMMANDS.items() if _module_exists(target.split(":")[0])
        ]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = target.split(":")
        if not _module_exists(module_name):
            return None
        command: Any = getattr(importlib.import_module(module_name), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        # Runs, artifacts and the ledger a command creates are the user's alone.
        previous_umask = os.umask(PRIVATE_UMASK)
        try:
            try:
                return super().invoke(ctx)
            except (OSError, sqlite3.Error) as error:
                if not is_disk_full(error):
                    raise
                raise disk_full_error(_path_of(error)) from error
        except WatchkeeperError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(error.exit_code)
        finally:
            os.umask(previous_umask)


def _path_of(error: OSError | sqlite3.Error) -> Path:
    """The file a disk-full error is about: the one the OS names, else the ledger."""
    filename = getattr(error, "filename", None)
    if filename:
        return Path(os.fsdecode(filename))
    from agent.paths import WatchkeeperPaths

    return WatchkeeperPaths.from_environment().ledger


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="watchkeeper")
def main() -> None:
    """Watchkeeper: a local MLOps desk.

    It keeps a ledger of every model version and what it was built from, warns when code or
    data change under a model, trains locally, over SSH or on Slurm (one run, or a sweep of
    params), reproduces any version, shares versions with your team through the repo's git
    remote or an MLflow tracking server (`export mlflow`), gates pull requests (`ci`), and
    estimates your own coding time offline. Files live in $WATCHKEEPER_HOME when it is set.
    """
