"""Running out of file descriptors: the agent backs off, keeps its logs, and recovers."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.client import AgentClient
from agent.daemon.lifecycle import read_pid
from agent.paths import WatchkeeperPaths
from tests.faults.agent_process import REPO_ROOT, cli, kill_agent
from tests.support import wait_for

AGENT_FD_LIMIT = 96
CONNECTIONS = 300
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _start_agent_with_fd_limit(limit: int) -> subprocess.CompletedProcess[str]:
    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "agent", "agent", "start"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        preexec_fn=lower_limit,
    )


def _open_connections(path: Path, count: int, first_line: bytes = b"") -> list[socket.socket]:
    """Connect up to `count` times, sending `first_line` on each; stop once the agent's
    backlog has stayed full for 1 s."""
    opened: list[socket.socket] = []
    full_since: float | None = None
    while len(opened) < count:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
        except BlockingIOError:  # the listen backlog is full: the agent is not accepting
            sock.close()
            full_since = full_since or time.monotonic()
            if time.monotonic() - full_since > 1.0:
                break
            time.sleep(0.01)
            continue
        full_since = None
        if first_line:
            sock.send(first_line)
        opened.append(sock)
    return opened


def _log_bytes(logs: Path) -> int:
    return sum(path.stat().st_size for path in logs.glob("agent.log*"))


def _answers_status(paths: WatchkeeperPaths, pid: int) -> bool:
    client = AgentClient.connect_or_none(paths.socket, timeout=5)
    if client is None:
        return False
    with client:
        return bool(client.call("status")["pid"] == pid)


def _closed_by_agent(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.fixture
def limited_agent(watchkeeper_home: Path) -> Iterator[tuple[WatchkeeperPaths, int]]:
    """A running agent whose RLIMIT_NOFILE is AGENT_FD_LIMIT."""
    paths = WatchkeeperPaths.from_environment()
    started = _start_agent_with_fd_limit(AGENT_FD_LIMIT)
    assert started.returncode == 0, started.stderr
    pid = read_pid(paths.pid_file)
    assert pid is not None
    try:
        yield paths, pid
    finally:
        kill_agent(paths, pid)


def test_idle_connections_are_shed_so_that_the_agent_keeps_answering(
    limited_agent: tuple[WatchkeeperPaths, int],
) -> None:
    paths, pid = limited_agent
    connections = _open_connections(paths.socket, CONNECTIONS)
    try:
        assert len(connections) > AGENT_FD_LIMIT, "the agent's descriptors were not exhausted"
        log_text = (paths.logs / "agent.log").read_text()
        assert "too many open files" in log_text.lower()
        # Every connection of ours is still open, yet the agent made room by closing idle ones.
        wait_for(lambda: _answers_status(paths, pid), timeout=10, interval=0.2)
        assert any(_closed_by_agent(sock) for sock in connections)
    finally:
        for sock in connections:
            sock.close()


def test_fd_exhaustion_backs_off_keeps_the_logs_and_recovers(
    limited_agent: tuple[WatchkeeperPaths, int],
) -> None:
    paths, pid = limited_agent
    log_file = paths.logs / "agent.log"
    # Subscribers are never shed: the agent stays out of descriptors until they hang up.
    subscribe = b'{"id": 1, "method": "subscribe", "params": {}}\n'
    connections = _open_connections(paths.socket, CONNECTIONS, subscribe)
    try:
        assert len(connections) > AGENT_FD_LIMIT, "the agent's descriptors were not exhausted"
        wait_for(lambda: "too many open files" in log_file.read_text().lower(), timeout=10)
        assert not _answers_status(paths, pid)

        log_before = _log_bytes(paths.logs)
        cpu_before = _cpu_seconds(pid)
        wall_before = time.monotonic()
        time.sleep(3.0)  # a measuring window: CPU time over wall time
        cpu_share = (_cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
        log_growth = _log_bytes(paths.logs) - log_before

        assert cpu_share < 0.25, f"the agent used {cpu_share:.0%} of a core while out of fds"
        assert log_growth < 2_000, f"the log grew by {log_growth} bytes in 3 s"
        assert not (paths.logs / "agent.log.1").exists(), "the log was rotated away"
        assert "Traceback" not in log_file.read_text()
    finally:
        for sock in connections:
            sock.close()
    wait_for(lambda: _answers_status(paths, pid), timeout=15, interval=0.2)
    assert cli("agent", "stop").returncode == 0
