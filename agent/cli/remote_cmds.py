"""The `remote` commands: add, list, remove, trust and test SSH and Slurm remotes."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from agent.errors import WatchkeeperError
from agent.remote.config import (
    REMOTE_KINDS,
    RemoteConfig,
    list_remotes,
    load_remote,
    remove_remote,
    save_remote,
    target_for,
)
from agent.remote.connection import RemoteSession, handshake
from agent.remote.hostkeys import HostKeyStore, describe_key


@click.group()
def remote() -> None:
    """Remotes to train on: SSH hosts and Slurm clusters (reached over SSH)."""


@remote.command("add")
@click.argument("name")
@click.option("--host", required=True, help="Host name or ~/.ssh/config alias.")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port (default from ssh config).")
@click.option("--user", help="Login name (default from ssh config, else yours).")
@click.option("--key", "key", help="Private key file (ssh-agent keys are tried first).")
@click.option("--kind", type=click.Choice(REMOTE_KINDS), default="ssh", show_default=True)
@click.option("--workdir", default="~/.watchkeeper", show_default=True, help="Remote folder.")
@click.option("--python", "python", default="python3", show_default=True, help="Remote python.")
@click.option("--partition", help="Slurm partition.")
@click.option("--sbatch-arg", "sbatch_args", multiple=True, help="Extra sbatch argument.")
def add(
    name: str,
    host: str,
    port: int | None,
    user: str | None,
    key: str | None,
    kind: str,
    workdir: str,
    python: str,
    partition: str | None,
    sbatch_args: tuple[str, ...],
) -> None:
    """Add (or replace) the remote NAME in config.toml. No password is ever stored."""
    if kind != "slurm" and (partition or sbatch_args):
        raise WatchkeeperError("--partition and --sbatch-arg need --kind slurm.")
    remote_config = RemoteConfig(
        name=name,
        host=host,
        port=port,
        user=user,
        key=key,
        kind=kind,  # type: ignore[arg-type]
        workdir=workdir,
        python=python,
        partition=partition,
        sbatch_args=tuple(sbatch_args),
    )
    save_remote(remote_config)
    click.echo(
        f"added remote {name} ({kind}, {host}). Next: `watchkeeper remote trust {name}` "
        f"to check its host key, then `watchkeeper remote test {name}`."
    )


@remote.command("list")
def list_command() -> None:
    """List the configured remotes."""
    remotes = list_remotes()
    if not remotes:
        click.echo("no remotes yet; add one with `watchkeeper remote add NAME --host HOST`.")
        return
    table = Table("name", "kind", "host", "port", "user", "workdir", "python", "slurm")
    for item in remotes:
        slurm = " ".join(
            ([f"--partition={item.partition}"] if item.partition else []) + list(item.sbatch_args)
        )
        table.add_row(
            item.name,
            item.kind,
            item.host,
            str(item.port or ""),
            item.user or "",
            item.workdir,
            item.python,
            slurm,
        )
    Console(highlight=False, width=160).print(table)


@remote.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Remove the remote NAME from config.toml (its trusted host key stays)."""
    remove_remote(name)
    click.echo(f"removed remote {name}")


@remote.command("trust")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Trust without asking (for scripts).")
def trust(name: str, yes: bool) -> None:
    """Show the host key of NAME and, once you confirm, trust it."""
    remote_config = load_remote(name)
    target = target_for(remote_config)
    store = HostKeyStore.default()
    transport = handshake(target, store, name, check=False)
    try:
        key = transport.get_remote_server_key()
    finally:
        transport.close()
    host = target.known_hosts_name
    if any(known == key for known, _ in store.known_keys(host)):
        click.echo(f"{host} is already trusted: {describe_key(key)}")
        return
    known = store.known_keys(host)
    if known:
        listed = "; ".join(f"{describe_key(k)} in {path}" for k, path in known)
        raise WatchkeeperError(
            f"the host key of {host} CHANGED: it presents {describe_key(key)}, the key on record "
            f"is {listed}. If the server was reinstalled, delete the old line from that file "
            "first; otherwise someone may be intercepting the connection."
        )
    click.echo(f"host key of {host}: {describe_key(key)}")
    if not yes and not click.confirm("Trust this key?", default=False):
        raise WatchkeeperError(f"not trusted; nothing written to {store.own_file}.")
    store.trust(host, key)
    click.echo(f"trusted; stored in {store.own_file}")


@remote.command("test")
@click.argument("name")
def test(name: str) -> None:
    """Check NAME: host key and login, python, git, free disk in the workdir, Slurm partitions."""
    remote_config = load_remote(name)
    problems = 0

    def report(ok: bool, what: str, detail: str) -> None:
        nonlocal problems
        problems += not ok
        click.echo(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")

    session = RemoteSession(remote_config, retry_for=0)
    try:
        connection = session.connection()
    except WatchkeeperError as error:
        report(False, "connect", str(error))
        raise SystemExit(1) from error
    key = connection.transport.get_remote_server_key()
    report(True, "host key", f"{session.target.known_hosts_name} {describe_key(key)} (trusted)")
    report(True, "login", session.target.describe())
    try:
        facts = session.helper_json("probe", remote_config.workdir)
    except WatchkeeperError as error:
        report(False, "python", str(error))
        facts = None
    if facts is not None:
        blake = "with blake3" if facts["blake3"] else "without blake3: blobs checked by CRC-32"
        report(True, "python", f"{remote_config.python} is Python {facts['python']} ({blake})")
        free_gb = facts["free_bytes"] / 1e9
        report(
            free_gb >= 1.0,
            "disk",
            f"{free_gb:.1f} GB free in {facts['measured_in']}"
            + ("" if free_gb >= 1.0 else "; free some space or choose another --workdir"),
        )
    git = session.run(["git", "--version"])
    report(
        git.exit_code == 0,
        "git",
        git.text.strip()
        if git.exit_code == 0
        else "git not found; install it there if your train command needs it",
    )
    if remote_config.kind == "slurm":
        sinfo = session.run(["sinfo", "-h", "-o", "%P %a %D %t"])
        if sinfo.exit_code == 0 and sinfo.text.strip():
            partitions = ", ".join(line.strip() for line in sinfo.text.strip().splitlines())
            report(True, "slurm", f"partitions (name state nodes node-state): {partitions}")
        else:
            detail = sinfo.stderr.decode(errors="replace").strip() or "no partitions"
            report(
                False,
                "slurm",
                f"sinfo failed ({detail}); check that Slurm's commands are on the login PATH "
                "and slurmctld is up",
            )
    session.drop()
    if problems:
        raise SystemExit(1)
