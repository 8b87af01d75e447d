"""The agent process: start, single instance, stop, crashes, install, and kill -9 mid-ingestion."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.client import AgentClient
from agent.daemon.lifecycle import process_gone, read_pid, running_pid
from agent.paths import WatchkeeperPaths
from tests.agent.daemon.conftest import REPO_ROOT, git
from tests.support import wait_for


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


@pytest.fixture
def paths(watchkeeper_home: Path) -> WatchkeeperPaths:
    return WatchkeeperPaths.from_environment()


def _kill_agent(paths: WatchkeeperPaths) -> None:
    pid = running_pid(paths)
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: running_pid(paths) is None)


def test_start_status_second_start_and_stop(paths: WatchkeeperPaths) -> None:
    started = cli("agent", "start")
    assert started.returncode == 0, started.stderr
    try:
        pid = running_pid(paths)
        assert pid and f"pid {pid}" in started.stdout
        assert paths.pid_file.read_text().strip() == str(pid)
        second = cli("agent", "start")
        assert second.returncode == 2
        assert f"already running (pid {pid}" in second.stderr
        status = cli("agent", "status", "--json")
        assert status.returncode == 0
        assert f'"pid": {pid}' in status.stdout
        begun = time.monotonic()
        stopped = cli("agent", "stop")
        assert stopped.returncode == 0
        assert time.monotonic() - begun < 5.0
        assert f"agent stopped (pid {pid})" in stopped.stdout
        assert read_pid(paths.pid_file) is None  # the file stays; its lock went with the process
        assert not paths.socket.exists()
        assert process_gone(pid)
        assert cli("agent", "status").returncode == 3
        assert "not running" in cli("agent", "stop").stdout
    finally:
        _kill_agent(paths)


def test_stale_pid_file_and_socket_after_a_crash_are_cleaned_up(paths: WatchkeeperPaths) -> None:
    assert cli("agent", "start").returncode == 0
    try:
        crashed = running_pid(paths)
        assert crashed
        os.kill(crashed, signal.SIGKILL)
        wait_for(lambda: running_pid(paths) is None)
        assert paths.pid_file.exists() and paths.socket.exists()  # what the crash left
        assert AgentClient.connect_or_none(paths.socket) is None
        restarted = cli("agent", "start")
        assert restarted.returncode == 0, restarted.stderr
        new_pid = running_pid(paths)
        assert new_pid and new_pid != crashed
        with AgentClient.connect(paths.socket) as client:
            assert client.call("status")["pid"] == new_pid
        log = (paths.logs / "agent.log").read_text()
        assert f"did not exit cleanly (pid {crashed})" in log
        assert "removed a stale control socket" in log
    finally:
        _kill_agent(paths)


def test_foreground_run_logs_to_stderr_and_stops_on_sigterm(paths: WatchkeeperPaths) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "agent", "run"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        wait_for(lambda: AgentClient.connect_or_none(paths.socket) is not None, timeout=20)
        process.send_signal(signal.SIGTERM)
        process.wait(5)
        stderr = process.stderr.read() if process.stderr else ""
    finally:
        process.kill()
    assert process.returncode == 0
    assert "agent stopped" in stderr
    assert "agent stopped" in (paths.logs / "agent.log").read_text()


def test_install_writes_units_and_enables_nothing(tmp_path: Path) -> None:
    config_home = tmp_path / "xdg"
    result = subprocess.run(
        [sys.executable, "-m", "agent", "agent", "install"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "XDG_CONFIG_HOME": str(config_home)},
    )
    assert result.returncode == 0, result.stderr
    unit = config_home / "systemd" / "user" / "watchkeeper-agent.service"
    desktop = config_home / "autostart" / "watchkeeper-agent.desktop"
    unit_text = unit.read_text()
    assert f"ExecStart={sys.executable} -m agent agent run --quiet" in unit_text
    assert f'Environment="WATCHKEEPER_HOME={os.environ["WATCHKEEPER_HOME"]}"' in unit_text
    assert "Hidden=true" in desktop.read_text()
    assert "systemctl --user enable --now watchkeeper-agent.service" in result.stdout
    assert not (config_home / "systemd" / "user" / "default.target.wants").exists()


def _fast_import_repo(path: Path, n_commits: int) -> Path:
    """A repo with n linear commits, built in one `git fast-import` stream."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    lines: list[str] = []
    start = 1_600_000_000
    for n in range(n_commits):
        message = f"commit {n}"
        lines.append("commit refs/heads/main")
        lines.append(f"mark :{n + 1}")
        lines.append(f"author Dev <dev@example.com> {start + n * 60} +0000")
        lines.append(f"committer Dev <dev@example.com> {start + n * 60} +0000")
        lines.append(f"data {len(message)}")
        lines.append(message)
        if n:
            lines.append(f"from :{n}")
        if n == 0:
            lines.append("M 644 inline file.txt\ndata 6\nhello\n")
        lines.append("")
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
    )
    return path


def test_kill_9_during_ingestion_then_restart_loses_and_duplicates_nothing(
    tmp_path: Path, paths: WatchkeeperPaths
) -> None:
    total = 60_000
    repo = _fast_import_repo(tmp_path / "big", total)
    assert cli("watch", "add", str(repo)).returncode == 0
    assert cli("agent", "start").returncode == 0
    ledger = paths.ledger

    def committed() -> int:
        try:
            connection = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
        except sqlite3.OperationalError:
            return 0
        try:
            return int(connection.execute("SELECT COUNT(*) FROM commits").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            connection.close()

    try:
        wait_for(lambda: committed() > 0, timeout=60, interval=0.005)
        _kill_agent(paths)
        partial = committed()
        assert 0 < partial < total, "the kill should land in the middle of ingestion"
        assert cli("agent", "start").returncode == 0
        wait_for(lambda: committed() == total, timeout=120, interval=0.2)
        assert cli("agent", "stop").returncode == 0
    finally:
        _kill_agent(paths)
    connection = sqlite3.connect(ledger)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert (
        connection.execute(
            "SELECT COUNT(*) FROM (SELECT sha FROM commits GROUP BY sha HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        == 0
    )
    shas = {row[0] for row in connection.execute("SELECT sha FROM commits")}
    expected = set(git(repo, "rev-list", "--all").split())
    assert shas == expected
    # Every commit has exactly one activity event: none lost with the kill, none doubled.
    events = connection.execute(
        "SELECT COUNT(*), COUNT(DISTINCT ts) FROM activity_events WHERE kind = 'commit'"
    ).fetchone()
    assert events == (total, total)
    connection.close()
