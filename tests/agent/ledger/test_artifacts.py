"""The artifact store: content addressing, verification, and a full disk leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy
import pytest

from agent.errors import WatchkeeperError
from agent.ledger import _clone
from agent.ledger.artifacts import ArtifactStore, file_digest, stat_keys
from tests.agent.runs.gitrepo import REPO_ROOT
from tests.support import wait_for


def test_put_stores_by_content_digest(tmp_path: Path) -> None:
    source = tmp_path / "model.pkl"
    source.write_bytes(b"weights" * 1000)
    store = ArtifactStore(tmp_path / "artifacts")
    digest = store.put(source)
    assert digest == file_digest(source) and digest.startswith("blake3:")
    stored = store.path(digest)
    hex_digest = digest.removeprefix("blake3:")
    assert stored == tmp_path / "artifacts" / hex_digest[:2] / hex_digest[2:]
    assert stored.read_bytes() == source.read_bytes()
    assert store.put(source) == digest
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]


def test_different_content_gives_different_artifacts(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("one")
    second.write_text("two")
    assert store.put(first) != store.put(second)


def test_folders_and_bad_digests_are_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(WatchkeeperError, match="not a regular file"):
        store.put(tmp_path)
    with pytest.raises(WatchkeeperError, match="not an artifact digest"):
        store.path("blake3:../../etc/passwd")


def test_file_size_limit_during_copy_registers_nothing(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the copy fail with a real EFBIG half way through."""
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * (3 << 20))
    root = tmp_path / "artifacts"
    script = textwrap.dedent(
        """\
        import resource, signal, sys
        from pathlib import Path
        from agent.errors import WatchkeeperError
        from agent.ledger.artifacts import ArtifactStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            ArtifactStore(Path(sys.argv[2])).put(Path(sys.argv[1]))
        except WatchkeeperError as error:
            print(error)
            sys.exit(3)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(source), str(root)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert completed.returncode == 3, completed.stderr
    assert "too large to store" in completed.stdout
    assert "nothing was registered" in completed.stdout
    assert [p for p in root.rglob("*") if p.is_file()] == []


def test_an_incoming_file_left_by_a_killed_writer_is_removed_by_the_next_store(
    tmp_path: Path,
) -> None:
    source = tmp_path / "large.bin"
    with source.open("wb") as handle:
        for index in range(256):
            handle.write(bytes([index]) * (1 << 20))
    root = tmp_path / "artifacts"
    digest = file_digest(source).removeprefix("blake3:")
    folder = root / digest[:2]
    script = (
        "import sys; from pathlib import Path; from agent.ledger.artifacts import ArtifactStore; "
    )
    script += "ArtifactStore(Path(sys.argv[2])).put(Path(sys.argv[1]))"
    writer = subprocess.Popen([sys.executable, "-c", script, str(source), str(root)], cwd=REPO_ROOT)
    try:
        incoming = wait_for(
            lambda: [path for path in folder.glob(".incoming-*")] if folder.is_dir() else [],
            60,
            "the writer to start copying into the store",
            0.001,
        )
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert [path.exists() for path in incoming] == [True]  # what a kill -9 leaves behind
    other = tmp_path / "small.bin"
    other.write_bytes(b"small")
    ArtifactStore(root).put(other)
    assert list(root.rglob(".incoming-*")) == []
    assert not ArtifactStore(root).has("blake3:" + digest)


def test_only_stale_incoming_files_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    (root / "ab").mkdir(parents=True)
    live_and_fresh = root / "ab" / f".incoming-{os.getpid()}-0123456789abcdef"
    live_but_old = root / "ab" / f".incoming-{os.getpid()}-fedcba9876543210"
    not_ours = root / "ab" / ".incoming-notes"
    for path in (live_and_fresh, live_but_old, not_ours):
        path.write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    os.utime(live_but_old, (an_hour_ago, an_hour_ago))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_writer = root / "ab" / f".incoming-{int(dead.stdout)}-0123456789abcdef"
    dead_writer.write_bytes(b"partial")
    source = tmp_path / "model.pkl"
    source.write_bytes(b"weights")
    ArtifactStore(root).put(source)
    assert live_and_fresh.exists() and not_ours.exists()
    assert not live_but_old.exists() and not dead_writer.exists()


@pytest.mark.parametrize("path", ["../outside.txt", "a/../../outside.txt", "/tmp/outside.txt"])
def test_export_refuses_artifact_paths_that_leave_the_folder(tmp_path: Path, path: str) -> None:
    from agent.ledger.artifacts import export_artifacts

    store = ArtifactStore(tmp_path / "store")
    digest = store.put_bytes(b"weights")
    out_dir = tmp_path / "deploy" / "not-made-yet"
    with pytest.raises(WatchkeeperError, match="leads out of"):
        export_artifacts(store, {"model.bin": digest, path: digest}, out_dir)
    assert not (tmp_path / "deploy").exists()
    assert not (tmp_path / "deploy" / "outside.txt").exists()


def test_keep_file_makes_its_blob_folder_again_when_it_was_removed_meanwhile(
    tmp_path: Path,
) -> None:
    """The store remembers the folders it made; one removed behind its back is made again."""
    store = ArtifactStore(tmp_path / "artifacts")
    source = tmp_path / "rows.csv"
    source.write_bytes(b"id,value\n1,2\n")
    digest = file_digest(source)
    info = source.stat()
    assert store.keep_file(source, digest, size=info.st_size, mtime_ns=info.st_mtime_ns) in (
        "copied",
        "cloned",
    )
    blob = store.path(digest)
    blob.unlink()
    blob.parent.rmdir()
    assert store.keep_file(source, digest, size=info.st_size, mtime_ns=info.st_mtime_ns) in (
        "copied",
        "cloned",
    )
    assert blob.read_bytes() == source.read_bytes()
    with pytest.raises(WatchkeeperError, match="not an artifact digest"):
        store.keep_file(source, "blake3:../x", size=info.st_size, mtime_ns=info.st_mtime_ns)


def kept(store: ArtifactStore, source: Path) -> str:
    info = source.stat()
    return store.keep_file(
        source, file_digest(source), size=info.st_size, mtime_ns=info.st_mtime_ns
    )


def test_keep_file_finds_a_blob_stored_meanwhile_and_claims_it(tmp_path: Path) -> None:
    """Two keepers of the same content: the second finds the name taken when it links its copy,
    and touches the blob so that a gc now keeps it; nothing else is left in the folder."""
    store = ArtifactStore(tmp_path / "artifacts")
    source = tmp_path / "rows.csv"
    source.write_bytes(b"id,value\n1,2\n")
    assert kept(store, source) in ("copied", "cloned")
    blob = store.path(file_digest(source))
    os.utime(blob, (1, 1))

    assert kept(ArtifactStore(tmp_path / "artifacts"), source) == "present"

    assert blob.stat().st_mtime > time.time() - 60
    assert list(blob.parent.iterdir()) == [blob] and blob.read_bytes() == source.read_bytes()


def test_keep_file_without_unnamed_files_renames_a_temporary_copy_into_place(
    tmp_path: Path,
) -> None:
    """Where O_TMPFILE or /proc is missing the copy goes to a temporary name, renamed once whole."""
    store = ArtifactStore(tmp_path / "artifacts")
    store._unnamed_files = False
    source = tmp_path / "rows.csv"
    source.write_bytes(b"id,value\n1,2\n")

    assert kept(store, source) in ("copied", "cloned")

    blob = store.path(file_digest(source))
    assert list(blob.parent.iterdir()) == [blob] and blob.read_bytes() == source.read_bytes()


def test_stat_keys_match_os_stat_and_say_none_for_what_cannot_be_stated(tmp_path: Path) -> None:
    present = tmp_path / "rows.csv"
    present.write_bytes(b"id\n1\n")
    info = present.stat()

    keys = stat_keys([str(present), str(tmp_path / "missing"), f"{present}\0.csv"])

    assert keys == [
        (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns),
        None,
        None,
    ]


def test_the_compiled_clone_loop_refuses_lists_of_different_lengths() -> None:
    """Its loop reads each list at every index without bounds checks: unequal ones are refused."""
    with pytest.raises(ValueError, match="a folder, a destination and a key row per source"):
        _clone.clone_files([b"/a", b"/b"], [b"/"], [b"/x", b"/y"], numpy.zeros((2, 5), numpy.int64))
    with pytest.raises(ValueError, match="per source"):
        _clone.clone_files([b"/a"], [b"/"], [b"/x"], numpy.zeros((1, 4), numpy.int64))
