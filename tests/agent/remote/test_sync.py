"""The content-addressed upload over a real sshd: only missing blobs, checked, re-sent when bad."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from agent.data.stat_cache import StatCache
from agent.errors import WatchkeeperError
from agent.remote.config import RemoteConfig
from agent.remote.connection import HELPER_SOURCE, RemoteSession
from agent.remote.sync import (
    FRAME_HEADER,
    LocalFile,
    TreeHasher,
    hash_tree,
    sync_tree,
)
from tests.agent.remote.conftest import RemoteFactory
from tests.agent.remote.sshd_server import LoopbackSshd
from tests.support import wait_for

pytestmark = pytest.mark.ssh


def make_tree(root: Path) -> None:
    for index in range(30):
        path = root / f"part{index % 3}" / f"file {index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + index * 997))
    (root / "same-a.txt").write_text("identical\n")
    (root / "same-b.txt").write_text("identical\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)


def identical(left: Path, right: Path) -> bool:
    return (
        subprocess.run(["diff", "-r", str(left), str(right)], capture_output=True).returncode == 0
    )


def blob(session: RemoteSession, digest: str) -> Path:
    return Path(session.cache_dir) / "blobs" / digest


@pytest.fixture
def session(box: RemoteConfig) -> RemoteSession:
    return RemoteSession(box, retry_for=5)


def test_first_sync_sends_each_blob_once_and_rebuilds_the_tree(
    session: RemoteSession, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    make_tree(source)
    dest = session.workdir + "/dest with space"
    report = sync_tree(session, source, dest, hash_cache=StatCache(tmp_path / "d.db"))
    assert report.files == 33 and report.blobs == 32 and report.blobs_sent == 32
    assert identical(source, Path(dest))
    assert os.access(Path(dest) / "run.sh", os.X_OK)
    again = sync_tree(session, source, dest, hash_cache=StatCache(tmp_path / "d.db"))
    assert again.blobs_sent == 0 and again.blob_bytes_sent == 0


def test_one_changed_file_sends_only_its_bytes(session: RemoteSession, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_tree(source)
    cache = StatCache(tmp_path / "d.db")
    dest = session.workdir + "/dest"
    sync_tree(session, source, dest, hash_cache=cache)
    changed = source / "part1" / "file 4.bin"
    changed.write_bytes(os.urandom(changed.stat().st_size))
    report = sync_tree(session, source, dest, hash_cache=cache)
    assert report.blobs_sent == 1 and report.blob_bytes_sent == changed.stat().st_size
    assert identical(source, Path(dest))


def test_same_size_rewrite_with_the_old_mtime_is_still_sent(
    session: RemoteSession, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    make_tree(source)
    cache = StatCache(tmp_path / "d.db")
    dest = session.workdir + "/dest"
    sync_tree(session, source, dest, hash_cache=cache)
    target = source / "part0" / "file 3.bin"
    before = target.stat()
    target.write_bytes(os.urandom(before.st_size))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    report = sync_tree(session, source, dest, hash_cache=cache)
    assert report.blobs_sent == 1
    assert (Path(dest) / "part0" / "file 3.bin").read_bytes() == target.read_bytes()


def test_half_written_and_altered_cache_entries_are_detected_and_sent_again(
    session: RemoteSession, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    make_tree(source)
    dest = session.workdir + "/dest"
    sync_tree(session, source, dest)
    files = {f.relative: f for f in hash_tree(source)}
    truncated = blob(session, files["part0/file 0.bin"].digest)
    altered = blob(session, files["part2/file 5.bin"].digest)
    truncated.chmod(0o644)
    truncated.write_bytes(truncated.read_bytes()[:100])  # an upload broken half way
    altered.chmod(0o644)
    altered.write_bytes(os.urandom(altered.stat().st_size))  # same size, other content
    (Path(session.cache_dir) / "tmp" / "leftover.123").write_bytes(b"partial")
    report = sync_tree(session, source, session.workdir + "/dest2")
    assert report.blobs_sent == 2
    assert identical(source, Path(session.workdir + "/dest2"))
    for entry in (truncated, altered):
        assert blake3.blake3(entry.read_bytes()).hexdigest() == entry.name


def test_receiver_rejects_a_blob_whose_checksum_does_not_match(session: RemoteSession) -> None:
    payload = b"model weights" * 100
    digest = blake3.blake3(payload).digest()
    wrong_crc = struct.pack(">I", 12345)
    stream = FRAME_HEADER.pack(digest, len(payload), 0) + payload + wrong_crc
    stream += FRAME_HEADER.pack(b"\0" * 32, 0, 0)
    reply = session.helper_json("receive", session.cache_dir, stdin=stream)
    assert reply["rejected"] == [digest.hex()] and reply["stored"] == 0
    assert not blob(session, digest.hex()).exists()


def test_tree_paths_leaving_the_destination_are_refused(session: RemoteSession) -> None:
    session.require_python()
    request = {"materialize": {"dest": session.workdir + "/d", "files": [["../x", "ab", 1, 0]]}}
    manifest = json.dumps({"blobs": {}}) + "\n" + json.dumps(request) + "\n"
    result = session.run(session.helper_command("plan", session.cache_dir), stdin=manifest.encode())
    assert "refusing path '../x'" in result.text
    assert not Path(session.workdir, "x").exists()


def test_unreadable_local_file_is_named(session: RemoteSession, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "loop").symlink_to(source / "loop")
    with pytest.raises(WatchkeeperError, match="loop"):
        sync_tree(session, source, session.workdir + "/d")


def test_chunked_pipeline_sends_each_blob_once_across_chunks(
    session: RemoteSession, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    for index in range(40):
        (source / f"d{index % 4}").mkdir(parents=True, exist_ok=True)
        (source / f"d{index % 4}" / f"f{index}.txt").write_text(f"content {index % 10}\n")
    dest = session.workdir + "/chunked"
    report = sync_tree(session, source, dest, chunk_files=3)
    assert report.files == 40 and report.blobs == 10 and report.blobs_sent == 10
    assert report.files_linked == 40
    assert identical(source, Path(dest))


def test_upload_broken_by_a_dropped_connection_resumes_after_reconnect(
    private_sshd: LoopbackSshd, make_remote: RemoteFactory, tmp_path: Path
) -> None:
    remote = make_remote(private_sshd)
    source = tmp_path / "source"
    source.mkdir()
    for index in range(48):
        (source / f"blob{index:02d}.bin").write_bytes(os.urandom(1 << 20))
    session = RemoteSession(remote, retry_for=60)
    outcome: dict[str, object] = {}

    def upload() -> None:
        try:
            outcome["report"] = sync_tree(session, source, remote.workdir + "/dest")
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=upload, daemon=True)
    worker.start()
    staging = Path(remote.workdir) / "cache" / "tmp"
    wait_for(
        lambda: staging.is_dir() and any(staging.glob("*/*")),
        30,
        "the upload to stage a file",
        0.005,
    )
    private_sshd.stop()  # drops the connection in the middle of the upload
    time.sleep(0.5)
    private_sshd.start()
    worker.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    assert session.reconnects >= 1
    assert identical(source, Path(remote.workdir) / "dest")


def test_a_file_changed_after_hashing_is_not_stored_under_its_old_digest(
    session: RemoteSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    victim = source / "weights.bin"
    victim.write_bytes(os.urandom(512 << 10))
    original_chunks = TreeHasher.chunks

    def chunks_then_rewrite(self: TreeHasher) -> Iterator[list[LocalFile]]:
        for chunk in original_chunks(self):
            yield chunk
            victim.write_bytes(os.urandom(512 << 10))  # rewritten between hashing and sending

    monkeypatch.setattr(TreeHasher, "chunks", chunks_then_rewrite)
    with pytest.raises(WatchkeeperError, match="changed while it was being sent"):
        sync_tree(session, source, session.workdir + "/dest")
    cache = Path(session.cache_dir)
    stored = [p for p in cache.glob("blobs/*") if p.is_file()]
    for entry in stored:
        assert blake3.blake3(entry.read_bytes()).hexdigest() == entry.name


def test_a_file_deleted_before_sending_is_named_without_retrying(
    session: RemoteSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    doomed = source / "doomed.bin"
    doomed.write_bytes(os.urandom(512 << 10))
    original_chunks = TreeHasher.chunks

    def chunks_then_delete(self: TreeHasher) -> Iterator[list[LocalFile]]:
        for chunk in original_chunks(self):
            yield chunk
            doomed.unlink()

    monkeypatch.setattr(TreeHasher, "chunks", chunks_then_delete)
    started = time.monotonic()
    with pytest.raises(WatchkeeperError, match=r"doomed\.bin: cannot be read"):
        sync_tree(session, source, session.workdir + "/dest")
    assert time.monotonic() - started < 4  # no reconnect loop for a local problem
    assert session.reconnects == 0


def test_a_settled_file_rewritten_before_sending_is_caught_by_its_stamp(
    session: RemoteSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    victim = source / "weights.bin"
    victim.write_bytes(os.urandom(512 << 10))
    time.sleep(2.1)  # older than the racy window: sent without hashing it a second time
    original_chunks = TreeHasher.chunks

    def chunks_then_rewrite(self: TreeHasher) -> Iterator[list[LocalFile]]:
        for chunk in original_chunks(self):
            assert all(file.settled for file in chunk)
            yield chunk
            before = victim.stat()
            victim.write_bytes(os.urandom(512 << 10))
            os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # even the old mtime

    monkeypatch.setattr(TreeHasher, "chunks", chunks_then_rewrite)
    with pytest.raises(WatchkeeperError, match="changed while it was being sent"):
        sync_tree(session, source, session.workdir + "/dest")
    assert not list(Path(session.cache_dir).glob("blobs/*"))


def test_the_second_sync_trusts_the_record_and_asks_no_cache_check(
    session: RemoteSession, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    make_tree(source)
    cache = StatCache(tmp_path / "d.db")
    first = sync_tree(session, source, session.workdir + "/a", hash_cache=cache)
    assert first.cache_checked  # nothing recorded yet: the remote was asked
    changed = source / "part2" / "file 8.bin"
    changed.write_bytes(os.urandom(changed.stat().st_size))
    second = sync_tree(session, source, session.workdir + "/b", hash_cache=cache)
    assert not second.cache_checked and not second.record_wrong
    assert second.blobs_sent == 1 and second.blob_bytes_sent == changed.stat().st_size
    assert identical(source, Path(session.workdir + "/b"))


def test_a_wiped_remote_cache_still_gets_every_file(session: RemoteSession, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_tree(source)
    cache = StatCache(tmp_path / "d.db")
    sync_tree(session, source, session.workdir + "/a", hash_cache=cache)
    subprocess.run(["chmod", "-R", "u+w", session.cache_dir], check=True)
    subprocess.run(["rm", "-rf", session.cache_dir], check=True)
    report = sync_tree(session, source, session.workdir + "/b", hash_cache=cache)
    assert report.record_wrong and report.blobs_sent == 32
    assert identical(source, Path(session.workdir + "/b"))
    for entry in Path(session.cache_dir).glob("blobs/*"):
        assert blake3.blake3(entry.read_bytes()).hexdigest() == entry.name
    after = sync_tree(session, source, session.workdir + "/c", hash_cache=cache)
    assert not after.record_wrong and after.blobs_sent == 0
    assert identical(source, Path(session.workdir + "/c"))


def test_a_blob_removed_behind_the_record_is_sent_again(
    session: RemoteSession, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    make_tree(source)
    cache = StatCache(tmp_path / "d.db")
    sync_tree(session, source, session.workdir + "/a", hash_cache=cache)
    files = {f.relative: f for f in hash_tree(source)}
    removed = blob(session, files["part1/file 7.bin"].digest)
    damaged = blob(session, files["same-a.txt"].digest)
    removed.unlink()
    damaged.chmod(0o644)
    damaged.write_bytes(b"not identical\n")  # no longer marked as checked
    report = sync_tree(session, source, session.workdir + "/b", hash_cache=cache)
    assert not report.cache_checked and report.record_wrong
    assert report.blobs_sent == 2
    assert identical(source, Path(session.workdir + "/b"))
    assert blake3.blake3(damaged.read_bytes()).hexdigest() == damaged.name


def _receive_stream(payloads: list[tuple[bytes, str]]) -> bytes:
    stream = bytearray()
    for payload, relative in payloads:
        links = b"0" + relative.encode()
        stream += FRAME_HEADER.pack(blake3.blake3(payload).digest(), len(payload), len(links))
        stream += links + payload + struct.pack(">I", zlib.crc32(payload))
    return bytes(stream + FRAME_HEADER.pack(b"\0" * 32, 0, 0))


def test_receivers_side_by_side_make_the_same_new_folders(tmp_path: Path) -> None:
    """Parallel lanes link into one tree: each receiver may find a folder another just made."""
    cache, dest = tmp_path / "cache", tmp_path / "dest"
    folders = [f"f{index:03d}/sub" for index in range(300)]
    receivers = [
        subprocess.Popen(
            [sys.executable, "-c", HELPER_SOURCE, "receive", str(cache), str(dest)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    streams = [
        _receive_stream([(f"{lane} {f}".encode(), f"{f}/{lane}.txt") for f in folders])
        for lane in range(len(receivers))
    ]
    writers = [
        threading.Thread(target=receiver.communicate, args=(stream,))
        for receiver, stream in zip(receivers, streams, strict=True)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert [receiver.returncode for receiver in receivers] == [0] * len(receivers)
    for lane in range(len(receivers)):
        for folder in folders:
            assert (dest / folder / f"{lane}.txt").read_text() == f"{lane} {folder}"
