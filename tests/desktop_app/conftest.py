"""Fixtures for the desktop app tests: populated ledgers, the app, a real in-process agent."""

from __future__ import annotations

import gc
import shlex
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from agent.paths import WatchkeeperPaths
from benchmarks.make_app_fixture import build_fixture

SMALL_VERSIONS = 3_000
SMALL_DAYS = 60


@pytest.fixture(scope="session", autouse=True)
def _freeze_qt_objects_at_exit() -> Iterator[None]:
    """Keep the interpreter's last GC away from PySide6/pyqtgraph objects (see app.shutdown)."""
    yield
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def fixture_ledger_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A populated ledger built once per session; tests copy it."""
    path = tmp_path_factory.mktemp("ledger-template") / "ledger.db"
    build_fixture(path, versions=SMALL_VERSIONS, days=SMALL_DAYS)
    return path


@pytest.fixture
def paths(watchkeeper_home: Path) -> WatchkeeperPaths:
    return WatchkeeperPaths.from_environment().ensure()


@pytest.fixture
def populated_ledger(paths: WatchkeeperPaths, fixture_ledger_template: Path) -> Path:
    """This test's WATCHKEEPER_HOME holds a copy of the populated ledger."""
    shutil.copyfile(fixture_ledger_template, paths.ledger)
    return paths.ledger


@pytest.fixture
def make_app(qtbot: QtBot, paths: WatchkeeperPaths) -> Iterator[Callable[..., object]]:
    """Build a WatchkeeperApp (no tray unless asked) and shut it down after the test."""
    from desktop_app.app import WatchkeeperApp

    apps: list[WatchkeeperApp] = []

    def factory(*, use_tray: bool = False, start: bool = True) -> WatchkeeperApp:
        app = WatchkeeperApp(paths, use_tray=use_tray)
        qtbot.addWidget(app.window)
        if start:
            app.start()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.shutdown()


PYTHON = shlex.quote(sys.executable)
TRAIN_SCRIPT = textwrap.dedent(
    """\
    import json, pathlib, sys
    rows = pathlib.Path("data/train.csv").read_text().splitlines()
    for index in range(3):
        print("epoch", index, "rows", len(rows), flush=True)
    pathlib.Path("model.txt").write_text(str(len(rows)))
    json.dump({"rows": len(rows), "loss": 0.25}, open("metrics.json", "w"))
    """
)
MODEL_SPEC = textwrap.dedent(
    f"""\
    [models.churn]
    train = "{PYTHON} train.py"
    deps = ["train.py"]
    outs = ["model.txt"]
    metrics = "metrics.json"
    """
)


@pytest.fixture
def trained_repo(tmp_path: Path, paths: WatchkeeperPaths) -> Path:
    """A git repo declaring model `churn`, trained once locally (version 1 in the ledger)."""
    from agent.ledger import open_ledger
    from agent.runs.training import train
    from tests.agent.daemon.conftest import make_repo

    repo = make_repo(
        tmp_path / "repo",
        {
            "train.py": TRAIN_SCRIPT,
            "watchkeeper.toml": MODEL_SPEC,
            "data/train.csv": "age,city\n31,Paris\n42,Oslo\n",
        },
    )
    db = open_ledger(paths.ledger)
    try:
        result = train(repo, "churn", db=db, paths=paths)
    finally:
        db.close()
    assert result.status == "succeeded", result.log_tail
    return repo


@pytest.fixture
def start_agent(paths: WatchkeeperPaths) -> Iterator[Callable[[], object]]:
    """Start the real agent service in this process (its socket, ledger and training)."""
    from agent.config import UserConfig
    from agent.daemon.service import AgentService

    services: list[AgentService] = []

    def factory() -> AgentService:
        service = AgentService(paths, config=UserConfig.load(paths.config))
        service.start()
        assert service.worker.wait_idle(30)
        services.append(service)
        return service

    yield factory
    for service in services:
        if not service.server._stopping.is_set():
            service.stop()
