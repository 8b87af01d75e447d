"""A throwaway OpenSSH sshd on 127.0.0.1 with its own host and user keys (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support import wait_for

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def sshd_available() -> bool:
    """True when an OpenSSH sshd binary is installed and we may start it."""
    return Path(SSHD).exists() and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass
class LoopbackSshd:
    """An sshd listening on 127.0.0.1:port that accepts `user_key` for the current user."""

    folder: Path
    port: int
    host_key: Path
    user_key: Path
    user: str

    @classmethod
    def create(cls, folder: Path) -> LoopbackSshd:
        folder.mkdir(parents=True, exist_ok=True)
        host_key = folder / "host_ed25519"
        user_key = folder / "user_ed25519"
        _keygen(host_key)
        _keygen(user_key)
        (folder / "authorized_keys").write_text(
            (folder / "user_ed25519.pub").read_text(), encoding="utf-8"
        )
        user = os.environ.get("USER") or "root"
        if os.geteuid() == 0:
            user = "root"
        server = cls(folder, free_port(), host_key, user_key, user)
        server.write_config()
        return server

    @property
    def config_path(self) -> Path:
        return self.folder / "sshd_config"

    @property
    def pid_path(self) -> Path:
        return self.folder / "sshd.pid"

    @property
    def log_path(self) -> Path:
        return self.folder / "sshd.log"

    @property
    def host_public_key(self) -> str:
        """The host key line as `ssh-ed25519 AAAA...`."""
        parts = (self.folder / "host_ed25519.pub").read_text().split()
        return f"{parts[0]} {parts[1]}"

    def write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"PidFile {self.pid_path}",
            "Subsystem sftp internal-sftp",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "LogLevel ERROR",
        ]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self) -> None:
        """Start sshd and wait until it accepts connections."""
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        subprocess.run([SSHD, "-f", str(self.config_path), "-E", str(self.log_path)], check=True)
        wait_for(self._accepting, 10, f"sshd to start (its log: {self.log_path})")

    def _accepting(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
        ):
            return self.pid_path.exists()
        return False

    def stop(self) -> None:
        """Stop the listening sshd and drop its established sessions (jobs they started live on)."""
        if not self.pid_path.exists():
            return
        pid = int(self.pid_path.read_text().strip())
        session_servers = [child for child in _descendants(pid) if _command_name(child) == "sshd"]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for child in session_servers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), 5, f"sshd (pid {pid}) to exit")
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def known_hosts_line(self) -> str:
        """The line a known_hosts file holds for this server: `[127.0.0.1]:port type key`."""
        return f"[127.0.0.1]:{self.port} {self.host_public_key}\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    """Every process below `root` in the parent tree, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found
