"""SSH connections with paramiko: host-key checks, key login, quoting and reconnect with backoff."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paramiko

from agent.errors import WatchkeeperError
from agent.remote.config import (
    DEFAULT_READ_TIMEOUT_SECONDS,
    RemoteConfig,
    SshTarget,
    target_for,
)
from agent.remote.hostkeys import HostKeyStore
from agent.remote.replies import MAX_PROBE_BYTES, MAX_REPLY_BYTES, HelperReplyError, helper_reply
from agent.runs.executor import TargetUnreachableError

PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
WINDOW_SIZE = 64 << 20
MAX_PACKET_SIZE = 256 << 10
KEEPALIVE_SECONDS = 30  # keeps idle connections through NAT and firewalls while a run goes
AGENT_SOURCE = "ssh-agent"
DEFAULT_KEY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
HELPER_SOURCE = (Path(__file__).with_name("remote_helper.py")).read_text(encoding="utf-8")
MAX_COMMAND_OUTPUT = 16 << 20  # what one shell command (git, squeue, sbatch…) may print
STDERR_KEPT = 64 << 10  # the tail of stderr kept for error messages
STALL_RETRIES = 1  # a stalled transfer is tried once more on a new connection, then fails
EXIT_STATUS_WAIT = 10.0  # how long to wait for an exit status once output has ended

T = TypeVar("T")
log = logging.getLogger(__name__)


class RemoteUnreachableError(TargetUnreachableError):
    """The network path to the host failed; worth trying again later."""


class RemoteStalledError(WatchkeeperError):
    """The remote sent nothing for longer than its read timeout, on every try."""


class OutputTooLongError(WatchkeeperError):
    """A remote command printed more than the caller allows; the channel was closed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"printed more than {limit} bytes")
        self.limit = limit


def describe_bytes(count: int) -> str:
    """A byte count as the largest whole binary unit.

    >>> describe_bytes(1 << 20), describe_bytes(65536), describe_bytes(100)
    ('1 MiB', '64 KiB', '100 bytes')
    """
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return f"{count} bytes"


def exit_status(channel: paramiko.Channel, wait: float = EXIT_STATUS_WAIT) -> int | None:
    """The channel's exit status, waiting at most `wait` seconds for it (None if none came)."""
    if channel.status_event.wait(wait):
        return int(channel.exit_status)
    return None


def read_stderr_tail(channel: paramiko.Channel) -> bytes:
    """What the channel has on stderr right now, keeping only its last STDERR_KEPT bytes."""
    errors = bytearray()
    while channel.recv_stderr_ready():
        errors += channel.recv_stderr(65536)
        del errors[:-STDERR_KEPT]
    return bytes(errors)


class LoginFailedError(WatchkeeperError):
    """The server refused every key we have for this user."""


def quote_command(argv: Sequence[str]) -> str:
    """Join argv into one shell command where every word reaches the program unchanged.

    >>> print(quote_command(["echo", "a b", "$HOME", "it's"]))
    echo 'a b' '$HOME' 'it'"'"'s'
    """
    return " ".join(shlex.quote(str(word)) for word in argv)


@dataclass
class CommandResult:
    """Exit status and output of one remote command."""

    command: str
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def check(self, what: str) -> CommandResult:
        if self.exit_code != 0:
            detail = self.stderr.decode("utf-8", "replace").strip()[-2000:]
            raise WatchkeeperError(f"{what} failed (exit {self.exit_code}): {detail}")
        return self


def _tune(transport: paramiko.Transport, known_key_types: list[str]) -> None:
    """Prefer AES-GCM (fast with AES-NI) and the host-key types we already know."""
    options = transport.get_security_options()
    ciphers = list(options.ciphers)
    options.ciphers = tuple(
        [c for c in PREFERRED_CIPHERS if c in ciphers]
        + [c for c in ciphers if c not in PREFERRED_CIPHERS]
    )
    if known_key_types:
        key_types = list(options.key_types)
        preferred = [k for k in known_key_types if k in key_types]
        options.key_types = tuple(preferred + [k for k in key_types if k not in preferred])


def rekey_limit_bytes(block_size: int) -> int:
    """Bytes a key may encrypt before new keys are made, as OpenSSH decides by default:
    2^(2 × block size) cipher blocks for 16-byte blocks (RFC 4344, 3.2), else 1 GiB.

    >>> rekey_limit_bytes(16) == 64 << 30, rekey_limit_bytes(8) == 1 << 30
    (True, True)
    """
    if block_size >= 16:
        return (1 << (block_size * 2)) * block_size
    return 1 << 30


def _rekey_as_openssh_does(transport: paramiko.Transport) -> None:
    """Let the negotiated cipher's keys serve as long as OpenSSH's would, not paramiko's 512 MiB.

    A rekey paramiko starts itself deadlocks its transport thread for 30 s when the server
    closes a channel meanwhile (the thread waits for the key exchange it alone would finish),
    which an upload of a gigabyte met at nearly every second rekey; the server still rekeys by
    its own limits, which is safe.
    """
    ciphers = paramiko.Transport._cipher_info
    names = (transport.local_cipher, transport.remote_cipher)
    if all(name in ciphers for name in names):
        block_size = min(int(ciphers[name]["block-size"]) for name in names)
        transport.packetizer.REKEY_BYTES = rekey_limit_bytes(block_size)


def _load_key_file(path: str) -> paramiko.PKey | None:
    """Load a private key without a passphrase; None when absent or encrypted."""
    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        return None
    try:
        return paramiko.PKey.from_path(expanded)
    except paramiko.PasswordRequiredException:
        return None
    except (paramiko.SSHException, ValueError, OSError):
        return None


def _candidate_keys(target: SshTarget) -> tuple[list[tuple[str, paramiko.PKey]], list[str]]:
    """Keys to offer, in order: ssh-agent, then the key files. Also notes on skipped files."""
    offered: list[tuple[str, paramiko.PKey]] = []
    notes: list[str] = []
    if os.environ.get("SSH_AUTH_SOCK"):
        with contextlib.suppress(paramiko.SSHException, OSError):
            for agent_key in paramiko.Agent().get_keys():
                offered.append((AGENT_SOURCE, agent_key))
    files = list(target.key_files) or [os.path.expanduser(p) for p in DEFAULT_KEY_FILES]
    for path in files:
        key = _load_key_file(path)
        if key is not None:
            offered.append((path, key))
        elif os.path.isfile(path):
            notes.append(f"{path} is encrypted or unreadable (load it into ssh-agent)")
        elif target.key_files:
            notes.append(f"{path} does not exist")
    return offered, notes


class SshConnection:
    """One logged-in SSH transport (plus its jump hosts) to run commands and open channels."""

    def __init__(
        self,
        target: SshTarget,
        transport: paramiko.Transport,
        via: list[Any],
        *,
        read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
    ) -> None:
        self.target = target
        self.transport = transport
        self._via = via
        self._sftp: paramiko.SFTPClient | None = None
        self.read_timeout = read_timeout  # longest silence of a channel before reads fail
        # The host key checked at the handshake, and the key file the login used (None when
        # the key came from ssh-agent): what an `ssh` process of this session is pinned to.
        self.host_key: paramiko.PKey | None = None
        self.login_key_file: str | None = None

    @classmethod
    def open(
        cls,
        target: SshTarget,
        *,
        store: HostKeyStore | None = None,
        remote_name: str | None = None,
        timeout: float = 15.0,
        read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
    ) -> SshConnection:
        """Connect, check the host key, log in with the agent or key files."""
        store = store or HostKeyStore.default()
        via: list[Any] = []
        sock: Any = None
        try:
            for hop in target.jumps:
                hop_connection = cls.open(hop, store=store, remote_name=remote_name)
                via.append(hop_connection)
            if via:
                sock = via[-1].transport.open_channel(
                    "direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0)
                )
            transport = handshake(target, store, remote_name, timeout=timeout, sock=sock)
            source = _login(transport, target)
            transport.set_keepalive(KEEPALIVE_SECONDS)
        except BaseException:
            for hop_connection in via:
                hop_connection.close()
            raise
        connection = cls(target, transport, via, read_timeout=read_timeout)
        connection.host_key = transport.get_remote_server_key()
        connection.login_key_file = None if source == AGENT_SOURCE else source
        return connection

    @property
    def alive(self) -> bool:
        return self.transport.is_active()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._sftp is not None:
                self._sftp.close()
        with contextlib.suppress(Exception):
            self.transport.close()
        for hop in self._via:
            hop.close()

    def channel(self, command: str) -> paramiko.Channel:
        """Start `command` (already quoted) on a fresh session channel.

        Its reads and writes raise TimeoutError after `read_timeout` seconds without progress.
        """
        channel = self.transport.open_session(window_size=WINDOW_SIZE)
        channel.settimeout(self.read_timeout)
        channel.exec_command(command)
        return channel

    def run(
        self,
        command: str | Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = 120.0,
        max_output: int = MAX_COMMAND_OUTPUT,
        silence: float | None = None,
    ) -> CommandResult:
        """Run a command (argv is quoted word by word) and collect its output.

        It fails after `timeout` seconds in all, after `silence` seconds without output (a
        TimeoutError), or once stdout grows past `max_output` bytes (an OutputTooLongError).
        """
        text = command if isinstance(command, str) else quote_command(command)
        channel = self.channel(text)
        writer = None
        if stdin is not None:
            writer = threading.Thread(target=_send_and_close, args=(channel, stdin), daemon=True)
            writer.start()
        else:
            channel.shutdown_write()
        try:
            stdout, stderr = _drain(channel, timeout, text, max_output, silence)
        finally:
            if writer is not None:
                writer.join(timeout=5)
        status = exit_status(channel)
        exit_code = -1 if status is None else status
        channel.close()
        if exit_code == -1 and self._dropped():
            raise RemoteUnreachableError(f"connection lost while running: {text[:80]}")
        return CommandResult(text, exit_code, stdout, stderr)

    def _dropped(self, wait: float = 1.0) -> bool:
        """True when the transport died (a channel closed without an exit status)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not self.transport.is_active():
                return True
            time.sleep(0.02)
        return not self.transport.is_active()

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = paramiko.SFTPClient.from_transport(
                self.transport, window_size=WINDOW_SIZE, max_packet_size=32768
            )
            if self._sftp is None:
                raise RemoteUnreachableError(f"{self.target.describe()}: no SFTP subsystem")
            self._sftp.get_channel().settimeout(self.read_timeout)
        return self._sftp


def _send_and_close(channel: paramiko.Channel, data: bytes) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        channel.sendall(data)
        channel.shutdown_write()


def _drain(
    channel: paramiko.Channel,
    timeout: float | None,
    command: str,
    max_output: int = MAX_COMMAND_OUTPUT,
    silence: float | None = None,
) -> tuple[bytes, bytes]:
    """Read stdout and stderr of a channel until both end (stdout at most `max_output` bytes,
    the last STDERR_KEPT bytes of stderr)."""
    stdout, stderr = bytearray(), bytearray()
    heard = time.monotonic()
    deadline = None if timeout is None else heard + timeout
    while True:
        if channel.recv_ready():
            stdout += channel.recv(1 << 20)
            heard = time.monotonic()
            if len(stdout) > max_output:
                channel.close()
                raise OutputTooLongError(max_output)
            continue
        if channel.recv_stderr_ready():
            stderr += channel.recv_stderr(1 << 20)
            del stderr[:-STDERR_KEPT]
            heard = time.monotonic()
            continue
        if channel.exit_status_ready() and channel.eof_received:
            break
        if channel.closed or not channel.get_transport() or not channel.get_transport().is_active():
            if not channel.exit_status_ready():
                raise RemoteUnreachableError(f"connection lost while running: {command[:80]}")
            break
        now = time.monotonic()
        if deadline is not None and now > deadline:
            channel.close()
            raise WatchkeeperError(f"remote command timed out after {timeout:.0f}s: {command[:80]}")
        if silence is not None and now - heard > silence:
            channel.close()
            raise TimeoutError(f"no output for {silence:g} s")
        select.select([channel], [], [], 0.2)
    stderr += read_stderr_tail(channel)
    return bytes(stdout), bytes(stderr[-STDERR_KEPT:])


def handshake(
    target: SshTarget,
    store: HostKeyStore,
    remote_name: str | None,
    *,
    timeout: float = 15.0,
    sock: Any = None,
    check: bool = True,
) -> paramiko.Transport:
    """Open the transport and verify the host key (before anything is sent to the server)."""
    where = f"{target.hostname}:{target.port}"
    try:
        if sock is None:
            sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
            # Each SSH message goes out at once: with Nagle's algorithm a message written in
            # two parts waited for the server's delayed ACK, 40 ms of the login on Linux.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(
            sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
        )
        _tune(transport, store.known_key_types(target.known_hosts_name))
        transport.start_client(timeout=timeout)
        _rekey_as_openssh_does(transport)
    except (OSError, EOFError, paramiko.SSHException) as error:
        raise RemoteUnreachableError(
            f"cannot reach {where} ({error or type(error).__name__}); check that the host is up "
            "and the host name and port are right (`watchkeeper remote list`)."
        ) from error
    if check:
        try:
            store.check(target.known_hosts_name, transport.get_remote_server_key(), remote_name)
        except BaseException:
            transport.close()
            raise
    return transport


def _login(transport: paramiko.Transport, target: SshTarget) -> str:
    """Log in with the first key the server accepts; returns where it came from."""
    offered, notes = _candidate_keys(target)
    tried: list[str] = []
    for source, key in offered:
        tried.append(f"{source} ({key.get_name()})")
        try:
            transport.auth_publickey(target.user, key)
        except paramiko.AuthenticationException:
            continue
        except (OSError, EOFError, paramiko.SSHException) as error:
            transport.close()
            raise RemoteUnreachableError(f"{target.describe()}: {error}") from error
        if transport.is_authenticated():
            return source
    transport.close()
    tried_text = ", ".join(tried) if tried else "no keys (none in ssh-agent, no key files)"
    extra = f"; {'; '.join(notes)}" if notes else ""
    raise LoginFailedError(
        f"login as {target.user!r} on {target.hostname}:{target.port} failed: the server "
        f"refused {tried_text}{extra}. Add your public key to ~{target.user}/.ssh/authorized_keys "
        "there, or point the remote at the right key with --key."
    )


class RemoteSession:
    """A configured remote with a connection that is reopened, with backoff, when it drops."""

    def __init__(
        self,
        remote: RemoteConfig,
        *,
        store: HostKeyStore | None = None,
        retry_for: float = 300.0,
        max_delay: float = 10.0,
    ) -> None:
        self.remote = remote
        self.target = target_for(remote)
        self.store = store or HostKeyStore.default()
        self.retry_for = retry_for
        self.max_delay = max_delay
        self._connection: SshConnection | None = None
        self._facts: dict[str, Any] | None = None
        self._lock = threading.RLock()
        self.reconnects = 0  # network failures survived by reconnecting
        self.openssh_refused = ""  # why `ssh` lanes are no longer used for this session, if so

    def connection(self) -> SshConnection:
        """A live connection, opened now if needed (no retry here)."""
        with self._lock:
            if self._connection is None or not self._connection.alive:
                if self._connection is not None:
                    self._connection.close()
                self._connection = SshConnection.open(
                    self.target,
                    store=self.store,
                    remote_name=self.remote.name,
                    read_timeout=self.remote.read_timeout_seconds,
                )
            return self._connection

    def drop(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    close = drop

    def call(
        self,
        action: Callable[[SshConnection], T],
        *,
        retry_for: float | None = None,
        what: str = "waiting for the remote",
    ) -> T:
        """Run action(connection), reconnecting with exponential backoff on network errors.

        A read that waits longer than the remote's read timeout (a stall) is tried once more on
        a new connection, then fails with RemoteStalledError; `what` names the action in it.
        """
        budget = self.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + budget
        delay = 0.25
        stalls = 0
        while True:
            try:
                return action(self.connection())
            except TimeoutError as error:
                self.drop()
                stalls += 1
                log.info("remote %s: no data while %s (%s)", self.remote.name, what, error)
                if stalls > STALL_RETRIES:
                    seconds = f"{self.remote.read_timeout_seconds:g}"
                    raise RemoteStalledError(
                        f"remote {self.remote.name}: no data for {seconds} s while {what} "
                        f"(tried {stalls} times); check the remote, or give it longer with "
                        f"read_timeout_seconds in [remotes.{self.remote.name}] of config.toml."
                    ) from error
            except (RemoteUnreachableError, OSError, EOFError, paramiko.SSHException) as error:
                if isinstance(error, paramiko.AuthenticationException):
                    raise
                self.drop()
                self.reconnects += 1
                log.info(
                    "remote %s: %s broke off (%s); reconnecting",
                    self.remote.name,
                    what,
                    error or type(error).__name__,
                )
                if time.monotonic() + delay > deadline:
                    raise RemoteUnreachableError(
                        f"remote {self.remote.name!r} ({self.target.describe()}) stayed "
                        f"unreachable for {budget:.0f}s: {error}"
                    ) from error
                time.sleep(delay)
                delay = min(delay * 2, self.max_delay)

    def run(
        self, argv: Sequence[str] | str, *, stdin: bytes | None = None, timeout: float = 120.0
    ) -> CommandResult:
        """Run a command, reconnecting when the connection drops (the command may rerun)."""
        try:
            return self.call(
                lambda c: c.run(argv, stdin=stdin, timeout=timeout),
                what="running a command",
            )
        except OutputTooLongError as error:
            text = argv if isinstance(argv, str) else quote_command(argv)
            raise WatchkeeperError(
                f"remote {self.remote.name}: `{text[:60]}` {error}; it was stopped."
            ) from None

    @property
    def python_argv(self) -> list[str]:
        return shlex.split(self.remote.python)

    def helper_command(self, mode: str, *args: str) -> str:
        """The quoted command that runs the helper program in `mode` with the remote python."""
        return quote_command([*self.python_argv, "-c", HELPER_SOURCE, mode, *args])

    def helper_json(self, mode: str, *args: str, stdin: bytes | None = None) -> dict[str, Any]:
        """Run a helper mode that answers with one JSON line, and check that reply.

        The reply is read for at most the remote's read timeout of silence and MAX_REPLY_BYTES
        (MAX_PROBE_BYTES for `probe`); anything else than the reply the mode promises is a
        HelperReplyError naming the remote.
        """
        limit = MAX_PROBE_BYTES if mode == "probe" else MAX_REPLY_BYTES
        command = self.helper_command(mode, *args)
        try:
            result = self.call(
                lambda c: c.run(
                    command,
                    stdin=stdin,
                    max_output=limit,
                    silence=self.remote.read_timeout_seconds,
                ),
                what=f"waiting for the helper's {mode} reply",
            )
        except OutputTooLongError:
            raise HelperReplyError(
                f"remote {self.remote.name}: the helper's {mode} reply is longer than "
                f"{describe_bytes(limit)}; expected one JSON line. Check what prints on login "
                f"there and the python {self.remote.python!r}."
            ) from None
        self._check_python(result)
        if result.exit_code != 0:
            detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise WatchkeeperError(
                f"remote {self.remote.name}: the helper's {mode} failed (exit "
                f"{result.exit_code}): {detail[-1][-300:] if detail else 'no message'}"
            )
        return helper_reply(self.remote.name, mode, result.stdout)

    def _check_python(self, result: CommandResult) -> None:
        if result.exit_code == 127:
            raise WatchkeeperError(
                f"remote {self.remote.name!r}: python {self.remote.python!r} was not found on "
                f"{self.target.hostname}. Install Python 3 there or point the remote at one "
                f"with `watchkeeper remote add {self.remote.name} --python /path/to/python3 ...`."
            )

    def facts(self) -> dict[str, Any]:
        """Probe the remote once: python version, home folder, blake3, free disk."""
        if self._facts is None:
            self._facts = self.helper_json("probe")
        return self._facts

    def require_python(self) -> None:
        """Fail early, naming the python, when it is missing on the remote."""
        self.facts()

    def absolute(self, path: str) -> str:
        """Expand a leading ~ of a remote path with the remote home folder."""
        if path == "~" or path.startswith("~/"):
            return str(self.facts()["home"]) + path[1:]
        return path

    @property
    def workdir(self) -> str:
        return self.absolute(self.remote.workdir).rstrip("/") or "/"

    @property
    def cache_dir(self) -> str:
        return self.workdir + "/cache"

    @property
    def runs_dir(self) -> str:
        return self.workdir + "/runs"

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()
