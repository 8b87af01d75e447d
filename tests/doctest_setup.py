"""Pytest plugin for the doctests of the packages: a private WATCHKEEPER_HOME, offscreen Qt."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def doctest_watchkeeper_home(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path | None]:
    """Doctests in the packages get their own WATCHKEEPER_HOME, as every test does."""
    if not isinstance(request.node, DoctestItem):
        yield None
        return
    home = tmp_path_factory.mktemp("wk-home-doctest")
    monkeypatch.setenv("WATCHKEEPER_HOME", str(home))
    yield home
