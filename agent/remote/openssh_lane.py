"""Upload lanes through the system `ssh` client, pinned to the host key the session verified.

paramiko encrypts in this Python process; one `ssh` process per lane encrypts in C beside it.
An `ssh` is run only when the session logged in with a key file (no agent, no passphrase) and
goes straight to the host (no jump hosts), with a private known_hosts file that holds exactly
the host key paramiko checked for this connection, and nothing of the user's ssh config.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from agent.errors import WatchkeeperError
from agent.remote.connection import EXIT_STATUS_WAIT, STDERR_KEPT, SshConnection

PINNED_HOST = "watchkeeper-pinned-host"  # the HostKeyAlias ssh looks the pinned key up under
CIPHERS = ",".join(  # OpenSSH's default set, AES-GCM first: fastest with AES-NI
    (
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
    )
)
PIPE_SIZE = 1 << 20  # the stdin pipe of ssh: fewer wake-ups per MiB sent
SSH_EXIT_FAILED = 255
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class OpenSshLaneError(OSError):
    """An `ssh` lane could not start or ended before its receiver replied."""


def host_key_algorithms(key_type: str) -> str:
    """The HostKeyAlgorithms that accept exactly this key type.

    >>> host_key_algorithms("ssh-rsa"), host_key_algorithms("ssh-ed25519")
    ('rsa-sha2-512,rsa-sha2-256', 'ssh-ed25519')
    """
    return "rsa-sha2-512,rsa-sha2-256" if key_type == "ssh-rsa" else key_type


def unavailable_reason(connection: SshConnection) -> str:
    """Why this connection's lanes must stay on paramiko, or "" when `ssh` may carry them."""
    if shutil.which("ssh") is None:
        return "no ssh client on PATH"
    if connection.target.jumps:
        return "the remote is reached through jump hosts"
    if connection.host_key is None:
        return "no verified host key"
    if connection.login_key_file is None:
        return "the login used ssh-agent, not a key file"
    return ""


class OpenSshLauncher:
    """Starts `ssh` processes for one connection; owns their private folder (0700).

    The folder holds the pinned known_hosts file (0600) and each process's stderr; `close`
    kills what still runs and removes it.
    """

    def __init__(self, connection: SshConnection, remote_name: str) -> None:
        assert connection.host_key is not None and connection.login_key_file is not None
        self.connection = connection
        self.remote_name = remote_name
        self.ssh = shutil.which("ssh") or "ssh"
        self.folder = Path(tempfile.mkdtemp(prefix="watchkeeper-ssh-"))
        self.known_hosts = self.folder / "known_hosts"
        key = connection.host_key
        line = f"{PINNED_HOST} {key.get_name()} {key.get_base64()}\n"
        descriptor = os.open(self.known_hosts, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(line)
        self.channels: list[OpenSshChannel] = []
        self.lock = threading.Lock()  # lanes open their channels on their own threads
        self.closed = False

    def argv(self, command: str) -> list[str]:
        """The ssh command line that runs `command` (already quoted) on the verified host."""
        connection = self.connection
        target = connection.target
        assert connection.host_key is not None and connection.login_key_file is not None
        alive_every = max(1, int(connection.read_timeout // 3))
        options = {
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "HostKeyAlias": PINNED_HOST,
            "HostKeyAlgorithms": host_key_algorithms(connection.host_key.get_name()),
            "CheckHostIP": "no",
            "UpdateHostKeys": "no",
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "IdentityAgent": "none",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "ControlMaster": "no",
            "ControlPath": "none",
            "ForwardAgent": "no",
            "ForwardX11": "no",
            "ClearAllForwardings": "yes",
            "ServerAliveInterval": str(alive_every),
            "ServerAliveCountMax": "3",
            "ConnectTimeout": "15",
            "Ciphers": CIPHERS,
            "Compression": "no",
            "LogLevel": "ERROR",
        }
        argv = [self.ssh, "-F", "/dev/null", "-T"]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        key_file = os.path.expanduser(connection.login_key_file)
        argv += ["-i", key_file, "-p", str(target.port), "-l", target.user]
        return [*argv, "--", target.hostname, command]

    def open(self, command: str) -> OpenSshChannel:
        with self.lock:
            if self.closed:
                raise OpenSshLaneError("the upload ended before ssh started")
            channel = OpenSshChannel(
                self.argv(command),
                self.folder / f"stderr-{len(self.channels)}",
                self.connection.read_timeout,
                self.remote_name,
            )
            self.channels.append(channel)
            return channel

    def close(self) -> None:
        with self.lock:
            self.closed = True
        for channel in self.channels:
            channel.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class OpenSshChannel:
    """An `ssh` process as a lane channel: its stdin and stdout, its exit status and stderr.

    Reads and writes raise TimeoutError after `read_timeout` seconds without progress, as a
    paramiko channel's do; ssh's ServerAlive messages end it sooner when the server is gone.
    """

    transport = "openssh"

    def __init__(
        self, argv: list[str], stderr_path: Path, read_timeout: float, remote_name: str
    ) -> None:
        self.remote_name = remote_name
        self.read_timeout = read_timeout
        self.stderr_path = stderr_path
        descriptor = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            environment = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=descriptor,
                env=environment,
                start_new_session=True,  # a Ctrl-C at the terminal is ours to handle
            )
        except OSError as error:
            raise OpenSshLaneError(f"ssh could not start ({error.strerror})") from error
        finally:
            os.close(descriptor)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin = self.process.stdin.fileno()
        self.stdout = self.process.stdout.fileno()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.stdin, F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(self.stdin, False)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            try:
                view = view[os.write(self.stdin, view) :]
            except BlockingIOError:
                _, writable, _ = select.select([], [self.stdin], [], self.read_timeout)
                if not writable:
                    raise TimeoutError(f"ssh took nothing for {self.read_timeout:g} s") from None
            except BrokenPipeError:
                raise self._gone() from None

    def recv(self, size: int) -> bytes:
        readable, _, _ = select.select([self.stdout], [], [], self.read_timeout)
        if not readable:
            raise TimeoutError(f"ssh printed nothing for {self.read_timeout:g} s")
        return os.read(self.stdout, size)

    def shutdown_write(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()

    def ended(self) -> tuple[int | None, bytes, bool]:
        try:
            status: int | None = self.process.wait(EXIT_STATUS_WAIT)
        except subprocess.TimeoutExpired:
            status = None
        # 255 is ssh's own failure (connection, host key, login); below 0, it was killed.
        lost = status is not None and (status == SSH_EXIT_FAILED or status < 0)
        return status, self.stderr_tail(), lost

    def stderr_tail(self) -> bytes:
        try:
            with self.stderr_path.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - STDERR_KEPT))
                return handle.read()
        except OSError:
            return b""

    def _gone(self) -> Exception:
        """Why the pipe broke: ssh failed (OpenSshLaneError), or the remote receiver did."""
        deadline = time.monotonic() + EXIT_STATUS_WAIT
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        errors = self.stderr_tail().decode(errors="replace").strip().splitlines()
        status = self.process.returncode
        last = f": {errors[-1][-300:]}" if errors else ""
        if status is None or status == SSH_EXIT_FAILED or status < 0:
            return OpenSshLaneError(f"ssh ended (exit {status or 'unknown'}){last}")
        return WatchkeeperError(
            f"remote {self.remote_name}: the helper's receive failed (exit {status}){last}"
        )

    def close(self) -> None:
        """Kill the process if it still runs, and reap it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(EXIT_STATUS_WAIT)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
