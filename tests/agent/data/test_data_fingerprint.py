"""Fingerprints of data files and folders: digests, the stat cache, races and bad input."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import blake3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.data.fingerprint as fingerprint_module
import agent.data.hashing as hashing_module
from agent.data import scan as scan_module
from agent.data.fingerprint import DataFingerprint, StatCache, fingerprint, manifest_digest
from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths
from tests.support import require

# Short racy window for tests: files older than this when the cache is written are trusted.
TEST_RACY_WINDOW_NS = 50_000_000


def settle() -> None:
    """Wait until files just written are older than the test racy window."""
    time.sleep(TEST_RACY_WINDOW_NS / 1e9 + 0.02)


@pytest.fixture
def cache() -> StatCache:
    return StatCache(path=None, racy_window_ns=TEST_RACY_WINDOW_NS)


@pytest.fixture
def data_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "raw" / "2024").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "train.csv").write_text("x,y\n1,2\n3,4\n")
    (root / "raw" / "2024" / "jan.bin").write_bytes(os.urandom(3000))
    (root / "raw" / "notes.txt").write_text("hello\n")
    (root / "a" / "b.txt").write_text("in a\n")
    (root / "a.txt").write_text("beside a\n")
    (root / "empty.dat").write_bytes(b"")
    settle()
    return root


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def test_folder_fingerprint_lists_every_file_with_its_digest(
    data_folder: Path, cache: StatCache
) -> None:
    fp = fingerprint(data_folder, cache=cache)
    assert fp.kind == "folder"
    assert fp.root == data_folder.resolve()
    assert sorted(fp.files) == sorted(
        ["train.csv", "raw/2024/jan.bin", "raw/notes.txt", "a/b.txt", "a.txt", "empty.dat"]
    )
    for path, entry in fp.files.items():
        content = (data_folder / path).read_bytes()
        assert entry.path == path
        assert entry.digest == b3(content)
        assert entry.size == len(content)
        assert entry.mtime_ns == (data_folder / path).stat().st_mtime_ns
    assert fp.n_files == 6
    assert fp.total_bytes == sum(len((data_folder / p).read_bytes()) for p in fp.files)


def test_folder_digest_is_the_hash_of_the_sorted_manifest(
    data_folder: Path, cache: StatCache
) -> None:
    fp = fingerprint(data_folder, cache=cache)
    hasher = blake3.blake3()
    # Sorted by path components: a/b.txt comes before a.txt ("a" < "a.txt").
    expected_order = ["a/b.txt", "a.txt", "empty.dat", "raw/2024/jan.bin", "raw/notes.txt"]
    expected_order.append("train.csv")
    assert list(fp.files) == expected_order
    for path in expected_order:
        hasher.update(path.encode() + b"\0" + bytes.fromhex(fp.files[path].digest))
    assert fp.digest == hasher.hexdigest()
    assert fp.digest == manifest_digest([(e.path, e.digest) for e in fp.files.values()])


def test_single_file_fingerprint_is_its_content_digest(tmp_path: Path, cache: StatCache) -> None:
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    fp = fingerprint(data, cache=cache)
    assert fp.kind == "file"
    assert fp.digest == b3(b"a,b\n1,2\n")
    assert list(fp.files) == ["train.csv"]
    assert fp.files["train.csv"].digest == fp.digest


def test_fingerprint_changes_with_content_names_and_files(
    data_folder: Path, cache: StatCache
) -> None:
    first = fingerprint(data_folder, cache=cache).digest
    (data_folder / "raw" / "notes.txt").write_text("hello!\n")
    second = fingerprint(data_folder, cache=cache).digest
    (data_folder / "raw" / "notes.txt").rename(data_folder / "raw" / "notes2.txt")
    third = fingerprint(data_folder, cache=cache).digest
    (data_folder / "new.txt").write_text("")
    fourth = fingerprint(data_folder, cache=cache).digest
    assert len({first, second, third, fourth}) == 4
    # The same content gives the same digest whatever cache (or none) is used.
    assert fingerprint(data_folder, cache=StatCache.in_memory()).digest == fourth


def test_unchanged_files_are_not_read_again(data_folder: Path, cache: StatCache) -> None:
    first = fingerprint(data_folder, cache=cache)
    assert cache.stats.files_hashed == 6
    reads: list[str] = []
    original = fingerprint_module.hash_file

    def counting_hash_file(path: str | Path) -> tuple[bytes, os.stat_result]:
        reads.append(str(path))
        return original(path)

    fingerprint_module.hash_file = counting_hash_file  # type: ignore[assignment]
    try:
        again = fingerprint(data_folder, cache=cache)
        assert reads == []
        assert cache.stats.hits == 6
        assert again.digest == first.digest
        (data_folder / "a.txt").write_text("changed beside a\n")
        changed = fingerprint(data_folder, cache=cache)
    finally:
        fingerprint_module.hash_file = original
    assert reads == [str(data_folder / "a.txt")]
    assert cache.stats.files_hashed == 7
    assert changed.digest != first.digest


def test_the_cache_persists_on_disk_between_processes(data_folder: Path) -> None:
    paths = WatchkeeperPaths.from_environment()
    first_cache = StatCache.open(paths)
    first_cache.racy_window_ns = TEST_RACY_WINDOW_NS
    first = fingerprint(data_folder, cache=first_cache)
    settle()  # the record's entries must be older than the window when it is written
    (data_folder / "raw" / "notes.txt").write_text("hello world\n")
    settle()
    fingerprint(data_folder, cache=first_cache)
    # A new process: only the cache file carries what was seen.
    code = (
        "import sys; from pathlib import Path\n"
        "from agent.data.fingerprint import StatCache, fingerprint\n"
        "from agent.paths import WatchkeeperPaths\n"
        "cache = StatCache.open(WatchkeeperPaths.from_environment())\n"
        f"cache.racy_window_ns = {TEST_RACY_WINDOW_NS}\n"
        "fp = fingerprint(Path(sys.argv[1]), cache=cache)\n"
        "print(cache.stats.files_hashed, cache.stats.hits, fp.digest)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, str(data_folder)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    ).stdout.split()
    assert output[:2] == ["0", "6"]
    assert output[2] != first.digest
    assert output[2] == fingerprint(data_folder, cache=StatCache.in_memory()).digest
    assert (paths.data_dir / "hash-cache.db").is_file()


def test_a_corrupt_cache_record_is_ignored(data_folder: Path) -> None:
    cache_file = Path(tempfile.mkdtemp()) / "hash-cache.db"
    cache = StatCache(path=cache_file, racy_window_ns=TEST_RACY_WINDOW_NS)
    expected = fingerprint(data_folder, cache=cache).digest
    cache.close()
    with sqlite3.connect(cache_file) as db:
        (record,) = db.execute("SELECT record FROM trees").fetchone()
        damaged = bytearray(record)
        damaged[-5] ^= 0xFF  # flip bits inside the stored paths
        db.execute("UPDATE trees SET record = ?", [bytes(damaged)])
        db.execute("DELETE FROM inode_digests")
    fresh = StatCache(path=cache_file, racy_window_ns=TEST_RACY_WINDOW_NS)
    assert fingerprint(data_folder, cache=fresh).digest == expected
    assert fresh.stats.files_hashed == 6


def test_a_cache_file_that_is_not_a_database_is_started_afresh(data_folder: Path) -> None:
    cache_file = Path(tempfile.mkdtemp()) / "hash-cache.db"
    cache_file.write_bytes(b"this is not sqlite" * 100)
    cache = StatCache(path=cache_file, racy_window_ns=TEST_RACY_WINDOW_NS)
    assert fingerprint(data_folder, cache=cache).digest == (
        fingerprint(data_folder, cache=StatCache.in_memory()).digest
    )
    assert cache.stats.files_hashed == 6
    with sqlite3.connect(cache_file) as db:
        assert db.execute("SELECT count(*) FROM trees").fetchone() == (1,)


def test_same_size_rewrite_in_the_same_tick_is_caught_by_the_racy_rule(tmp_path: Path) -> None:
    """A rewrite that leaves size and timestamps unchanged: stat cannot see it, racy rule does.

    On a file system with coarse timestamps, a file rewritten within the tick in which it was
    checked keeps mtime, ctime and size. ctime cannot be set by hand, so the cache ignores it
    here (trust_ctime=False) and mtime is set back: the stat key is then exactly as cached.
    """
    cache = StatCache(path=None, trust_ctime=False, racy_window_ns=TEST_RACY_WINDOW_NS)
    data = tmp_path / "data"
    data.mkdir()
    target = data / "labels.csv"
    target.write_bytes(b"cat\n")
    # The file's timestamp is not older than the moment the cache entry is written (set a
    # little ahead, so that a slow machine cannot age it out of the racy window).
    tick = time.time_ns() + 1_000_000_000
    os.utime(target, ns=(tick, tick))
    before = fingerprint(data, cache=cache)
    target.write_bytes(b"dog\n")  # same size
    os.utime(target, ns=(tick, tick))  # same mtime: the stat key is unchanged
    after = fingerprint(data, cache=cache)
    assert after.files["labels.csv"].digest == b3(b"dog\n")
    assert after.digest != before.digest


def test_entries_older_than_the_racy_window_are_trusted_by_stat(tmp_path: Path) -> None:
    """The other side of the racy rule: an old stat is trusted and the file is not read."""
    cache = StatCache(path=None, trust_ctime=False, racy_window_ns=TEST_RACY_WINDOW_NS)
    data = tmp_path / "data"
    data.mkdir()
    target = data / "labels.csv"
    target.write_bytes(b"cat\n")
    old = time.time_ns() - 10 * TEST_RACY_WINDOW_NS
    os.utime(target, ns=(old, old))
    fingerprint(data, cache=cache)
    hashed = cache.stats.files_hashed
    target.write_bytes(b"dog\n")
    os.utime(target, ns=(old, old))
    fingerprint(data, cache=cache)
    assert cache.stats.files_hashed == hashed  # trusted, not read: only the racy rule reads it


def test_racy_entries_are_rehashed_until_the_record_is_older_than_the_window(
    tmp_path: Path,
) -> None:
    window_ns = 500_000_000
    cache = StatCache(path=None, racy_window_ns=window_ns)
    data = tmp_path / "fresh.csv"
    data.write_text("a\n1\n")
    fingerprint(data, cache=cache)  # written just now: racy when the record is made
    fingerprint(data, cache=cache)  # so it is read again
    assert cache.stats.files_hashed == 2
    time.sleep(window_ns / 1e9 + 0.05)
    fingerprint(data, cache=cache)  # the record made now is older than the file by the window
    settled = cache.stats.files_hashed
    fingerprint(data, cache=cache)
    fingerprint(data, cache=cache)
    assert cache.stats.files_hashed == settled <= 3


def test_immediate_same_size_rewrites_are_always_detected(tmp_path: Path) -> None:
    cache = StatCache.in_memory()  # default racy window
    data = tmp_path / "data"
    data.mkdir()
    target = data / "value.txt"
    for round_number in range(30):
        content = f"{round_number % 10}\n".encode()
        target.write_bytes(content)
        assert fingerprint(data, cache=cache).files["value.txt"].digest == b3(content)


def test_a_file_modified_while_being_hashed_is_read_again(
    tmp_path: Path, cache: StatCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "big.bin"
    data.write_bytes(b"a" * (3 * hashing_module.READ_CHUNK))
    original_read = hashing_module.read_chunk
    chunks_read = 0

    def read_then_modify_once(descriptor: int, buffer: memoryview) -> int:
        nonlocal chunks_read
        chunks_read += 1
        count = original_read(descriptor, buffer)
        if chunks_read == 1:  # a writer changes the file in place during the first read
            with data.open("r+b") as writer:
                writer.seek(2 * hashing_module.READ_CHUNK)
                writer.write(b"b" * 100)
        return count

    monkeypatch.setattr(hashing_module, "read_chunk", read_then_modify_once)
    fp = fingerprint(data, cache=cache)
    final = data.read_bytes()
    assert fp.digest == b3(final)
    assert chunks_read > 4  # the first pass was thrown away and the file read again


def test_a_file_that_never_stops_changing_gives_a_clear_error(
    tmp_path: Path, cache: StatCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "log.txt"
    data.write_text("start\n")
    original_read = hashing_module.read_chunk

    def read_and_append(descriptor: int, buffer: memoryview) -> int:
        count = original_read(descriptor, buffer)
        with data.open("a") as writer:
            writer.write("more\n")
        return count

    monkeypatch.setattr(hashing_module, "read_chunk", read_and_append)
    with pytest.raises(WatchkeeperError, match=r"log\.txt: kept changing while being read"):
        fingerprint(data, cache=cache)


def _fingerprint_as_unprivileged_user(path: Path) -> dict[str, object]:
    """Fingerprint `path` in a child running as uid nobody, where modes 000 really deny access.

    Returns the digest, the files and the skipped entries, or the error message.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        result: dict[str, object] = {}
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            fp = fingerprint(path, cache=StatCache.in_memory())
            result = {
                "digest": fp.digest,
                "files": sorted(fp.files),
                "skipped": [entry.to_json() for entry in fp.skipped],
            }
        except BaseException as error:
            result = {"error": f"{type(error).__name__}: {error}"}
        finally:
            os.write(write_end, json.dumps(result).encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        output = reader.read().decode()
    os.waitpid(child, 0)
    return dict(json.loads(output))


@pytest.fixture
def world_readable_folder() -> Iterator[Path]:
    """A folder another user may enter (root's pytest tmp folders are private)."""
    folder = Path(tempfile.mkdtemp(prefix="wk-data-"))
    folder.chmod(0o755)
    yield folder
    subprocess.run(["chmod", "-R", "u+rwx", str(folder)], check=False)
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def _readable_digest(data: Path, *unreadable: str) -> str:
    """The fingerprint of `data` with the named entries moved away for a moment."""
    aside = data.parent / "aside"
    aside.mkdir()
    for name in unreadable:
        (data / name).rename(aside / name.replace("/", "_"))
    try:
        return fingerprint(data, cache=StatCache.in_memory()).digest
    finally:
        for name in unreadable:
            (aside / name.replace("/", "_")).rename(data / name)
        aside.rmdir()


def test_an_unreadable_data_file_is_skipped_and_named(world_readable_folder: Path) -> None:
    require(os.geteuid() == 0, "root", "run the tests as root (they switch to uid nobody)")
    data = world_readable_folder / "data"
    data.mkdir(mode=0o755)
    (data / "ok.csv").write_text("a\n")
    secret = data / "secret.csv"
    secret.write_text("b\n")
    secret.chmod(0o000)
    (data / "ok.csv").chmod(0o644)
    result = _fingerprint_as_unprivileged_user(data)
    assert result.get("files") == ["ok.csv"], result
    assert result["skipped"] == [{"path": "secret.csv", "reason": "unreadable (Permission denied)"}]
    assert result["digest"] == _readable_digest(data, "secret.csv")


@pytest.mark.parametrize("walker", ["compiled", "python"])
def test_an_unreadable_subfolder_is_skipped_and_the_rest_is_read(
    world_readable_folder: Path, walker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(os.geteuid() == 0, "root", "run the tests as root (they switch to uid nobody)")
    if walker == "python":
        monkeypatch.setattr(scan_module, "_native", None)
    elif not scan_module.is_native():
        pytest.skip("the compiled walker is not built (python setup.py build_ext --inplace)")
    data = world_readable_folder / "data"
    for name in ("a", "private", "z"):
        (data / name).mkdir(parents=True)
        (data / name / "x.csv").write_text(f"{name}\n")
    data.chmod(0o755)
    for name in ("a", "z"):
        (data / name).chmod(0o755)
        (data / name / "x.csv").chmod(0o644)
    (data / "private").chmod(0o000)
    result = _fingerprint_as_unprivileged_user(data)
    assert result.get("files") == ["a/x.csv", "z/x.csv"], result
    assert result["skipped"] == [{"path": "private", "reason": "unreadable (Permission denied)"}]
    assert result["digest"] == _readable_digest(data, "private")


@pytest.mark.timeout(20)
def test_a_symlink_loop_is_skipped_not_a_hang(data_folder: Path, cache: StatCache) -> None:
    before = fingerprint(data_folder, cache=cache).digest
    (data_folder / "loop1").symlink_to("loop2")
    (data_folder / "loop2").symlink_to("loop1")
    fp = fingerprint(data_folder, cache=cache)
    assert [(e.path, e.reason) for e in fp.skipped] == [
        ("loop1", "symlink loop"),
        ("loop2", "symlink loop"),
    ]
    assert fp.digest == before


@pytest.mark.timeout(20)
def test_a_link_to_a_parent_folder_is_recorded_not_followed(
    data_folder: Path, cache: StatCache
) -> None:
    (data_folder / "raw" / "up").symlink_to("..")
    fp = fingerprint(data_folder, cache=cache)
    assert fp.n_files == 7
    assert fp.files["raw/up"].digest == b3(b"symlink\0.")  # the target, relative to the root
    (data_folder / "raw" / "up").unlink()
    (data_folder / "raw" / "up").symlink_to("2024")
    assert fingerprint(data_folder, cache=cache).digest != fp.digest


def test_a_link_to_a_file_inside_is_hashed_as_that_file(
    data_folder: Path, cache: StatCache
) -> None:
    (data_folder / "current.csv").symlink_to("train.csv")
    fp = fingerprint(data_folder, cache=cache)
    assert fp.files["current.csv"].digest == fp.files["train.csv"].digest
    hashed = cache.stats.files_hashed
    settle()
    (data_folder / "train.csv").write_text("x,y\n9,9\n9,9\n")
    fp2 = fingerprint(data_folder, cache=cache)
    assert fp2.files["current.csv"].digest == b3(b"x,y\n9,9\n9,9\n")
    assert cache.stats.files_hashed == hashed + 2


def test_a_link_leading_outside_the_folder_is_skipped_and_not_read(
    data_folder: Path, tmp_path: Path, cache: StatCache
) -> None:
    before = fingerprint(data_folder, cache=cache).digest
    outside = tmp_path / "outside.csv"
    outside.write_text("secret\n")
    (data_folder / "raw" / "escape.csv").symlink_to(outside)
    fp = fingerprint(data_folder, cache=cache)
    assert [(e.path, e.reason) for e in fp.skipped] == [
        ("raw/escape.csv", f"symlink leading outside the data folder (to {outside})")
    ]
    assert "raw/escape.csv" not in fp.files
    assert fp.digest == before


def test_a_dangling_link_is_skipped(data_folder: Path, cache: StatCache) -> None:
    before = fingerprint(data_folder, cache=cache)
    (data_folder / "gone.csv").symlink_to("missing.csv")
    fp = fingerprint(data_folder, cache=cache)
    assert [(e.path, e.reason) for e in fp.skipped] == [
        ("gone.csv", "dangling symlink (its target is missing)")
    ]
    assert fp.digest == before.digest and sorted(fp.files) == sorted(before.files)


@pytest.mark.timeout(20)
def test_pipes_and_sockets_are_skipped_never_opened_and_do_not_change_the_digest(
    data_folder: Path, cache: StatCache
) -> None:
    before = fingerprint(data_folder, cache=cache).digest
    os.mkfifo(data_folder / "raw" / "pipe")
    (data_folder / "to-pipe").symlink_to("raw/pipe")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(data_folder / "a" / "sock"))
    try:
        first = fingerprint(data_folder, cache=cache)
        second = fingerprint(data_folder, cache=cache)
    finally:
        listener.close()
    assert [(e.path, e.reason) for e in first.skipped] == [
        ("a/sock", "socket"),
        ("raw/pipe", "named pipe (FIFO)"),
        ("to-pipe", "symlink to a named pipe (FIFO)"),
    ]
    assert first.digest == second.digest == before
    assert first.skipped == second.skipped


@pytest.mark.timeout(20)
def test_a_file_replaced_by_a_pipe_before_reading_is_skipped_without_blocking(
    data_folder: Path, cache: StatCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = fingerprint_module._resolve_links

    def list_then_replace(root: Path, kind: str, scan: scan_module.FolderScan) -> dict:
        (data_folder / "a.txt").unlink()  # a writer swaps a file for a pipe after the walk
        os.mkfifo(data_folder / "a.txt")
        return original(root, kind, scan)

    monkeypatch.setattr(fingerprint_module, "_resolve_links", list_then_replace)
    fp = fingerprint(data_folder, cache=cache)
    assert [(e.path, e.reason) for e in fp.skipped] == [("a.txt", "named pipe (FIFO)")]
    assert "a.txt" not in fp.files and "train.csv" in fp.files


def test_a_missing_path_is_a_clear_error(tmp_path: Path, cache: StatCache) -> None:
    with pytest.raises(WatchkeeperError, match=r"nope: no such file or folder"):
        fingerprint(tmp_path / "nope", cache=cache)


def test_the_git_folder_at_the_top_is_not_data(data_folder: Path, cache: StatCache) -> None:
    before = fingerprint(data_folder, cache=cache).digest
    (data_folder / ".git").mkdir()
    (data_folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert fingerprint(data_folder, cache=cache).digest == before


def test_compiled_and_python_walks_agree(
    data_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not scan_module.is_native():
        pytest.skip("the compiled walker is not built (python setup.py build_ext --inplace)")
    for index in range(30):
        (data_folder / "raw" / f"f{index:02d}").write_bytes(b"x" * index)
    (data_folder / "raw" / "ünïcode.txt").write_text("u\n")
    os.mkfifo(data_folder / "raw" / "pipe")
    (data_folder / "gone").symlink_to("missing")
    native = scan_module.scan_folder(os.fsencode(data_folder))
    monkeypatch.setattr(scan_module, "_native", None)
    python = scan_module.scan_folder(os.fsencode(data_folder))
    assert native.blob == python.blob
    assert np.array_equal(native.entries, python.entries)


def test_an_empty_folder_has_a_stable_fingerprint(tmp_path: Path, cache: StatCache) -> None:
    (tmp_path / "empty").mkdir()
    fp = fingerprint(tmp_path / "empty", cache=cache)
    assert fp.n_files == 0
    assert fp.digest == blake3.blake3(b"").hexdigest()
    assert isinstance(fp, DataFingerprint)


_names = st.text(alphabet="ab.-_é", min_size=1, max_size=4).filter(lambda n: n not in (".", ".."))
_trees = st.dictionaries(
    st.lists(_names, min_size=1, max_size=3).map(tuple), st.binary(max_size=64), max_size=12
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=_trees)
def test_any_tree_fingerprints_to_the_hash_of_its_sorted_manifest(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[tuple[str, ...], bytes]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    written: dict[str, bytes] = {}
    for parts, content in tree.items():
        target = root.joinpath(*parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            continue  # a name used both as a file and as a folder: keep the first
        written["/".join(parts)] = content
    written = {path: content for path, content in written.items() if (root / path).is_file()}
    fp = fingerprint(root, cache=StatCache.in_memory())
    expected = manifest_digest([(path, b3(content)) for path, content in written.items()])
    assert fp.digest == expected
    assert sorted(fp.files) == sorted(written)
    if scan_module.is_native():
        native = scan_module.scan_folder(os.fsencode(root))
        python = scan_module._python_walk(os.fsencode(root), b"", b".git")
        assert native.blob == python.blob
        assert np.array_equal(native.entries, python.entries)


def test_a_file_removed_between_listing_and_reading_is_named(
    data_folder: Path, cache: StatCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = fingerprint_module._resolve_links

    def list_then_remove(root: Path, kind: str, scan: scan_module.FolderScan) -> dict:
        (data_folder / "a.txt").unlink()  # a writer removes a file right after the walk
        return original(root, kind, scan)

    monkeypatch.setattr(fingerprint_module, "_resolve_links", list_then_remove)
    with pytest.raises(WatchkeeperError, match=r"a\.txt: removed while the data was being read"):
        fingerprint(data_folder, cache=cache)
