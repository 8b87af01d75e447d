"""Bulk upload through the system ssh client over a real sshd: pinned host key, fallbacks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from agent.data.stat_cache import StatCache
from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths
from agent.remote.config import RemoteConfig
from agent.remote.connection import RemoteSession, handshake
from agent.remote.hostkeys import HostKeyStore
from agent.remote.openssh_lane import OpenSshLauncher
from agent.remote.sync import LocalFile, SyncReport, TreeHasher, sync_tree
from tests.agent.remote.conftest import RemoteFactory
from tests.agent.remote.sshd_server import LoopbackSshd
from tests.support import require, wait_for

pytestmark = pytest.mark.ssh


@pytest.fixture(autouse=True)
def _openssh_client() -> None:
    """The ssh client is a real part here: a failure under CI, a skip that says how elsewhere."""
    require(
        shutil.which("ssh") is not None, "the OpenSSH client", "apt-get install -y openssh-client"
    )


MiB = 1 << 20


def make_tree(root: Path, files: int = 24, size: int = 256 << 10) -> None:
    for index in range(files):
        path = root / f"part{index % 4}" / f"shard {index:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)


def identical(left: Path, right: Path) -> bool:
    return (
        subprocess.run(["diff", "-r", str(left), str(right)], capture_output=True).returncode == 0
    )


def cache_is_sound(session: RemoteSession) -> bool:
    blobs = [p for p in Path(session.cache_dir).glob("blobs/*") if p.is_file()]
    return bool(blobs) and all(blake3.blake3(p.read_bytes()).hexdigest() == p.name for p in blobs)


def ssh_children() -> list[int]:
    """Our child processes running ssh."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and name == "ssh" and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the sync's temporary folders go, to see that none is left behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def session(box: RemoteConfig) -> Iterator[RemoteSession]:
    with RemoteSession(box, retry_for=10) as session:
        yield session


def test_a_large_upload_goes_over_ssh_processes_and_arrives_whole(
    session: RemoteSession, tmp_path: Path, private_tmp: Path
) -> None:
    source = tmp_path / "source"
    make_tree(source)
    dest = session.workdir + "/dest"
    report = sync_tree(
        session, source, dest, openssh_from=MiB, hash_cache=StatCache(tmp_path / "c")
    )
    assert report.bulk_transport == "openssh" and report.openssh_note == ""
    assert report.blobs_sent == 25
    assert identical(source, Path(dest)) and cache_is_sound(session)
    assert os.access(Path(dest) / "run.sh", os.X_OK)
    assert list(private_tmp.iterdir()) == []  # the pinned known_hosts went with its folder
    assert ssh_children() == []


def test_a_small_upload_stays_on_paramiko(
    session: RemoteSession, tmp_path: Path, private_tmp: Path
) -> None:
    source = tmp_path / "source"
    make_tree(source, files=4)
    report = sync_tree(session, source, session.workdir + "/dest")  # the default threshold
    assert report.bulk_transport == "paramiko" and report.remote_programs == 2
    assert identical(source, Path(session.workdir + "/dest"))
    assert list(private_tmp.iterdir()) == []


def test_the_ssh_command_pins_the_verified_host_key_and_the_login_key(
    session: RemoteSession, box: RemoteConfig, private_tmp: Path
) -> None:
    connection = session.connection()
    launcher = OpenSshLauncher(connection, box.name)
    try:
        argv = launcher.argv("true")
        known_hosts = launcher.known_hosts
        assert known_hosts.stat().st_mode & 0o777 == 0o600
        assert launcher.folder.stat().st_mode & 0o777 == 0o700
        assert connection.host_key is not None
        pinned = known_hosts.read_text().split()
        assert pinned[1:] == [connection.host_key.get_name(), connection.host_key.get_base64()]
        options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
        for option in (
            "StrictHostKeyChecking=yes",
            f"UserKnownHostsFile={known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            f"HostKeyAlgorithms={connection.host_key.get_name()}",
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            "ControlMaster=no",
            "ControlPath=none",
            "ForwardAgent=no",
            "ClearAllForwardings=yes",
        ):
            assert option in options
        assert argv[1:3] == ["-F", "/dev/null"]
        assert argv[argv.index("-i") + 1] == box.key
        assert argv[-3:] == ["--", "127.0.0.1", "true"]
        ran = subprocess.run([*argv[:-1], "echo pinned"], capture_output=True, timeout=30)
        assert ran.stdout == b"pinned\n", ran.stderr
    finally:
        launcher.close()
    assert list(private_tmp.iterdir()) == []


def test_ssh_lanes_refuse_a_host_key_other_than_the_one_verified(
    private_sshd: LoopbackSshd, make_remote: RemoteFactory, tmp_path: Path, private_tmp: Path
) -> None:
    """The session checked key A; new connections now meet key B (a man in the middle, say).

    ssh refuses B, so no blob goes to that server; the blobs go over the connection whose key
    was verified, and ssh lanes are not tried again in this session.
    """
    remote = make_remote(private_sshd)
    known_hosts = WatchkeeperPaths.from_environment().known_hosts
    trusted = known_hosts.read_text()
    session = RemoteSession(remote, retry_for=10)
    verified = session.connection().host_key
    private_sshd.host_key.unlink()
    private_sshd.host_key.with_suffix(".pub").unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private_sshd.host_key)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.kill(int(private_sshd.pid_path.read_text()), signal.SIGHUP)  # sessions open stay

    def new_key_served() -> bool:
        try:
            fresh = handshake(session.target, HostKeyStore(known_hosts, None), None, check=False)
        except Exception:
            return False
        key = fresh.get_remote_server_key()
        fresh.close()
        return key != verified

    wait_for(new_key_served, 15, "sshd to serve its new host key")
    source = tmp_path / "source"
    make_tree(source)
    dest = remote.workdir + "/dest"
    try:
        report = sync_tree(session, source, dest, openssh_from=MiB)
        assert report.bulk_transport == "paramiko"
        assert "Host key verification failed" in report.openssh_note
        assert session.openssh_refused
        assert identical(source, Path(dest)) and cache_is_sound(session)
        other = tmp_path / "other"
        make_tree(other)
        again = sync_tree(session, other, remote.workdir + "/other", openssh_from=MiB)
        assert again.openssh_note.startswith("ssh lanes given up")  # not tried again
        assert again.bulk_transport == "paramiko" and again.remote_programs == 2
    finally:
        session.close()
    assert known_hosts.read_text() == trusted  # key B was trusted nowhere
    assert list(private_tmp.iterdir()) == [] and ssh_children() == []


def test_without_an_ssh_client_the_upload_stays_on_paramiko(
    session: RemoteSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_tmp: Path
) -> None:
    source = tmp_path / "source"
    make_tree(source)
    dest = session.workdir + "/dest"
    empty = tmp_path / "bin"
    empty.mkdir()
    with monkeypatch.context() as patch:
        patch.setenv("PATH", str(empty))
        report = sync_tree(session, source, dest, openssh_from=MiB)
    assert report.bulk_transport == "paramiko"
    assert report.openssh_note == "no ssh client on PATH"
    assert identical(source, Path(dest)) and cache_is_sound(session)
    assert list(private_tmp.iterdir()) == []


def _sync_in_background(
    session: RemoteSession, source: Path, dest: str
) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def upload() -> None:
        try:
            outcome["report"] = sync_tree(session, source, dest, openssh_from=MiB)
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=upload, daemon=True)
    worker.start()
    return worker, outcome


def _staged(session: RemoteSession) -> bool:
    staging = Path(session.cache_dir) / "tmp"
    return staging.is_dir() and any(staging.glob("*/*"))


def test_ssh_killed_mid_stream_its_blobs_go_again_over_paramiko(
    session: RemoteSession, tmp_path: Path, private_tmp: Path
) -> None:
    source = tmp_path / "source"
    make_tree(source, files=64, size=MiB)
    dest = session.workdir + "/dest"
    worker, outcome = _sync_in_background(session, source, dest)
    wait_for(lambda: len(ssh_children()) == 2 and _staged(session), 60, "ssh lanes to send")
    lanes = ssh_children()
    for pid in lanes:  # frozen mid-stream, then killed
        os.kill(pid, signal.SIGSTOP)
    assert worker.is_alive()  # the upload cannot end while its ssh lanes are stopped
    for pid in lanes:
        os.kill(pid, signal.SIGKILL)
    worker.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert isinstance(report, SyncReport)
    assert report.openssh_note.startswith("ssh lanes given up")
    assert report.bulk_transport == "paramiko"
    assert identical(source, Path(dest)) and cache_is_sound(session)
    assert list(private_tmp.iterdir()) == [] and ssh_children() == []


def test_a_stalled_ssh_lane_does_not_wedge_the_upload(
    shared_sshd: LoopbackSshd, make_remote: RemoteFactory, tmp_path: Path, private_tmp: Path
) -> None:
    remote = make_remote(shared_sshd, "quick", read_timeout_seconds=2.0)
    source = tmp_path / "source"
    make_tree(source, files=64, size=MiB)
    dest = remote.workdir + "/dest"
    with RemoteSession(remote, retry_for=10) as session:
        worker, outcome = _sync_in_background(session, source, dest)
        wait_for(lambda: len(ssh_children()) == 2 and _staged(session), 60, "ssh lanes to send")
        stopped = ssh_children()
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)  # alive but silent: only the timeout can tell
        worker.join(timeout=60)
        assert not worker.is_alive(), "the upload hung on a stopped ssh"
        assert "error" not in outcome, outcome.get("error")
        report = outcome["report"]
        assert isinstance(report, SyncReport)
        assert "nothing for 2 s" in report.openssh_note
        assert identical(source, Path(dest)) and cache_is_sound(session)
    for pid in stopped:  # killed on the way out, not left stopped
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert list(private_tmp.iterdir()) == []


def test_an_error_of_the_remote_receiver_is_reported_not_blamed_on_ssh(
    session: RemoteSession, tmp_path: Path, private_tmp: Path
) -> None:
    source = tmp_path / "source"
    make_tree(source)
    dest = Path(session.workdir) / "taken"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("a file where the tree should go\n")
    with pytest.raises(WatchkeeperError, match="the helper's receive failed"):
        sync_tree(session, source, str(dest), openssh_from=MiB)
    assert session.openssh_refused == ""  # ssh worked: it stays in use for this session
    assert list(private_tmp.iterdir()) == [] and ssh_children() == []


def test_an_upload_that_fails_here_kills_its_ssh_lanes_and_leaves_nothing(
    session: RemoteSession, tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source"
    make_tree(source, files=32)
    doomed = source / "part3" / "shard 031.bin"
    original_chunks = TreeHasher.chunks

    def chunks_then_delete(self: TreeHasher) -> Iterator[list[LocalFile]]:
        for chunk in original_chunks(self):
            yield chunk
            if doomed.exists():
                doomed.unlink()  # gone between hashing and sending

    monkeypatch.setattr(TreeHasher, "chunks", chunks_then_delete)
    with pytest.raises(WatchkeeperError, match=r"shard 031\.bin: cannot be read"):
        sync_tree(session, source, session.workdir + "/dest", openssh_from=MiB)
    assert session.openssh_refused == ""  # a local file's fault, not ssh's
    assert ssh_children() == [] and list(private_tmp.iterdir()) == []
