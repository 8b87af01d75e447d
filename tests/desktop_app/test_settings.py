"""The Settings page: watched folders without an agent, identities, and remotes on a real sshd."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from agent.config import UserConfig
from agent.paths import WatchkeeperPaths
from agent.remote.config import RemoteConfig, save_remote
from tests.agent.remote.sshd_server import LoopbackSshd, sshd_available
from tests.support import require

pytestmark = pytest.mark.gui


def test_watched_folders_and_identities_are_saved_without_an_agent(
    tmp_path: Path, make_app: Callable[..., Any], qtbot: QtBot, paths: WatchkeeperPaths
) -> None:
    from tests.agent.daemon.conftest import make_repo

    repo = make_repo(tmp_path / "repo")
    data = tmp_path / "data"
    data.mkdir()
    app = make_app()
    page = app.window.show_page("Settings")
    page.add_watch(str(repo), data=False)
    page.add_watch(str(data), data=True)
    page.add_watch(str(tmp_path / "missing"), data=True)
    assert "no such file or folder" in app.window.status_label.text()
    page.identity_edit.setText("dev@example.com")
    qtbot.keyClick(page.identity_edit, Qt.Key.Key_Return)
    page.identity_edit.setText("not an email")
    page.add_identity()

    config = UserConfig.load(paths.config)
    assert config.watched_repos == [str(repo)]
    assert config.watched_data == [str(data)]
    assert config.identity_emails == ["dev@example.com"]
    assert [page.repos.item(i).text() for i in range(page.repos.count())] == [str(repo)]

    page.repos.setCurrentRow(0)
    page.remove_selected(page.repos)
    assert UserConfig.load(paths.config).watched_repos == []


@pytest.fixture
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    require(sshd_available(), "OpenSSH sshd", "apt-get install -y openssh-server (as root)")
    server = LoopbackSshd.create(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


@pytest.mark.ssh
def test_a_remote_is_trusted_by_its_fingerprint_and_then_answers(
    sshd: LoopbackSshd,
    make_app: Callable[..., Any],
    qtbot: QtBot,
    paths: WatchkeeperPaths,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    save_remote(
        RemoteConfig(
            name="box", host="127.0.0.1", port=sshd.port, user=sshd.user, key=str(sshd.user_key)
        )
    )
    expected = subprocess.run(
        ["ssh-keygen", "-lf", f"{sshd.host_key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    app = make_app()
    page = app.window.show_page("Settings")
    assert page.remotes.item(0).text() == "box — ssh on 127.0.0.1"
    page.remotes.setCurrentRow(0)

    page.test_selected_remote()  # not trusted yet: refused, naming the fingerprint
    qtbot.waitUntil(lambda: "did not answer" in app.window.status_label.text(), timeout=20_000)
    assert expected in app.window.status_label.text()

    asked: list[str] = []

    def answer_yes(*args: Any, **kwargs: Any) -> QMessageBox.StandardButton:
        asked.append(args[2])
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", answer_yes)
    page.trust_selected_remote()
    qtbot.waitUntil(lambda: "Trusted box" in app.window.status_label.text(), timeout=20_000)
    assert expected in asked[0]
    assert f"[127.0.0.1]:{sshd.port}" in paths.known_hosts.read_text()

    page.test_selected_remote()
    qtbot.waitUntil(lambda: "box answers: Linux" in app.window.status_label.text(), timeout=20_000)
