"""Test helpers: require a real part (sshd, Slurm, a display), wait, run a call on a thread."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

T = TypeVar("T")


def require(available: bool, part: str, how_to_enable: str) -> None:
    """Fail when CI is set and `part` is missing; otherwise skip with the way to enable it."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{part} is required in CI but missing: {how_to_enable}")
    pytest.skip(f"{part} is missing; to run this test: {how_to_enable}")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str | Callable[[], str] = "",
    interval: float = 0.05,
) -> T:
    """Call `predicate` until it returns something truthy, and return that.

    Fails the test, naming `what` (or the predicate), when `timeout` seconds pass first; `what`
    may be a function, called then, to describe the state that was reached instead. The
    predicate is always called once more at the deadline, so a slow machine cannot fail a wait
    whose condition came true during the last sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    value = predicate()
    if value:
        return value
    described = what() if callable(what) else what
    pytest.fail(
        f"timed out after {timeout:g} s waiting for {described or predicate}", pytrace=False
    )


class BackgroundCall(Generic[T]):
    """`target(*args)` run on a daemon thread; `result()` gives back its value or its exception.

    A helper thread that fails must fail the test with its own error, not leave the test to
    time out waiting for something the thread will never do.

    >>> BackgroundCall(int, "12").result(5)
    12
    >>> BackgroundCall(int, "twelve").result(5)
    Traceback (most recent call last):
    ...
    ValueError: invalid literal for int() with base 10: 'twelve'
    """

    def __init__(self, target: Callable[..., T], *args: Any, name: str = "") -> None:
        self.name = name or getattr(target, "__name__", "a background call")
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(target, args), daemon=True)
        self._thread.start()

    def _run(self, target: Callable[..., T], args: tuple[Any, ...]) -> None:
        try:
            self._value = target(*args)
        except BaseException as error:
            self._error = error

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float) -> T:
        """Wait up to `timeout` seconds; re-raise what the call raised; fail if it still runs."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            pytest.fail(f"{self.name} still running after {timeout:g} s", pytrace=False)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def ledger_with_clobbered_pages(path: Path, first_page: int, pages: int) -> bytes:
    """A real ledger of 200 repos at `path`, with `pages` pages from `first_page` (counted
    from 0, the header's page) overwritten by 0xff; returns the file's bytes."""
    from agent.ledger import open_ledger, write_transaction
    from agent.ledger.queries import register_repo

    db = open_ledger(path)
    with write_transaction(db):
        for number in range(200):
            register_repo(db, path.parent / f"repo-{number}")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    start = page_size * first_page
    data[start : start + page_size * pages] = b"\xff" * (page_size * pages)
    path.write_bytes(bytes(data))
    return bytes(data)
