"""`watchkeeper agent|watch|alerts`: run the agent, choose what it watches, read its alerts."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from agent.daemon import lifecycle, watchlist
from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths


def _paths() -> WatchkeeperPaths:
    return WatchkeeperPaths.from_environment()


def _client() -> Any:
    """A client of the running agent, or None (the command then works on the ledger itself)."""
    from agent.client import AgentClient

    paths = _paths()
    if lifecycle.running_pid(paths) is None:
        return None
    return AgentClient.connect_or_none(paths.socket)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


# -- agent -----------------------------------------------------------------------------------
@click.group()
def agent() -> None:
    """Run, start, stop or install the background agent."""


@agent.command("run")
@click.option("--quiet", is_flag=True, help="Log only to the log file, not to stderr.")
def agent_run(quiet: bool) -> None:
    """Run the agent in the foreground, logging to stderr and to the log file."""
    from agent.daemon.main import run_foreground

    sys.exit(run_foreground(_paths(), to_stderr=not quiet))


@agent.command("start")
def agent_start() -> None:
    """Start the agent in the background (one per user)."""
    pid = lifecycle.start_background(_paths())
    click.echo(f"agent started (pid {pid}); socket {_paths().socket}")


@agent.command("stop")
def agent_stop() -> None:
    """Stop the running agent (SIGTERM; done within 5 seconds)."""
    pid = lifecycle.stop_agent(_paths())
    if pid is None:
        click.echo("the agent is not running")
    else:
        click.echo(f"agent stopped (pid {pid})")


@agent.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def agent_status(as_json: bool) -> None:
    """Say whether the agent runs, what it watches and how it is doing. Exit 3 when stopped."""
    paths = _paths()
    client = _client()
    if client is None:
        pid = lifecycle.running_pid(paths)
        state = {"running": False, "pid": pid if pid and pid > 0 else None}
        if as_json:
            click.echo(json.dumps(state))
        elif pid == -1:
            click.echo("the agent is stopping (it still holds its lock); try again in a moment")
        elif pid:
            click.echo(
                f"the agent (pid {pid}) holds its lock but does not answer on {paths.socket}"
            )
        else:
            click.echo("the agent is not running; start it with `watchkeeper agent start`")
        sys.exit(3)
    with client:
        status = client.call("status")
    if as_json:
        click.echo(json.dumps({"running": True, **status}, indent=2))
        return
    console = Console()
    console.print(
        f"agent running: pid {status['pid']}, up {status['uptime_seconds']:.0f} s, "
        f"{status['open_alerts']} open alerts, {status['active_runs']} active runs"
    )
    table = Table("watched", "kind", "how", "note")
    for watch in status["watches"]:
        note = watch["reason"] or ""
        if watch["unreadable"]:
            note = (note + " " if note else "") + f"{len(watch['unreadable'])} unreadable folders"
        if watch.get("skipped"):
            note = (note + " " if note else "") + f"{len(watch['skipped'])} entries skipped"
        table.add_row(watch["path"], watch["kind"], watch["mode"], note)
    console.print(table)
    for retry in status.get("retrying", []):
        console.print(
            f"retrying {retry['job']} (attempt {retry['attempts'] + 1} at "
            f"{_when(retry['next_at'])}): {retry['error']}",
            markup=False,
        )
    for job in status.get("schedule", []):
        console.print(f"next {job['name']}: {job['next_run']}")


@agent.command("install")
def agent_install() -> None:
    """Write a systemd user unit and an XDG autostart entry; enable nothing."""
    files = lifecycle.install_units(_paths())
    click.echo(f"wrote {files.systemd_unit}")
    click.echo(f"wrote {files.autostart_entry} (disabled: Hidden=true)")
    click.echo("Nothing was enabled. Choose one of:")
    click.echo(
        "  systemd:   systemctl --user daemon-reload && "
        f"systemctl --user enable --now {lifecycle.UNIT_NAME}"
    )
    click.echo(
        f"  autostart: sed -i 's/^Hidden=true/Hidden=false/' {files.autostart_entry}"
        "   (desktop sessions without systemd)"
    )


# -- watch -----------------------------------------------------------------------------------
@click.group()
def watch() -> None:
    """Choose the repos and data folders the agent watches."""


@watch.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--data", is_flag=True, help="Watch PATH as a data file or folder, not a repo.")
def watch_add(path: Path, data: bool) -> None:
    """Watch a git repo (or, with --data, a data file or folder)."""
    client = _client()
    if client is not None:
        with client:
            entry = client.call("watch_add", path=str(path), data=data)
        click.echo(f"watching {entry['kind']} {entry['path']} ({entry['mode']})")
        return
    added = watchlist.add_watch(path, data=data)
    click.echo(f"added {added.kind} {added.path}; the agent watches it once started")


@watch.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def watch_list(as_json: bool) -> None:
    """List watched paths (and, when the agent runs, how each is watched)."""
    client = _client()
    if client is not None:
        with client:
            rows = client.call("watch_list")
    else:
        from agent.config import UserConfig

        paths = _paths()
        db = _ledger() if paths.ledger.exists() else None
        rows = [
            {
                "path": str(e.path),
                "kind": e.kind,
                "mode": "agent not running",
                "reason": "",
                "why": e.why,
            }
            for e in watchlist.watch_scope(UserConfig.load(paths.config), db)
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("nothing is watched; add a repo with `watchkeeper watch add PATH`")
        return
    table = Table("path", "kind", "why", "how", "note")
    for row in rows:
        note = str(row.get("reason") or "")
        for problem in row.get("skipped") or []:
            note += ("\n" if note else "") + f"skipped {problem}"
        table.add_row(row["path"], row["kind"], str(row.get("why") or ""), row["mode"], note)
    Console().print(table)


@watch.command("remove")
@click.argument("path", type=click.Path(path_type=Path))
def watch_remove(path: Path) -> None:
    """Stop watching PATH."""
    client = _client()
    if client is not None:
        with client:
            removed = client.call("watch_remove", path=str(path))
        names = [row["path"] for row in removed]
    else:
        paths = _paths()
        db = _ledger() if paths.ledger.exists() else None
        names = [str(e.path) for e in watchlist.remove_watch(path, db=db)]
    click.echo("no longer watching " + ", ".join(names))


# -- alerts ----------------------------------------------------------------------------------
def _ledger() -> Any:
    from agent.ledger import open_ledger

    return open_ledger(_paths().ledger)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as JSON.")
@click.option("--all", "show_all", is_flag=True, help="Include acknowledged and resolved alerts.")
@click.pass_context
def alerts(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """List open alerts (with --all, acknowledged and resolved ones too).

    An alert is resolved by itself when what it warned about is over (a newer version is
    fresh, the change was reverted); acknowledging one only hides it: a stale model stays
    stale in `status`, the app and the tray. `alerts ack ID` acknowledges one.
    """
    if ctx.invoked_subcommand is not None:
        return
    client = _client()
    if client is not None:
        with client:
            rows = client.call("alerts", all=show_all)
    else:
        from agent.daemon.alerts import list_alerts

        rows = list_alerts(_ledger(), include_acknowledged=show_all)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no alerts" if show_all else "no open alerts")
        return
    table = Table("id", "when", "kind", "model", "message", "state")
    for row in rows:
        message = str(row["message"])
        for update in row.get("updates") or []:
            message += f"\n  {_when(update['at'])}: {update['message']}"
        state = str(row.get("state") or "")
        if row.get("resolution"):
            state += f" ({row['resolution']})"
        table.add_row(
            str(row["id"]),
            _when(row["created_at"]),
            str(row["kind"]),
            str(row.get("model") or "-"),
            message,
            state,
        )
    Console(width=max(120, Console().width)).print(table)


@alerts.command("ack")
@click.argument("alert_ids", metavar="ID...", type=int, nargs=-1)
@click.option("--all", "ack_all", is_flag=True, help="Acknowledge every open alert.")
def alerts_ack(alert_ids: tuple[int, ...], ack_all: bool) -> None:
    """Acknowledge alerts by id (or every open one with --all); hides them, fixes nothing."""
    if not alert_ids and not ack_all:
        raise WatchkeeperError("give the ids of the alerts to acknowledge, or --all")
    if alert_ids and ack_all:
        raise WatchkeeperError("give alert ids or --all, not both")
    client = _client()
    if client is not None:
        with client:
            if ack_all:
                rows = client.call("ack_alert", all=True)
            else:
                rows = client.call("ack_alert", ids=list(alert_ids))
    else:
        from agent.daemon.alerts import acknowledge, acknowledge_all

        db = _ledger()
        rows = acknowledge_all(db) if ack_all else [acknowledge(db, i) for i in alert_ids]
    if ack_all and not rows:
        click.echo("no open alerts to acknowledge")
    for row in rows:
        if not row.get("acknowledged_at"):
            raise WatchkeeperError(f"alert {row['id']} could not be acknowledged")
        click.echo(f"acknowledged alert {row['id']}: {row['message']}")
