"""Remotes as configured in `[remotes.NAME]` of config.toml, resolved through ~/.ssh/config."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import paramiko
import tomlkit

from agent.config import UserConfig
from agent.errors import WatchkeeperError

RemoteKind = Literal["ssh", "slurm"]
REMOTE_KINDS: tuple[RemoteKind, ...] = ("ssh", "slurm")
DEFAULT_WORKDIR = "~/.watchkeeper"
REMOTE_FIELDS = (
    "host",
    "port",
    "user",
    "key",
    "kind",
    "workdir",
    "python",
    "partition",
    "sbatch_args",
    "read_timeout_seconds",
)
DEFAULT_READ_TIMEOUT_SECONDS = 180.0
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RemoteConfig:
    """One configured remote: where it is, how to log in and how runs are started there.

    >>> RemoteConfig(name="gpu", host="gpu.example.org").workdir
    '~/.watchkeeper'
    """

    name: str
    host: str
    port: int | None = None
    user: str | None = None
    key: str | None = None
    kind: RemoteKind = "ssh"
    workdir: str = DEFAULT_WORKDIR
    python: str = "python3"
    partition: str | None = None
    sbatch_args: tuple[str, ...] = ()
    read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS

    def to_table(self) -> dict[str, Any]:
        """The TOML table stored under [remotes.NAME] (unset fields left out)."""
        table: dict[str, Any] = {"host": self.host, "kind": self.kind}
        for key in ("port", "user", "key", "partition"):
            value = getattr(self, key)
            if value is not None:
                table[key] = value
        if self.workdir != DEFAULT_WORKDIR:
            table["workdir"] = self.workdir
        if self.python != "python3":
            table["python"] = self.python
        if self.sbatch_args:
            table["sbatch_args"] = list(self.sbatch_args)
        if self.read_timeout_seconds != DEFAULT_READ_TIMEOUT_SECONDS:
            table["read_timeout_seconds"] = self.read_timeout_seconds
        return table

    @classmethod
    def from_table(cls, name: str, table: dict[str, Any], source: Path) -> RemoteConfig:
        """Read [remotes.NAME]; an unknown or mistyped field is an error naming it."""
        where = f"{source}: [remotes.{name}]"
        for key in table:
            if key not in REMOTE_FIELDS:
                raise WatchkeeperError(
                    f"{where}: unknown key {key!r}; known keys are {', '.join(REMOTE_FIELDS)}."
                )
        if not isinstance(table.get("host"), str) or not table["host"]:
            raise WatchkeeperError(f"{where}: 'host' is missing; set host = \"HOSTNAME\".")
        kind = table.get("kind", "ssh")
        if kind not in REMOTE_KINDS:
            raise WatchkeeperError(f"{where}: kind must be 'ssh' or 'slurm', not {kind!r}.")
        port = table.get("port")
        if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
            raise WatchkeeperError(f"{where}: port must be a number from 1 to 65535.")
        sbatch_args = table.get("sbatch_args", [])
        if not isinstance(sbatch_args, list) or not all(isinstance(a, str) for a in sbatch_args):
            raise WatchkeeperError(f"{where}: sbatch_args must be a list of strings.")
        read_timeout = table.get("read_timeout_seconds", DEFAULT_READ_TIMEOUT_SECONDS)
        if (
            not isinstance(read_timeout, int | float)
            or isinstance(read_timeout, bool)
            or not 0 < read_timeout <= 86400
        ):
            raise WatchkeeperError(
                f"{where}: read_timeout_seconds must be a number of seconds from 0 to 86400 "
                f"(how long a remote may stay silent), not {read_timeout!r}."
            )
        for key in ("user", "key", "workdir", "python", "partition"):
            if key in table and not isinstance(table[key], str):
                raise WatchkeeperError(f"{where}: {key} must be a string.")
        return cls(
            name=name,
            host=table["host"],
            port=port,
            user=table.get("user"),
            key=table.get("key"),
            kind=kind,
            workdir=table.get("workdir", DEFAULT_WORKDIR),
            python=table.get("python", "python3"),
            partition=table.get("partition"),
            sbatch_args=tuple(sbatch_args),
            read_timeout_seconds=float(read_timeout),
        )


def list_remotes(config: UserConfig | None = None) -> list[RemoteConfig]:
    """Every configured remote, sorted by name."""
    config = config or UserConfig.load()
    section = config.section("remotes")
    return [
        RemoteConfig.from_table(name, table, config.path)
        for name, table in sorted(section.items())
        if isinstance(table, dict)
    ]


def load_remote(name: str, config: UserConfig | None = None) -> RemoteConfig:
    """The remote called `name`; the error lists the ones that exist."""
    config = config or UserConfig.load()
    table = config.section("remotes").get(name)
    if not isinstance(table, dict):
        known = ", ".join(sorted(config.section("remotes"))) or "none yet"
        raise WatchkeeperError(
            f"no remote named {name!r} in {config.path} (configured: {known}); "
            f"add it with `watchkeeper remote add {name} --host HOST`."
        )
    return RemoteConfig.from_table(name, table, config.path)


def save_remote(remote: RemoteConfig, config: UserConfig | None = None) -> None:
    """Add or replace [remotes.NAME] and save config.toml."""
    if not NAME_PATTERN.match(remote.name):
        raise WatchkeeperError(
            f"remote name {remote.name!r} may hold only letters, digits, '.', '_' and '-'."
        )
    config = config or UserConfig.load()
    if "remotes" not in config.document:
        config.document["remotes"] = tomlkit.table(is_super_table=True)
    table = tomlkit.table()
    for key, value in remote.to_table().items():
        table[key] = value
    config.document["remotes"][remote.name] = table
    config.save()


def remove_remote(name: str, config: UserConfig | None = None) -> None:
    """Delete [remotes.NAME]; an unknown name is an error listing the known ones."""
    config = config or UserConfig.load()
    load_remote(name, config)
    config.remove("remotes", name)
    config.save()


@dataclass(frozen=True)
class SshTarget:
    """Where to connect after ~/.ssh/config was applied, and through which jump hosts."""

    alias: str
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]
    jumps: tuple[SshTarget, ...] = field(default=())

    @property
    def known_hosts_name(self) -> str:
        """The name a known_hosts file uses: `host` on port 22, else `[host]:port`."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def describe(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def ssh_config_path() -> Path:
    return Path(os.path.expanduser("~/.ssh/config"))


def _load_ssh_config(path: Path) -> paramiko.SSHConfig:
    if not path.is_file():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except Exception as error:  # paramiko raises several types for a bad file
        raise WatchkeeperError(f"{path}: cannot be read ({error}); fix the file.") from error


def _default_user() -> str:
    import getpass

    return getpass.getuser()


def resolve_host(
    alias: str,
    *,
    port: int | None = None,
    user: str | None = None,
    key: str | None = None,
    ssh_config: paramiko.SSHConfig | None = None,
    depth: int = 0,
) -> SshTarget:
    """Apply ~/.ssh/config (HostName, Port, User, IdentityFile, ProxyJump) to `alias`.

    Explicit port, user and key win over the file, as they do with OpenSSH's command line.
    """
    if depth > 5:
        raise WatchkeeperError(f"ProxyJump chain through {alias!r} is longer than 5 hosts.")
    ssh_config = ssh_config if ssh_config is not None else _load_ssh_config(ssh_config_path())
    found = ssh_config.lookup(alias)
    jumps: list[SshTarget] = []
    proxy_jump = found.get("proxyjump")
    if proxy_jump and proxy_jump.lower() != "none":
        for hop in proxy_jump.split(","):
            hop_user, hop_host, hop_port = _parse_jump(hop.strip())
            jumps.append(
                resolve_host(
                    hop_host, port=hop_port, user=hop_user, ssh_config=ssh_config, depth=depth + 1
                )
            )
    key_files = [os.path.expanduser(key)] if key else []
    key_files += [os.path.expanduser(k) for k in found.get("identityfile", [])]
    return SshTarget(
        alias=alias,
        hostname=found.get("hostname", alias),
        port=port or int(found.get("port", 22)),
        user=user or found.get("user") or _default_user(),
        key_files=tuple(dict.fromkeys(key_files)),
        jumps=tuple(jumps),
    )


def _parse_jump(hop: str) -> tuple[str | None, str, int | None]:
    """Split `user@host:port` (user and port optional) of a ProxyJump entry."""
    hop = hop.removeprefix("ssh://")
    user, _, rest = hop.rpartition("@")
    host, port = rest, None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else None
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = int(port_text)
    return (user or None), host, port


def target_for(remote: RemoteConfig) -> SshTarget:
    """The SSH target of a configured remote."""
    return resolve_host(remote.host, port=remote.port, user=remote.user, key=remote.key)
