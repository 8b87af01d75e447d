"""`watchkeeper agent run`: take the lock, start every part, serve until SIGTERM, clean up."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from agent.config import UserConfig
from agent.daemon.lifecycle import PidLock, ShutdownWatchdog, configure_logging
from agent.errors import WatchkeeperError
from agent.paths import PRIVATE_UMASK, WatchkeeperPaths

log = logging.getLogger(__name__)


def run_foreground(paths: WatchkeeperPaths, *, to_stderr: bool = True) -> int:
    """Run the agent in this process until SIGTERM or SIGINT; returns the exit status.

    A problem the user can fix that is found before logging starts (an unusable home folder,
    a config.toml that does not parse) is raised as WatchkeeperError, so that the command line
    prints it as one line; one found while the parts start is logged as one line and also
    written to stderr (which `agent start` reads), and the status is 2.

    From the moment a stop begins, the process ends within `SHUTDOWN_DEADLINE_SECONDS`, even
    when a thread is stuck. The pid lock is never released by hand: it goes with the process.
    """
    os.umask(PRIVATE_UMASK)  # every file the agent creates is the user's alone
    paths.ensure()
    UserConfig.load(paths.config)
    log_file = configure_logging(paths, to_stderr=to_stderr)
    lock = PidLock(paths.pid_file)
    lock.acquire()
    stop = threading.Event()
    watchdog = ShutdownWatchdog()
    watchdog.start()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        watchdog.arm()
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    # Hand the interpreter lock around more often than the default 5 ms, so that socket
    # requests stay quick while the watchers and the worker are busy with a burst of changes.
    sys.setswitchinterval(0.001)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    from agent.daemon.service import AgentService

    service = None
    status = 1
    try:
        service = AgentService(paths)
        service.stop_requested = stop
        service.start()
        log.info("logging to %s; pid file %s", log_file, paths.pid_file)
        while not stop.wait(3600):
            pass
        status = 0
    except WatchkeeperError as error:
        log.error("the agent cannot start: %s", error)
        if not to_stderr:
            print(f"error: {error}", file=sys.stderr, flush=True)
        status = error.exit_code
    except Exception:
        log.exception("the agent failed")
    finally:
        watchdog.exit_status = status
        watchdog.arm()
        if service is not None:
            service.stop()
        lock.mark_stopped()
    return status
