"""Content-addressed upload of a folder into the remote cache, then a tree built from the cache.

One round trip tells which blobs the remote lacks; only those are sent, as framed streams on
several channels at once; the remote checks each blob before it enters the cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import paramiko

from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths
from agent.remote.connection import RemoteSession, RemoteUnreachableError, SshConnection

FRAME_HEADER = struct.Struct(">32sQ")  # digest, size; the payload and a CRC-32 trailer follow
CRC_TRAILER = struct.Struct(">I")
END_FRAME = FRAME_HEADER.pack(b"\0" * 32, 0)
READ_CHUNK = 1 << 20
SEND_BUFFER = 1 << 20
BIG_FILE = 4 << 20
SMALL_FILE = 256 << 10
RACY_NS = 2_000_000_000  # a file changed this close to its last check is hashed again
DEFAULT_LANES = 3


@dataclass(frozen=True)
class LocalFile:
    """One file of the folder being sent: where it is and what it holds."""

    relative: str
    path: str
    size: int
    executable: bool
    digest: str


@dataclass
class SyncReport:
    """What a sync did: files in the tree, blobs sent and bytes on the wire."""

    files: int
    blobs: int
    blobs_sent: int
    blob_bytes_sent: int
    wire_bytes_sent: int
    seconds: float
    verified_with: str
    files_linked: int
    phases: dict[str, float] = field(default_factory=dict)


class DigestCache:
    """BLAKE3 digests keyed by (path, device, inode, size, mtime, ctime), kept in SQLite.

    A digest is reused only when the file's times are older than its last check by more than
    the racy window, so a same-size rewrite within the same clock tick is still noticed.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, dev INTEGER, "
            "ino INTEGER, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT, "
            "checked_ns INTEGER)"
        )

    @classmethod
    def default(cls) -> DigestCache:
        return cls(WatchkeeperPaths.from_environment().data_dir / "sync-digests.db")

    def lookup(self, paths: list[str]) -> dict[str, tuple[int, int, int, int, int, str, int]]:
        found: dict[str, tuple[int, int, int, int, int, str, int]] = {}
        rows = self.db.execute("SELECT * FROM digests").fetchall() if paths else []
        wanted = set(paths)
        for row in rows:
            if row[0] in wanted:
                found[row[0]] = row[1:]
        return found

    def store(self, rows: list[tuple[str, int, int, int, int, int, str, int]]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO digests VALUES (?,?,?,?,?,?,?,?)", rows)

    def close(self) -> None:
        self.db.close()


def scan_tree(
    root: Path, exclude: frozenset[str] = frozenset()
) -> list[tuple[str, str, os.stat_result]]:
    """Every regular file below root (symlinks followed, loops skipped) as (relative, path, stat).

    Top-level names in `exclude` are left out.
    """
    found: list[tuple[str, str, os.stat_result]] = []
    if root.is_file():
        return [(root.name, str(root), root.stat())]
    seen: set[tuple[int, int]] = set()
    pending: list[tuple[str, str]] = [("", str(root))]
    while pending:
        prefix, folder = pending.pop()
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        with os.scandir(folder) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if not prefix and entry.name in exclude:
                    continue
                try:
                    entry_stat = entry.stat()
                except OSError as error:
                    raise WatchkeeperError(f"{entry.path}: cannot be read ({error}).") from error
                if stat.S_ISDIR(entry_stat.st_mode):
                    pending.append((relative + "/", entry.path))
                elif stat.S_ISREG(entry_stat.st_mode):
                    found.append((relative, entry.path, entry_stat))
    found.sort()
    return found


def _hash_all(items: list[tuple[str, os.stat_result]]) -> list[str]:
    """Digests in order: large files on a thread pool while small ones are read right here.

    Small files are cheaper to read one after another than to hand to threads.
    """
    results: list[str] = [""] * len(items)
    large = [i for i, (_, info) in enumerate(items) if info.st_size >= SMALL_FILE]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {i: pool.submit(_hash_file, items[i][0], items[i][1].st_size) for i in large}
        for index, (path, info) in enumerate(items):
            if info.st_size < SMALL_FILE:
                results[index] = _hash_small(path)
        for index, future in futures.items():
            results[index] = future.result()
    return results


def _hash_small(path: str) -> str:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        data = os.read(descriptor, SMALL_FILE + 1)
        hasher = blake3.blake3(data)
        while len(data) > SMALL_FILE or (data and len(data) == READ_CHUNK):  # it grew meanwhile
            data = os.read(descriptor, READ_CHUNK)
            hasher.update(data)
    finally:
        os.close(descriptor)
    return hasher.hexdigest()


def _hash_file(path: str, size: int) -> str:
    if size >= BIG_FILE:
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        hasher.update_mmap(path)
        return hasher.hexdigest()
    with open(path, "rb") as handle:
        return blake3.blake3(handle.read()).hexdigest()


def hash_tree(
    root: Path, cache: DigestCache | None = None, exclude: frozenset[str] = frozenset()
) -> list[LocalFile]:
    """Digest every file below root, reusing cached digests of files that did not change."""
    entries = scan_tree(root, exclude)
    known = cache.lookup([path for _, path, _ in entries]) if cache else {}
    now_ns = time.time_ns()
    digests: dict[str, str] = {}
    to_hash: list[tuple[str, os.stat_result]] = []
    for _, path, info in entries:
        row = known.get(path)
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if row is not None and tuple(row[:5]) == key and max(key[3], key[4]) < row[6] - RACY_NS:
            digests[path] = row[5]
        else:
            to_hash.append((path, info))
    hashed = _hash_all(to_hash)
    fresh_rows = []
    for (path, info), digest in zip(to_hash, hashed, strict=True):
        after = os.stat(path)
        if (after.st_mtime_ns, after.st_size) != (info.st_mtime_ns, info.st_size):
            digest = _hash_file(path, after.st_size)  # changed while we read it
            info = after
        digests[path] = digest
        fresh_rows.append(
            (
                path,
                info.st_dev,
                info.st_ino,
                info.st_size,
                info.st_mtime_ns,
                info.st_ctime_ns,
                digest,
                now_ns,
            )
        )
    if cache is not None and fresh_rows:
        cache.store(fresh_rows)
    return [
        LocalFile(
            relative=relative,
            path=path,
            size=info.st_size,
            executable=bool(info.st_mode & 0o111),
            digest=digests[path],
        )
        for relative, path, info in entries
    ]


def _split_lanes(blobs: list[LocalFile], lanes: int) -> list[list[LocalFile]]:
    """Spread blobs over lanes so that each carries about the same number of bytes."""
    buckets: list[list[LocalFile]] = [[] for _ in range(max(1, lanes))]
    loads = [0] * len(buckets)
    for blob in sorted(blobs, key=lambda b: b.size, reverse=True):
        lightest = loads.index(min(loads))
        buckets[lightest].append(blob)
        loads[lightest] += blob.size + 64
    return [bucket for bucket in buckets if bucket]


class _Lane:
    """One channel running the remote receiver, fed framed blobs from a thread."""

    def __init__(self, channel: paramiko.Channel, blobs: list[LocalFile]) -> None:
        self.channel = channel
        self.blobs = blobs
        self.bytes_written = 0
        self.error: BaseException | None = None
        self.result: dict[str, Any] | None = None

    def run(self) -> None:
        try:
            self._send()
            self.result = self._read_reply()
        except BaseException as error:
            self.error = error

    def _send(self) -> None:
        buffer = bytearray()
        channel = self.channel
        for blob in self.blobs:
            buffer += FRAME_HEADER.pack(bytes.fromhex(blob.digest), blob.size)
            crc = 0
            sent = 0
            with open(blob.path, "rb") as handle:
                while True:
                    chunk = handle.read(READ_CHUNK)
                    if not chunk:
                        break
                    chunk = chunk[: blob.size - sent]
                    sent += len(chunk)
                    crc = zlib.crc32(chunk, crc)
                    if len(chunk) >= SEND_BUFFER // 2:
                        if buffer:
                            channel.sendall(buffer)
                            self.bytes_written += len(buffer)
                            buffer.clear()
                        channel.sendall(chunk)
                        self.bytes_written += len(chunk)
                        continue
                    buffer += chunk
                    if len(buffer) >= SEND_BUFFER:
                        channel.sendall(buffer)
                        self.bytes_written += len(buffer)
                        buffer.clear()
                    if sent == blob.size:
                        break
            if sent != blob.size:
                raise WatchkeeperError(f"{blob.path}: it shrank while being sent; sync again.")
            buffer += CRC_TRAILER.pack(crc)
        buffer += END_FRAME
        channel.sendall(buffer)
        self.bytes_written += len(buffer)
        channel.shutdown_write()

    def _read_reply(self) -> dict[str, Any]:
        output = bytearray()
        while True:
            data = self.channel.recv(65536)
            if not data:
                break
            output += data
        status = self.channel.recv_exit_status()
        if status != 0 or not output.strip():
            errors = b""
            while self.channel.recv_stderr_ready():
                errors += self.channel.recv_stderr(65536)
            if not self.channel.get_transport() or not self.channel.get_transport().is_active():
                raise RemoteUnreachableError("connection lost during upload")
            raise WatchkeeperError(
                f"remote receiver failed (exit {status}): {errors.decode(errors='replace')[-800:]}"
            )
        reply: dict[str, Any] = json.loads(output.decode().splitlines()[-1])
        return reply


def _read_json_line(channel: paramiko.Channel, what: str) -> dict[str, Any]:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = channel.recv(1 << 20)
        if not chunk:
            errors = b""
            while channel.recv_stderr_ready():
                errors += channel.recv_stderr(65536)
            transport = channel.get_transport()
            if transport is None or not transport.is_active():
                raise RemoteUnreachableError(f"connection lost during {what}")
            status = channel.recv_exit_status()
            if status == 127:
                raise WatchkeeperError(f"{what}: the remote python was not found (exit 127).")
            raise WatchkeeperError(
                f"{what} failed on the remote (exit {status}): {errors.decode(errors='replace')}"
            )
        data += chunk
    reply: dict[str, Any] = json.loads(data.decode())
    if "error" in reply:
        raise WatchkeeperError(f"{what} failed on the remote: {reply['error']}")
    return reply


def _upload(
    connection: SshConnection,
    session: RemoteSession,
    hash_files: Callable[[], list[LocalFile]],
    remote_dest: str,
    lanes: int,
    progress: Callable[[str], None] | None,
) -> SyncReport:
    """One attempt: check, send what is missing, build the tree. Remote programs start first,
    so that their start-up overlaps the local hashing."""
    started = time.perf_counter()
    cache = session.cache_dir
    receive = session.helper_command("receive", cache)
    plan = connection.channel(session.helper_command("plan", cache))
    early_lane = connection.channel(receive)
    files = hash_files()
    phases = {"hash": time.perf_counter() - started}
    blobs = {f.digest: f for f in files}
    manifest = json.dumps({"blobs": {d: f.size for d, f in blobs.items()}}).encode() + b"\n"
    plan.sendall(manifest)
    wire = len(manifest)
    missing = [blobs[d] for d in _read_json_line(plan, "cache check")["missing"]]
    phases["check"] = time.perf_counter() - started - phases["hash"]
    if progress:
        total = sum(b.size for b in missing)
        progress(f"sending {len(missing)} of {len(blobs)} blobs ({total / 1e6:.1f} MB)")
    sent_blobs, sent_bytes, verified_with = 0, 0, "nothing sent"
    for _attempt in range(2):
        if not missing:
            break
        buckets = _split_lanes(missing, lanes if _worth_lanes(missing) else 1)
        channels = [early_lane] + [connection.channel(receive) for _ in buckets[1:]]
        early_lane = None
        workers = [_Lane(chan, bucket) for chan, bucket in zip(channels, buckets, strict=True)]
        threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rejected: set[str] = set()
        for worker in workers:
            if worker.error is not None:
                raise worker.error
            assert worker.result is not None
            wire += worker.bytes_written
            rejected.update(worker.result["rejected"])
            verified_with = str(worker.result["verified_with"])
        sent_blobs += sum(len(w.blobs) for w in workers)
        sent_bytes += sum(b.size for w in workers for b in w.blobs)
        missing = [blobs[d] for d in sorted(rejected)]
        if missing:
            early_lane = connection.channel(receive)
    if early_lane is not None:
        early_lane.sendall(END_FRAME)
        early_lane.shutdown_write()
        early_lane.close()
    if missing:
        raise WatchkeeperError(
            f"the remote rejected {len(missing)} blob(s) twice after checking them "
            f"(first: {missing[0].relative}); is its disk full? See `watchkeeper remote test`."
        )
    phases["send"] = time.perf_counter() - started - phases["hash"] - phases["check"]
    request = {
        "materialize": {
            "dest": remote_dest,
            "files": [[f.relative, f.digest, f.size, f.executable] for f in files],
        }
    }
    payload = json.dumps(request).encode() + b"\n"
    plan.sendall(payload)
    wire += len(payload)
    linked = int(_read_json_line(plan, "building the remote folder")["built"])
    phases["build"] = time.perf_counter() - started - sum(phases.values())
    plan.shutdown_write()
    with contextlib.suppress(Exception):
        plan.recv_exit_status()
    plan.close()
    return SyncReport(
        files=len(files),
        blobs=len(blobs),
        blobs_sent=sent_blobs,
        blob_bytes_sent=sent_bytes,
        wire_bytes_sent=wire,
        seconds=time.perf_counter() - started,
        verified_with=verified_with,
        files_linked=linked,
        phases=phases,
    )


def _worth_lanes(missing: list[LocalFile]) -> bool:
    """More lanes pay off only for many files or many bytes."""
    return len(missing) > 200 or sum(b.size for b in missing) > (16 << 20)


def sync_tree(
    session: RemoteSession,
    local_root: Path,
    remote_dest: str,
    *,
    lanes: int = DEFAULT_LANES,
    digest_cache: DigestCache | None = None,
    progress: Callable[[str], None] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> SyncReport:
    """Make remote_dest hold local_root's files, sending only blobs the remote cache lacks.

    Safe to repeat after a broken upload: blobs already checked are kept, others re-sent.
    """
    started = time.perf_counter()
    hashed: list[LocalFile] = []

    def hash_files() -> list[LocalFile]:
        if not hashed:
            hashed.extend(hash_tree(local_root, digest_cache, exclude))
        return hashed

    report = session.call(
        lambda connection: _upload(connection, session, hash_files, remote_dest, lanes, progress)
    )
    report.seconds = time.perf_counter() - started
    return report
