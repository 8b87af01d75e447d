"""Test helpers: require a real part (sshd, Slurm, a display); wait for a condition."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

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
