"""Shared pytest fixtures: a private WATCHKEEPER_HOME per test and offscreen Qt."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def watchkeeper_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own WATCHKEEPER_HOME so that nothing touches the user's files."""
    home = tmp_path_factory.mktemp("wk-home")
    monkeypatch.setenv("WATCHKEEPER_HOME", str(home))
    yield home
