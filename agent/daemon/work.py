"""A single worker thread running debounced jobs: many requests for one key become one run."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger(__name__)


MAX_RETRY_DELAY_SECONDS = 60.0


@dataclass
class _Pending:
    job: Callable[[], object]
    due: float
    deadline: float


@dataclass
class Retry:
    """A job that met a passing fault (a locked ledger, a full disk) and will run again."""

    attempts: int
    error: str
    next_at: float  # wall-clock time of the next attempt


def never_transient(error: Exception) -> bool:
    return False


class DebouncedWorker:
    """Runs jobs one at a time, after `delay` seconds of quiet per key (but by `max_delay`).

    A key requested again while its job runs is queued once more, so a change that lands during
    a run is never lost.

    >>> worker = DebouncedWorker(); worker.start()
    >>> done = threading.Event()
    >>> worker.request("k", done.set, delay=0.01)
    >>> done.wait(2)
    True
    >>> worker.stop()

    A job that raises an error `is_transient` accepts is run again after 1, 2, 4… seconds (at
    most a minute apart) until it succeeds, so work is never dropped; `retries` says which.
    """

    def __init__(
        self,
        name: str = "wk-worker",
        *,
        is_transient: Callable[[Exception], bool] = never_transient,
    ) -> None:
        self.is_transient = is_transient
        self.retries: dict[Hashable, Retry] = {}
        self._pending: dict[Hashable, _Pending] = {}
        self._condition = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.running_key: Hashable | None = None
        self.jobs_run = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def request(
        self,
        key: Hashable,
        job: Callable[[], object],
        *,
        delay: float = 0.0,
        max_delay: float | None = None,
    ) -> None:
        """Ask for `job` to run once `key` has been quiet for `delay` seconds."""
        now = time.monotonic()
        with self._condition:
            pending = self._pending.get(key)
            if pending is None:
                limit = now + (max_delay if max_delay is not None else max(delay, 0.0) * 10 + 1)
                self._pending[key] = _Pending(job, min(now + delay, limit), limit)
            else:
                pending.job = job
                pending.due = min(now + delay, pending.deadline)
            self._condition.notify()

    def _retry_later(self, key: Hashable, job: Callable[[], object], error: Exception) -> None:
        previous = self.retries.get(key)
        attempts = 1 if previous is None else previous.attempts + 1
        delay = min(2.0 ** (attempts - 1), MAX_RETRY_DELAY_SECONDS)
        self.retries[key] = Retry(attempts, str(error), time.time() + delay)
        log.warning(
            "background job %r: %s; retrying in %.0f s (attempt %d)",
            key,
            error,
            delay,
            attempts + 1,
        )
        with self._condition:
            if key not in self._pending:  # a newer request for the key stands as it is
                now = time.monotonic()
                self._pending[key] = _Pending(job, now + delay, now + delay)
            self._condition.notify()

    def describe_retries(self) -> list[dict[str, object]]:
        """The jobs waiting to be retried: key, attempts so far, the error, the next attempt."""
        return [
            {
                "job": repr(key),
                "attempts": retry.attempts,
                "error": retry.error,
                "next_at": retry.next_at,
            }
            for key, retry in list(self.retries.items())
        ]

    def is_idle(self) -> bool:
        with self._condition:
            return not self._pending and self.running_key is None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending or running (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_idle():
                return True
            time.sleep(0.02)
        return self.is_idle()

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._stopping:
                    if self._pending:
                        key, pending = min(self._pending.items(), key=lambda item: item[1].due)
                        wait = pending.due - time.monotonic()
                        if wait <= 0:
                            del self._pending[key]
                            self.running_key = key
                            break
                        self._condition.wait(wait)
                    else:
                        self._condition.wait()
                if self._stopping:
                    return
            try:
                pending.job()
            except Exception as error:
                if self.is_transient(error):
                    self._retry_later(key, pending.job, error)
                else:
                    self.retries.pop(key, None)
                    log.exception("background job %r failed", key)
            else:
                if self.retries.pop(key, None) is not None:
                    log.info("background job %r succeeded after retrying", key)
            finally:
                self.jobs_run += 1
                with self._condition:
                    self.running_key = None
