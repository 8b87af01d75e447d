"""`agent stop` ends a stuck agent within its promised time, and no second agent starts early."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from agent.daemon.alerts import insert_alert
from agent.daemon.lifecycle import STOP_TIMEOUT_SECONDS, process_gone, read_pid, running_pid
from agent.ledger import open_ledger
from agent.paths import WatchkeeperPaths
from tests.faults.agent_process import REPO_ROOT, cli, kill_agent

# The agent waits this long for the ledger's write lock: longer than any test, i.e. for ever.
AN_HOUR_MS = "3600000"


def _send(socket_path: Path, method: str, **params: object) -> socket.socket:
    """Send one request and leave the connection open without reading the reply."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(socket_path))
    request = {"id": 1, "method": method, "params": params}
    sock.sendall(json.dumps(request).encode() + b"\n")
    return sock


def test_stop_ends_an_agent_stuck_on_a_locked_ledger_and_keeps_its_lock_until_gone(
    tmp_path: Path, watchkeeper_home: Path
) -> None:
    paths = WatchkeeperPaths.from_environment()
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n1,2\n")
    env = {"WATCHKEEPER_BUSY_TIMEOUT_MS": AN_HOUR_MS}
    started = cli("agent", "start", env=env)
    assert started.returncode == 0, started.stderr
    pid = read_pid(paths.pid_file)
    assert pid is not None
    holder = None
    connections: list[socket.socket] = []
    try:
        db = open_ledger(paths.ledger)
        alert = insert_alert(db, kind="watch", message="test alert", dedupe_key="stop-test")
        assert alert is not None
        db.close()
        # Another process (a sqlite3 shell, say) holds the ledger's write lock and never lets go.
        holder = sqlite3.connect(paths.ledger, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        # A socket request and a worker job now wait for that lock.
        connections.append(_send(paths.socket, "ack_alert", id=alert["id"]))
        connections.append(_send(paths.socket, "watch_add", path=str(data), data=True))
        assert b'"inotify"' in connections[1].recv(4096)

        begun = time.monotonic()
        stopper = subprocess.Popen(
            [sys.executable, "-m", "agent", "agent", "stop"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        # Until the process is gone, its lock must stay taken: no second agent may start.
        while True:
            lock_free = running_pid(paths) is None
            if process_gone(pid):
                break
            assert not lock_free, "the lock was released while the stopping agent still ran"
            assert time.monotonic() - begun < 3 * STOP_TIMEOUT_SECONDS, "the agent never ended"
            time.sleep(0.02)
        out, err = stopper.communicate(timeout=30)
        elapsed = time.monotonic() - begun
        assert stopper.returncode == 0, err
        assert f"agent stopped (pid {pid})" in out
        # The CLI's own start-up is part of the measured time, hence the second of slack.
        assert elapsed < STOP_TIMEOUT_SECONDS + 1.0
        assert running_pid(paths) is None

        holder.rollback()
        restarted = cli("agent", "start")
        assert restarted.returncode == 0, restarted.stderr
        assert cli("agent", "stop").returncode == 0
    finally:
        for sock in connections:
            sock.close()
        if holder is not None:
            holder.close()
        kill_agent(paths, pid)
    log = (paths.logs / "agent.log").read_text()
    assert "shutdown took longer than" in log
