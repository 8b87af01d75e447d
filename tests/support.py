"""Helpers for tests that need a real part (sshd, Slurm, a display): fail in CI, skip elsewhere."""

from __future__ import annotations

import os

import pytest


def require(available: bool, part: str, how_to_enable: str) -> None:
    """Fail when CI is set and `part` is missing; otherwise skip with the way to enable it."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{part} is required in CI but missing: {how_to_enable}")
    pytest.skip(f"{part} is missing; to run this test: {how_to_enable}")
