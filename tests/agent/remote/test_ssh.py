"""Against a real sshd: host keys, login errors, `remote trust` and `remote test`, quoting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths
from agent.remote.config import RemoteConfig, save_remote
from agent.remote.connection import LoginFailedError, RemoteSession, quote_command
from agent.remote.hostkeys import ChangedHostKeyError, UnknownHostKeyError, fingerprint
from tests.agent.remote.conftest import RemoteFactory
from tests.agent.remote.sshd_server import LoopbackSshd
from tests.support import wait_for

pytestmark = pytest.mark.ssh


def ssh_keygen_fingerprint(public_key_file: Path) -> str:
    output = subprocess.run(
        ["ssh-keygen", "-lf", str(public_key_file)], capture_output=True, text=True, check=True
    ).stdout
    return output.split()[1]


def test_fingerprint_matches_openssh(shared_sshd: LoopbackSshd) -> None:
    key = paramiko.PKey.from_path(str(shared_sshd.host_key))
    assert fingerprint(key) == ssh_keygen_fingerprint(shared_sshd.folder / "host_ed25519.pub")


def test_unknown_host_key_is_refused_with_its_fingerprint(
    shared_sshd: LoopbackSshd, make_remote: RemoteFactory
) -> None:
    remote = make_remote(shared_sshd, trusted=False)
    expected = ssh_keygen_fingerprint(shared_sshd.folder / "host_ed25519.pub")
    with pytest.raises(UnknownHostKeyError, match="not known") as caught:
        RemoteSession(remote, retry_for=0).connection()
    assert expected in str(caught.value)
    assert "remote trust box" in str(caught.value)
    assert not WatchkeeperPaths.from_environment().known_hosts.exists()


def test_trust_asks_then_stores_and_connects(
    shared_sshd: LoopbackSshd, make_remote: RemoteFactory
) -> None:
    make_remote(shared_sshd, trusted=False)
    runner = CliRunner()
    expected = ssh_keygen_fingerprint(shared_sshd.folder / "host_ed25519.pub")
    declined = runner.invoke(main, ["remote", "trust", "box"], input="n\n")
    assert expected in declined.output and declined.exit_code == 2
    assert not WatchkeeperPaths.from_environment().known_hosts.exists()
    accepted = runner.invoke(main, ["remote", "trust", "box", "--yes"])
    assert accepted.exit_code == 0, accepted.output
    assert expected in accepted.output
    known_hosts = WatchkeeperPaths.from_environment().known_hosts.read_text()
    assert known_hosts.startswith(f"[127.0.0.1]:{shared_sshd.port} ssh-ed25519 ")
    tested = runner.invoke(main, ["remote", "test", "box"])
    assert tested.exit_code == 0, tested.output
    assert "host key" in tested.output and expected in tested.output
    assert "Python 3." in tested.output and "git" in tested.output and "GB free" in tested.output


def test_changed_host_key_is_refused_showing_both_fingerprints(
    private_sshd: LoopbackSshd, make_remote: RemoteFactory
) -> None:
    remote = make_remote(private_sshd)
    old = ssh_keygen_fingerprint(private_sshd.folder / "host_ed25519.pub")
    RemoteSession(remote, retry_for=0).connection().close()
    private_sshd.stop()
    for suffix in ("", ".pub"):
        Path(str(private_sshd.host_key) + suffix).unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private_sshd.host_key)],
        check=True,
    )
    private_sshd.start()
    new = ssh_keygen_fingerprint(private_sshd.folder / "host_ed25519.pub")
    with pytest.raises(ChangedHostKeyError) as caught:
        RemoteSession(remote, retry_for=0).connection()
    assert old in str(caught.value) and new in str(caught.value)
    assert "CHANGED" in str(caught.value)
    trust = CliRunner().invoke(main, ["remote", "trust", "box", "--yes"])
    assert trust.exit_code == 2 and old in trust.output and new in trust.output
    assert WatchkeeperPaths.from_environment().known_hosts.read_text().count("ssh-ed25519") == 1


def test_failed_login_names_user_host_and_key(
    shared_sshd: LoopbackSshd, make_remote: RemoteFactory, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    remote = make_remote(shared_sshd)
    wrong = RemoteConfig(**{**remote.__dict__, "key": str(stranger), "user": "nobody"})
    save_remote(wrong)
    with pytest.raises(LoginFailedError) as caught:
        RemoteSession(wrong, retry_for=0).connection()
    message = str(caught.value)
    assert "'nobody'" in message and f"127.0.0.1:{shared_sshd.port}" in message
    assert str(stranger) in message and "authorized_keys" in message


def test_arguments_with_shell_metacharacters_arrive_unchanged(box: RemoteConfig) -> None:
    words = ["a b", "it's", '"q"', "$HOME", "`id`", "x; echo pwned", "*", "\\n", "é ✓", ""]
    with RemoteSession(box, retry_for=0) as session:
        result = session.run(
            [box.python, "-c", "import json,sys; print(json.dumps(sys.argv[1:]))", *words]
        )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.text) == words
    assert "pwned" not in quote_command(words).replace("'x; echo pwned'", "")


def test_missing_python_is_reported_by_remote_test_and_before_upload(
    shared_sshd: LoopbackSshd, make_remote: RemoteFactory
) -> None:
    remote = make_remote(shared_sshd, python="python3.99")
    tested = CliRunner().invoke(main, ["remote", "test", "box"])
    assert tested.exit_code == 1
    assert "python 'python3.99' was not found" in tested.output
    with (
        RemoteSession(remote, retry_for=0) as session,
        pytest.raises(WatchkeeperError, match=r"python3\.99"),
    ):
        session.require_python()


def test_ssh_config_alias_identity_file_and_proxy_jump_are_honoured(
    shared_sshd: LoopbackSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host trainbox\n  HostName 127.0.0.1\n  Port {shared_sshd.port}\n"
        f"  User {shared_sshd.user}\n  IdentityFile {shared_sshd.user_key}\n"
        "  ProxyJump bastion\n"
        f"Host bastion\n  HostName 127.0.0.1\n  Port {shared_sshd.port}\n"
        f"  User {shared_sshd.user}\n  IdentityFile {shared_sshd.user_key}\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    from tests.agent.remote.conftest import REMOTE_PYTHON, trust_fixture_host

    trust_fixture_host(shared_sshd)
    remote = RemoteConfig(name="viaalias", host="trainbox", python=REMOTE_PYTHON)
    save_remote(remote)
    with RemoteSession(remote, retry_for=0) as session:
        assert [hop.alias for hop in session.target.jumps] == ["bastion"]
        connection = session.connection()
        assert connection._via, "the connection should go through the jump host"
        assert session.run(["echo", "through the jump"]).text == "through the jump\n"


def test_user_known_hosts_is_read_but_never_written(
    shared_sshd: LoopbackSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    user_known_hosts = home / ".ssh" / "known_hosts"
    user_known_hosts.write_text(shared_sshd.known_hosts_line())
    before = user_known_hosts.read_bytes()
    monkeypatch.setenv("HOME", str(home))
    from tests.agent.remote.conftest import REMOTE_PYTHON

    remote = RemoteConfig(
        name="viauser",
        host="127.0.0.1",
        port=shared_sshd.port,
        user=shared_sshd.user,
        key=str(shared_sshd.user_key),
        python=REMOTE_PYTHON,
    )
    with RemoteSession(remote, retry_for=0) as session:
        assert session.run(["true"]).exit_code == 0
    assert user_known_hosts.read_bytes() == before
    assert not WatchkeeperPaths.from_environment().known_hosts.exists()


def test_login_through_a_running_ssh_agent(
    shared_sshd: LoopbackSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        wait_for(socket_path.exists, 10, "ssh-agent to create its socket")
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", "-q", str(shared_sshd.user_key)], env=env, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        monkeypatch.setenv("HOME", str(tmp_path))  # no key files to fall back on
        from tests.agent.remote.conftest import trust_fixture_host

        trust_fixture_host(shared_sshd)
        remote = RemoteConfig(
            name="viaagent", host="127.0.0.1", port=shared_sshd.port, user=shared_sshd.user
        )
        with RemoteSession(remote, retry_for=0) as session:
            assert session.run(["echo", "agent ok"]).text == "agent ok\n"
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_keys_serve_as_long_as_openssh_lets_them_not_paramikos_512_mib(box: RemoteConfig) -> None:
    """paramiko's own rekey at 512 MiB deadlocked its transport thread for 30 s whenever sshd
    closed a channel during it (a gigabyte's upload met it nearly every time)."""
    with RemoteSession(box) as session:
        transport = session.connection().transport
        assert transport.local_cipher.startswith("aes")
        assert transport.packetizer.REKEY_BYTES == 64 << 30
        assert paramiko.Packetizer.REKEY_BYTES == 1 << 29  # only our transports are changed
        result = session.run(["echo", "still talking"])
        assert result.text.strip() == "still talking"


def test_ssh_messages_leave_without_waiting_for_nagle(box: RemoteConfig) -> None:
    """With Nagle's algorithm on, a message written in two parts waited for the server's
    delayed ACK: 40 ms of every login to sshd on Linux."""
    with RemoteSession(box) as session:
        sock = session.connection().transport.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
