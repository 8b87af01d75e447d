"""Fixtures: a real OpenSSH sshd on 127.0.0.1 and remotes configured to reach it.

The fixture host key is trusted by writing Watchkeeper's known_hosts file in the test setup
(`trusted_remote`); tests of trust itself go through `watchkeeper remote trust --yes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.paths import WatchkeeperPaths
from agent.remote.config import RemoteConfig, save_remote
from tests.agent.remote.sshd_server import LoopbackSshd, sshd_available
from tests.support import require

REMOTE_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
HOW_TO_ENABLE_SSHD = "apt-get install -y openssh-server && mkdir -p /run/sshd (as root)"


def _require_sshd() -> None:
    require(sshd_available(), "OpenSSH sshd", HOW_TO_ENABLE_SSHD)


@pytest.fixture(scope="session")
def shared_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """One sshd for the whole session (tests that stop sshd use `private_sshd`)."""
    _require_sshd()
    server = LoopbackSshd.create(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """An sshd of this test alone, which the test may stop and start again."""
    _require_sshd()
    server = LoopbackSshd.create(tmp_path_factory.mktemp("sshd-private"))
    server.start()
    yield server
    server.stop()


def trust_fixture_host(server: LoopbackSshd) -> Path:
    """Write the fixture's host key into Watchkeeper's known_hosts (test setup only)."""
    known_hosts = WatchkeeperPaths.from_environment().ensure().known_hosts
    with known_hosts.open("a") as handle:
        handle.write(server.known_hosts_line())
    return known_hosts


RemoteFactory = Callable[..., RemoteConfig]


@pytest.fixture
def make_remote(tmp_path: Path) -> RemoteFactory:
    """Configure a remote called NAME for an sshd, its host key trusted unless trusted=False."""

    def make(
        server: LoopbackSshd,
        name: str = "box",
        *,
        trusted: bool = True,
        kind: str = "ssh",
        python: str = REMOTE_PYTHON,
        **extra: object,
    ) -> RemoteConfig:
        if trusted:
            trust_fixture_host(server)
        remote = RemoteConfig(
            name=name,
            host="127.0.0.1",
            port=server.port,
            user=server.user,
            key=str(server.user_key),
            kind=kind,  # type: ignore[arg-type]
            workdir=str(tmp_path / f"remote-{name}"),
            python=python,
            **extra,  # type: ignore[arg-type]
        )
        save_remote(remote)
        return remote

    return make


@pytest.fixture
def box(shared_sshd: LoopbackSshd, make_remote: RemoteFactory) -> RemoteConfig:
    """A trusted ssh remote on the shared sshd."""
    return make_remote(shared_sshd)
