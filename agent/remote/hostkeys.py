"""Host-key checks against Watchkeeper's known_hosts (and ~/.ssh/known_hosts, read only)."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import paramiko

from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths


def fingerprint(key: paramiko.PKey) -> str:
    """The key's SHA256 fingerprint as OpenSSH prints it: `SHA256:` + unpadded base64."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {fingerprint(key)}"


class UnknownHostKeyError(WatchkeeperError):
    """The server presented a key nobody has trusted yet."""

    def __init__(self, host: str, key: paramiko.PKey, remote_name: str | None) -> None:
        self.host = host
        self.key = key
        trust = f"watchkeeper remote trust {remote_name}" if remote_name else "remote trust"
        super().__init__(
            f"the host key of {host} is not known: {describe_key(key)}. "
            f"Check this fingerprint with the server's owner, then run `{trust}`."
        )


class ChangedHostKeyError(WatchkeeperError):
    """The server's key differs from the one on record: refuse, show both fingerprints."""

    def __init__(
        self, host: str, key: paramiko.PKey, expected: list[tuple[paramiko.PKey, Path]]
    ) -> None:
        self.host = host
        self.key = key
        known = "; ".join(f"{describe_key(k)} (in {source})" for k, source in expected)
        super().__init__(
            f"the host key of {host} has CHANGED: the server now presents {describe_key(key)}, "
            f"but the key on record is {known}. Someone may be intercepting the connection. "
            "If the server was reinstalled, remove the old line from the file named and run "
            "`watchkeeper remote trust` again."
        )


@dataclass
class HostKeyStore:
    """Trusted host keys: Watchkeeper's own file (written) and the user's file (read only)."""

    own_file: Path
    user_file: Path | None

    @classmethod
    def default(cls) -> HostKeyStore:
        user_file = Path(os.path.expanduser("~/.ssh/known_hosts"))
        return cls(WatchkeeperPaths.from_environment().known_hosts, user_file)

    def _sources(self) -> list[tuple[paramiko.HostKeys, Path]]:
        sources = []
        for path in (self.own_file, self.user_file):
            if path is not None and path.is_file():
                keys = paramiko.HostKeys()
                try:
                    keys.load(str(path))
                except (OSError, paramiko.SSHException) as error:
                    raise WatchkeeperError(f"{path}: cannot be read ({error}).") from error
                sources.append((keys, path))
        return sources

    def known_keys(self, host: str) -> list[tuple[paramiko.PKey, Path]]:
        """Every key on record for `host` (as known_hosts names it), with the file it came from."""
        found: list[tuple[paramiko.PKey, Path]] = []
        for keys, path in self._sources():
            entry = keys.lookup(host)
            if entry is not None:
                found.extend((entry[key_type], path) for key_type in entry)
        return found

    def known_key_types(self, host: str) -> list[str]:
        return list(dict.fromkeys(key.get_name() for key, _ in self.known_keys(host)))

    def check(self, host: str, key: paramiko.PKey, remote_name: str | None = None) -> None:
        """Accept only a key on record; raise Unknown/ChangedHostKeyError otherwise."""
        known = self.known_keys(host)
        if any(candidate == key for candidate, _ in known):
            return
        same_type = [(k, p) for k, p in known if k.get_name() == key.get_name()]
        if same_type or known:
            raise ChangedHostKeyError(host, key, same_type or known)
        raise UnknownHostKeyError(host, key, remote_name)

    def trust(self, host: str, key: paramiko.PKey) -> None:
        """Append `host key` to Watchkeeper's own known_hosts (mode 0600)."""
        self.own_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = f"{host} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(self.own_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
