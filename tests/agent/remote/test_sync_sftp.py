"""The SFTP-only update of a folder synced before, over a real sshd: taken, checked, repaired."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import blake3
import pytest

from agent.data.stat_cache import StatCache
from agent.remote import tree_record
from agent.remote.config import RemoteConfig
from agent.remote.connection import RemoteSession
from agent.remote.hostkeys import ChangedHostKeyError
from agent.remote.sftp_update import QuickSync
from agent.remote.sync import sync_tree
from agent.remote.tree_record import RecordedFile, TreeRecord, TreeRecords
from tests.agent.remote.conftest import RemoteFactory, trust_fixture_host
from tests.agent.remote.sshd_server import LoopbackSshd

pytestmark = pytest.mark.ssh

REPO = Path(__file__).resolve().parents[3]


def make_tree(root: Path) -> None:
    for index in range(24):
        path = root / f"part{index % 3}" / f"file {index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(500 + index * 331))
    (root / "same-a.txt").write_text("identical\n")
    (root / "same-b.txt").write_text("identical\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "code").mkdir()
    (root / "code" / "link.bin").symlink_to("../part0/file 0.bin")


def tree_state(root: Path) -> dict[str, tuple[str, bytes | str, bool]]:
    """Every path below root: its kind, its content (or link target) and its executable bit."""
    state: dict[str, tuple[str, bytes | str, bool]] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            state[relative] = ("link", os.readlink(path), False)
        elif stat.S_ISREG(info.st_mode):
            state[relative] = ("file", path.read_bytes(), bool(info.st_mode & 0o100))
        else:
            state[relative] = ("folder", b"", False)
    return state


def cache_is_sound(session: RemoteSession) -> bool:
    """Every entry under a digest's name in the remote cache holds that digest's content."""
    entries = list(Path(session.cache_dir).glob("blobs/*"))
    return all(blake3.blake3(e.read_bytes()).hexdigest() == e.name for e in entries)


@pytest.fixture
def session(box: RemoteConfig) -> RemoteSession:
    return RemoteSession(box, retry_for=5)


@pytest.fixture
def synced(session: RemoteSession, tmp_path: Path) -> tuple[Path, str, StatCache]:
    """A source tree synced once (by the helper), so that the next sync has a record."""
    source = tmp_path / "source"
    make_tree(source)
    cache = StatCache(tmp_path / "hash-cache.db")
    dest = session.workdir + "/dest with space"
    first = sync_tree(session, source, dest, hash_cache=cache)
    assert first.route == "helper" and first.remote_programs >= 1
    return source, dest, cache


def test_one_changed_file_is_sent_over_sftp_alone(
    session: RemoteSession, synced: tuple[Path, str, StatCache]
) -> None:
    source, dest, cache = synced
    changed = source / "part1" / "file 4.bin"
    changed.write_bytes(os.urandom(changed.stat().st_size))
    report = sync_tree(session, source, dest, hash_cache=cache)
    assert report.route == "sftp" and report.remote_programs == 0, report.fallback
    assert report.blobs_sent == 1 and report.blob_bytes_sent == changed.stat().st_size
    assert report.files_linked == 1
    assert tree_state(Path(dest)) == tree_state(source)
    assert cache_is_sound(session)
    again = sync_tree(session, source, dest, hash_cache=cache)
    assert again.route == "sftp" and again.blobs_sent == 0 and again.files_linked == 0


def test_the_sftp_update_runs_no_remote_program_at_all(
    session: RemoteSession, synced: tuple[Path, str, StatCache]
) -> None:
    source, dest, cache = synced
    no_python = RemoteSession(replace(session.remote, python="/nonexistent/python3"), retry_for=5)
    (source / "part0" / "file 0.bin").write_bytes(os.urandom(3000))
    report = sync_tree(no_python, source, dest, hash_cache=cache)  # the helper could not start
    assert report.route == "sftp"
    assert tree_state(Path(dest)) == tree_state(source)


def test_added_removed_and_mode_changed_paths_follow_the_source(
    session: RemoteSession, synced: tuple[Path, str, StatCache]
) -> None:
    source, dest, cache = synced
    (source / "part2" / "file 5.bin").unlink()
    (source / "new" / "deeper").mkdir(parents=True)
    (source / "new" / "deeper" / "added.txt").write_text("identical\n")  # a blob held already
    (source / "part0" / "file 3.bin").chmod(0o755)
    (source / "run.sh").write_text("#!/bin/sh\necho changed\n")
    report = sync_tree(session, source, dest, hash_cache=cache)
    assert report.route == "sftp", report.fallback
    assert report.blobs_sent == 1  # only run.sh's new content
    assert tree_state(Path(dest)) == tree_state(source)


def test_a_remote_file_edited_behind_the_record_is_repaired_by_the_helper(
    session: RemoteSession, synced: tuple[Path, str, StatCache]
) -> None:
    source, dest, cache = synced
    edited = Path(dest) / "part0" / "file 6.bin"
    edited.unlink()
    edited.write_bytes(b"edited on the remote")  # a new file, not the cache's blob
    (Path(dest) / "part2" / "file 2.bin").unlink()
    changed = source / "same-b.txt"
    changed.write_text("changed\n")
    report = sync_tree(session, source, dest, hash_cache=cache)
    assert report.route == "helper" and "not as the last sync left it" in report.fallback
    assert tree_state(Path(dest)) == tree_state(source)
    after = sync_tree(session, source, dest, hash_cache=cache)
    assert after.route == "sftp" and after.blobs_sent == 0


def test_a_folder_replaced_by_a_symlink_is_not_written_through(
    session: RemoteSession, synced: tuple[Path, str, StatCache]
) -> None:
    source, dest, cache = synced
    moved = Path(dest) / "moved-part1"
    (Path(dest) / "part1").rename(moved)
    (Path(dest) / "part1").symlink_to("moved-part1")  # the same files, seen through a link
    changed = source / "part1" / "file 4.bin"
    changed.write_bytes(os.urandom(changed.stat().st_size))
    old_content = (moved / "file 4.bin").read_bytes()
    report = sync_tree(session, source, dest, hash_cache=cache)
    assert report.route == "helper" and "part1 is no longer a folder" in report.fallback
    part1 = Path(dest) / "part1"
    assert part1.is_dir() and not part1.is_symlink()  # the helper put a folder back
    assert (moved / "file 4.bin").read_bytes() == old_content  # nothing written through
    assert tree_state(part1) == tree_state(source / "part1")


def test_an_emptied_remote_cache_is_noticed_and_refilled_by_the_helper(
    session: RemoteSession, synced: tuple[Path, str, StatCache], tmp_path: Path
) -> None:
    source, dest, cache = synced
    for entry in Path(session.cache_dir).glob("blobs/*"):
        entry.unlink()
    changed = source / "part1" / "file 1.bin"
    changed.write_bytes(os.urandom(changed.stat().st_size))
    report = sync_tree(session, source, dest, hash_cache=cache)
    assert report.route == "helper" and "cache entry" in report.fallback
    assert report.record_wrong  # the record of the cache was forgotten, then written afresh
    assert tree_state(Path(dest)) == tree_state(source)
    assert cache_is_sound(session)
    elsewhere = sync_tree(session, source, session.workdir + "/other", hash_cache=cache)
    assert elsewhere.blobs_sent == 0
    assert tree_state(Path(session.workdir + "/other")) == tree_state(source)


def test_a_sync_killed_during_the_swap_leaves_a_state_the_next_sync_repairs(
    session: RemoteSession, synced: tuple[Path, str, StatCache], box: RemoteConfig
) -> None:
    source, dest, cache = synced
    cache.close()
    (source / "part0" / "file 9.bin").write_bytes(os.urandom(20_000))
    (source / "part1" / "file 10.bin").unlink()
    (source / "fresh.bin").write_bytes(os.urandom(30_000))
    # A separate process syncs and is killed (SIGKILL) once its swap requests are on the wire.
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from agent.data.stat_cache import StatCache
        from agent.remote.config import load_remote
        from agent.remote.connection import RemoteSession
        from agent.remote import sftp_update
        from agent.remote.sync import sync_tree

        def replies_then_die(self):
            if getattr(self, "swapping", False):
                os.kill(os.getpid(), signal.SIGKILL)
            return original_replies(self)

        def swap(self, *args):
            self.pipeline.swapping = True
            return original_swap(self, *args)

        original_replies = sftp_update.Pipeline.replies
        original_swap = sftp_update.QuickSync._swap
        sftp_update.Pipeline.replies = replies_then_die
        sftp_update.QuickSync._swap = swap
        with RemoteSession(load_remote({box.name!r})) as session:
            sync_tree(session, Path({str(source)!r}), {dest!r},
                      hash_cache=StatCache(Path({str(cache.path)!r})))
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    cache = StatCache(cache.path)
    report = sync_tree(session, source, dest, hash_cache=cache)
    assert report.route == "helper"  # the record was forgotten before the swap began
    assert tree_state(Path(dest)) == tree_state(source)
    assert cache_is_sound(session)
    after = sync_tree(session, source, dest, hash_cache=cache)
    assert after.route == "sftp" and after.blobs_sent == 0


def test_a_dropped_connection_during_the_update_falls_back_and_repairs(
    private_sshd: LoopbackSshd,
    make_remote: RemoteFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remote = make_remote(private_sshd)
    session = RemoteSession(remote, retry_for=60)
    source = tmp_path / "source"
    make_tree(source)
    cache = StatCache(tmp_path / "hash-cache.db")
    dest = remote.workdir + "/dest"
    sync_tree(session, source, dest, hash_cache=cache)
    (source / "part2" / "file 8.bin").write_bytes(os.urandom(40_000))
    original_swap = QuickSync._swap

    def drop_then_swap(self: QuickSync, *args: object) -> None:
        private_sshd.stop()  # kills the session: the swap's requests meet a dead connection
        private_sshd.start()
        original_swap(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(QuickSync, "_swap", drop_then_swap)
    report = sync_tree(session, source, dest, hash_cache=cache)
    assert report.route == "helper" and report.fallback
    assert tree_state(Path(dest)) == tree_state(source)
    assert cache_is_sound(session)


def test_a_changed_host_key_stops_the_update_instead_of_falling_back(
    session: RemoteSession,
    synced: tuple[Path, str, StatCache],
    shared_sshd: LoopbackSshd,
) -> None:
    source, dest, cache = synced
    (source / "same-a.txt").write_text("changed\n")
    known_hosts = trust_fixture_host(shared_sshd)
    other_key = Path(str(shared_sshd.user_key) + ".pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{shared_sshd.port} {' '.join(other_key)}\n")
    with pytest.raises(ChangedHostKeyError):
        sync_tree(RemoteSession(session.remote, retry_for=5), source, dest, hash_cache=cache)
    assert (Path(dest) / "same-a.txt").read_text() == "identical\n"


def test_a_record_naming_a_path_outside_the_folder_is_not_trusted() -> None:
    record = TreeRecord({"a.txt": RecordedFile("ab" * 32, 3, False)}, {})
    assert TreeRecord.from_bytes(record.to_bytes()) == record
    escaping = TreeRecord({"../a.txt": RecordedFile("ab" * 32, 3, False)}, {})
    assert TreeRecord.from_bytes(escaping.to_bytes()) is None
    assert TreeRecord.from_bytes(b"garbage") is None


def test_only_the_latest_records_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree_record, "KEPT_RECORDS", 3)
    records = TreeRecords(StatCache(tmp_path / "hash-cache.db"))
    record = TreeRecord({"a.txt": RecordedFile("ab" * 32, 3, False)}, {})
    for index in range(5):
        records.save("ana@gpu:22:/w/cache", f"/w/runs/{index}", record)
        os.utime(records._file("ana@gpu:22:/w/cache", f"/w/runs/{index}"), (index, index))
    kept = [records.load("ana@gpu:22:/w/cache", f"/w/runs/{i}")[0] for i in range(5)]
    assert kept == [None, None, record, record, record]
