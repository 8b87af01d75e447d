"""The agent process: single-instance pid lock, logging, background start, stop and install."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import logging.handlers
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 5.0
SHUTDOWN_DEADLINE_SECONDS = 4.0
"""From SIGTERM to `os._exit` at the latest: a second less than `agent stop` waits."""
KERNEL_BACKSTOP_SECONDS = 0.5
"""How long after the deadline SIGALRM ends a process whose Python threads cannot run."""
START_TIMEOUT_SECONDS = 20.0
LOG_FILE_NAME = "agent.log"
UNIT_NAME = "watchkeeper-agent.service"
AUTOSTART_NAME = "watchkeeper-agent.desktop"


class AlreadyRunning(WatchkeeperError):
    """Another agent holds the pid lock."""

    def __init__(self, pid: int | None, pid_file: Path) -> None:
        shown = f"pid {pid}" if pid else "pid unknown"
        super().__init__(
            f"the agent is already running ({shown}, lock {pid_file}); "
            "use `watchkeeper agent stop` first."
        )
        self.pid = pid


def read_pid(pid_file: Path) -> int | None:
    """The pid written in the pid file, or None when absent or unreadable."""
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def process_gone(pid: int) -> bool:
    """True when the process has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def running_pid(paths: WatchkeeperPaths) -> int | None:
    """The pid of the running agent, judged by the lock (not by the file's mere presence)."""
    try:
        fd = os.open(paths.pid_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_pid(paths.pid_file) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class PidLock:
    """The single-instance lock: an flock held on the pid file for the agent's whole life."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self._fd: int | None = None
        self.stale_pid: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid; a crashed agent's leftover file is reused."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.pid_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(read_pid(self.pid_file), self.pid_file) from None
        self.stale_pid = read_pid(self.pid_file)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        if self.stale_pid and self.stale_pid != os.getpid():
            log.warning(
                "cleaned up the pid file of an agent that did not exit cleanly (pid %d)",
                self.stale_pid,
            )

    def mark_stopped(self) -> None:
        """Empty the pid file (a clean stop) but keep the lock: only the process's exit frees it.

        Unlinking or closing the file here would let a second agent lock a new pid file while
        this process still runs its last threads.
        """
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)


class ShutdownWatchdog:
    """Ends the process a fixed time after shutdown begins, however its threads are stuck.

    `arm()` (called on SIGTERM, SIGINT or a `stop` request) starts the clock. A daemon thread
    calls `os._exit` when time is up, and a kernel timer (SIGALRM, whose default action ends
    the process) backs it up in case no Python thread can run any more. The clock keeps running
    through the interpreter's own exit, which waits for every non-daemon thread.
    """

    def __init__(self, seconds: float = SHUTDOWN_DEADLINE_SECONDS) -> None:
        self.seconds = seconds
        self.exit_status = 0
        self._armed_at: float | None = None
        self._armed = threading.Event()
        self._thread = threading.Thread(
            target=self._end_when_late, name="wk-shutdown-watchdog", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def arm(self) -> None:
        """Start the clock (once; later calls keep the first deadline)."""
        if self._armed_at is not None:
            return
        self._armed_at = time.monotonic()
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, self.seconds + KERNEL_BACKSTOP_SECONDS)
        self._armed.set()

    def _end_when_late(self) -> None:
        self._armed.wait()
        assert self._armed_at is not None
        time.sleep(max(0.0, self._armed_at + self.seconds - time.monotonic()))
        stuck = sorted(
            thread.name
            for thread in threading.enumerate()
            if thread.is_alive() and thread is not threading.current_thread()
        )
        log.error(
            "shutdown took longer than %.1f s; ending the process now (threads still running: %s)",
            self.seconds,
            ", ".join(stuck) or "none",
        )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(self.exit_status)


@dataclass
class _Repeats:
    last_emitted: float
    last_seen: float
    suppressed: int = 0


class RepeatedMessageFilter(logging.Filter):
    """Lets the first of identical log lines through, then one summary per `interval` seconds.

    A repeat seen more than `interval` seconds after the last line written for it is written
    as `last message repeated N times: MESSAGE` (without its traceback). A message quiet for
    `interval` seconds starts afresh. One instance serves every handler, so each record is
    judged once.

    >>> logger = logging.getLogger("doctest.repeats"); logger.propagate = False
    >>> handler = logging.StreamHandler(sys.stdout); handler.addFilter(RepeatedMessageFilter(60))
    >>> logger.addHandler(handler)
    >>> for _ in range(3): logger.warning("disk full")
    disk full
    """

    def __init__(self, interval: float = 5.0, max_tracked: int = 256) -> None:
        super().__init__()
        self.interval = interval
        self.max_tracked = max_tracked
        self._repeats: dict[tuple[str, int, str], _Repeats] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        verdict = getattr(record, "_watchkeeper_repeat_verdict", None)
        if verdict is not None:
            return bool(verdict)
        verdict = self._judge(record)
        record._watchkeeper_repeat_verdict = verdict
        return verdict

    def _judge(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        message = record.getMessage()
        key = (record.name, record.levelno, message)
        with self._lock:
            seen = self._repeats.get(key)
            if seen is None or now - seen.last_seen > self.interval:
                if seen is None and len(self._repeats) >= self.max_tracked:
                    oldest = min(self._repeats, key=lambda k: self._repeats[k].last_seen)
                    del self._repeats[oldest]
                self._repeats[key] = _Repeats(last_emitted=now, last_seen=now)
                return True
            seen.last_seen = now
            seen.suppressed += 1
            if now - seen.last_emitted < self.interval:
                return False
            count, seen.suppressed, seen.last_emitted = seen.suppressed, 0, now
        record.msg = "last message repeated %d times: %s"
        record.args = (count, message)
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def configure_logging(
    paths: WatchkeeperPaths, *, to_stderr: bool, level: int = logging.INFO
) -> Path:
    """Log to stderr (foreground) and to a rotating file under the logs folder.

    Identical lines in a burst are written once, then summarised (RepeatedMessageFilter), so
    that a fault repeating many times a second cannot rotate the log's history away.
    """
    paths.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_file = paths.logs / LOG_FILE_NAME
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_watchkeeper", False):
            root.removeHandler(handler)
    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=2 * 1024 * 1024, backupCount=3, encoding="utf-8"
    )
    handlers: list[logging.Handler] = [file_handler]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    repeats = RepeatedMessageFilter()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(repeats)
        handler._watchkeeper = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return log_file


def agent_command() -> list[str]:
    """The command line that runs the agent in the foreground."""
    return [sys.executable, "-m", "agent", "agent", "run"]


def start_background(paths: WatchkeeperPaths) -> int:
    """Start the agent detached from the terminal and wait until its socket answers."""
    pid = running_pid(paths)
    if pid:
        raise AlreadyRunning(pid if pid > 0 else None, paths.pid_file)
    paths.ensure()
    paths.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    stderr_path = paths.logs / "agent.stderr"
    log_path = paths.logs / LOG_FILE_NAME
    offsets = {stderr_path: _size(stderr_path), log_path: _size(log_path)}
    with open(stderr_path, "ab") as stderr:
        process = subprocess.Popen(
            [*agent_command(), "--quiet"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
        )
    from agent.client import AgentClient

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            reason = _start_failure_reason(offsets) or "it gave no reason"
            raise WatchkeeperError(
                f"the agent exited during start-up (status {code}): {reason} (log: {log_path})"
            )
        client = AgentClient.connect_or_none(paths.socket, timeout=2.0)
        if client is not None:
            with client, contextlib.suppress(WatchkeeperError, OSError, ValueError):
                status = client.call("status")
                return int(status["pid"])
        time.sleep(0.1)
    raise WatchkeeperError(
        f"the agent (pid {process.pid}) did not answer on {paths.socket} within "
        f"{START_TIMEOUT_SECONDS:.0f} s; see {paths.logs / LOG_FILE_NAME}."
    )


def stop_agent(paths: WatchkeeperPaths, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
    """Send SIGTERM to the running agent and wait until it has released its lock."""
    pid = running_pid(paths)
    if not pid:
        return None
    deadline = time.monotonic() + timeout
    if pid < 0:  # the lock is held but the pid file is empty: an agent finishing its stop
        while running_pid(paths) is not None:
            if time.monotonic() >= deadline:
                raise WatchkeeperError(
                    f"an agent still holds the lock on {paths.pid_file} after {timeout:.0f} s; "
                    f"find it with `fuser {paths.pid_file}` and end it with `kill -9`."
                )
            time.sleep(0.05)
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    while time.monotonic() < deadline:
        if running_pid(paths) is None and process_gone(pid):
            return pid
        time.sleep(0.05)
    raise WatchkeeperError(
        f"the agent (pid {pid}) did not stop within {timeout:.0f} s of SIGTERM; "
        f"see {paths.logs / LOG_FILE_NAME}, or end it with `kill -9 {pid}`."
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _start_failure_reason(offsets: dict[Path, int]) -> str:
    """The last line a dying agent wrote after `offsets` (stderr first, then its log)."""
    for path, offset in offsets.items():
        try:
            with open(path, "rb") as handle:
                handle.seek(offset if _size(path) >= offset else 0)
                text = handle.read().decode(errors="replace")
        except OSError:
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1].removeprefix("error: ")
    return ""


@dataclass(frozen=True)
class InstalledFiles:
    systemd_unit: Path
    autostart_entry: Path


def install_units(paths: WatchkeeperPaths, config_home: Path | None = None) -> InstalledFiles:
    """Write a systemd user unit and an XDG autostart entry; enable nothing."""
    config_home = config_home or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    unit_path = config_home / "systemd" / "user" / UNIT_NAME
    autostart_path = config_home / "autostart" / AUTOSTART_NAME
    command = " ".join(shlex.quote(part) for part in agent_command())
    environment = ""
    home = os.environ.get("WATCHKEEPER_HOME")
    if home:
        environment = f"Environment={_systemd_quote('WATCHKEEPER_HOME=' + home)}\n"
    unit = (
        "[Unit]\n"
        "Description=Watchkeeper agent: watches repos and data folders, keeps the model ledger\n"
        "After=default.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={command} --quiet\n"
        f"{environment}"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "TimeoutStopSec=10\n\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )
    start_command = " ".join(
        shlex.quote(part) for part in [sys.executable, "-m", "agent", "agent", "start"]
    )
    if home:
        start_command = f"env WATCHKEEPER_HOME={shlex.quote(home)} {start_command}"
    desktop = (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=Watchkeeper agent\n"
        "Comment=Watches repos and data folders and keeps the model ledger\n"
        f"Exec=sh -c {shlex.quote(start_command)}\n"
        "Terminal=false\n"
        "NoDisplay=true\n"
        "Hidden=true\n"
    )
    for path, text in ((unit_path, unit), (autostart_path, desktop)):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    return InstalledFiles(unit_path, autostart_path)


def _systemd_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
