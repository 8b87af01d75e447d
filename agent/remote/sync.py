"""Content-addressed upload of a folder into the remote cache, then a tree built from the cache.

One round trip tells which blobs the remote lacks; only those are sent, as framed streams on
several channels at once; the remote checks each blob before it enters the cache.
"""

from __future__ import annotations

import json
import os
import posixpath
import queue
import sqlite3
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import paramiko

from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths
from agent.remote.connection import (
    RemoteSession,
    RemoteUnreachableError,
    SshConnection,
    exit_status,
    read_stderr_tail,
)
from agent.remote.replies import MAX_REPLY_BYTES, HelperReplyError, check_fields, decode_object

FRAME_HEADER = struct.Struct(">32sQI")  # digest, size, length of the links JSON that follows
CRC_TRAILER = struct.Struct(">I")
END_FRAME = FRAME_HEADER.pack(b"\0" * 32, 0, 0)
READ_CHUNK = 1 << 20
SEND_BUFFER = 1 << 20
BIG_FILE = 4 << 20
SMALL_FILE = 256 << 10
KEEP_CONTENT = 64 << 10  # small files are kept in memory from hashing to sending
KEEP_BUDGET = 256 << 20  # at most this much content is kept per sync
RACY_NS = 2_000_000_000  # a file changed this close to its last check is hashed again
DEFAULT_LANES = 3
LANE_FILES = 200  # a further lane opens per this many blobs to send ...
LANE_BYTES = 16 << 20  # ... or per this many bytes


@dataclass(frozen=True)
class LocalFile:
    """One file of the folder being sent: where it is and what it holds."""

    relative: str
    path: str
    size: int
    executable: bool
    digest: str
    content: bytes | None = field(default=None, repr=False, compare=False)
    # (dev, ino, size, mtime_ns, ctime_ns) when hashed, and whether those times were older than
    # the racy window then: a settled file whose stamp is unchanged still holds what was hashed.
    stamp: tuple[int, int, int, int, int] | None = field(default=None, compare=False)
    settled: bool = field(default=False, compare=False)


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


CacheRow = tuple[int, int, int, int, int, str, int]  # dev, ino, size, mtime, ctime, digest, checked


class DigestCache:
    """BLAKE3 digests keyed by (device, inode) with size, mtime and ctime, kept in SQLite.

    Keyed by inode, a file reached through different paths (a run folder's link to a data
    folder) is hashed once. A digest is reused only when the file's times are older than its
    last check by more than the racy window, so a same-size rewrite within the same clock tick
    is still noticed. Entries not checked for 30 days are dropped.
    """

    KEEP_NS = 30 * 86400 * 1_000_000_000

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS inode_digests (dev INTEGER, ino INTEGER, size INTEGER, "
            "mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT, checked_ns INTEGER, "
            "PRIMARY KEY (dev, ino)) WITHOUT ROWID"
        )
        with self.db:
            self.db.execute(
                "DELETE FROM inode_digests WHERE checked_ns < ?", [time.time_ns() - self.KEEP_NS]
            )

    @classmethod
    def default(cls) -> DigestCache:
        return cls(WatchkeeperPaths.from_environment().data_dir / "sync-digests.db")

    def lookup(self) -> dict[tuple[int, int], CacheRow]:
        """Every remembered digest by (device, inode)."""
        rows = self.db.execute("SELECT * FROM inode_digests").fetchall()
        return {(row[0], row[1]): row for row in rows}

    def store(self, rows: list[CacheRow]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO inode_digests VALUES (?,?,?,?,?,?,?)", rows)

    def close(self) -> None:
        self.db.close()


def _stamp(info: os.stat_result) -> tuple[int, int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def internal_link_target(relative: str, target: str) -> bool:
    """Whether a symlink at `relative` with this target text stays inside the tree."""
    if not target or target.startswith("/"):
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relative), target))
    return resolved not in (".", "..") and not resolved.startswith("../")


def scan_tree(
    root: Path, exclude: frozenset[str] = frozenset(), links: list[tuple[str, str]] | None = None
) -> list[tuple[str, str, os.stat_result]]:
    """Every regular file below root as (relative, path, stat), sorted.

    Symlinks whose relative target stays inside the tree are kept as links (appended to
    `links` as (relative, target)) when a list is given; other symlinks are followed, with
    loops refused. Top-level names in `exclude` are left out.
    """
    found: list[tuple[str, str, os.stat_result]] = []
    if root.is_file():
        return [(root.name, str(root), root.stat())]
    root_info = os.stat(root)
    pending: list[tuple[str, str, frozenset[tuple[int, int]]]] = [
        ("", str(root), frozenset({(root_info.st_dev, root_info.st_ino)}))
    ]
    while pending:
        prefix, folder, ancestors = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if not prefix and entry.name in exclude:
                    continue
                if links is not None and entry.is_symlink():
                    target = os.readlink(entry.path)
                    if internal_link_target(relative, target):
                        links.append((relative, target))
                        continue
                try:
                    entry_stat = entry.stat()
                except OSError as error:
                    raise WatchkeeperError(f"{entry.path}: cannot be read ({error}).") from error
                if stat.S_ISDIR(entry_stat.st_mode):
                    key = (entry_stat.st_dev, entry_stat.st_ino)
                    if key in ancestors:
                        raise WatchkeeperError(f"{entry.path}: symlink loop; fix or remove it.")
                    pending.append((relative + "/", entry.path, ancestors | {key}))
                elif stat.S_ISREG(entry_stat.st_mode):
                    found.append((relative, entry.path, entry_stat))
    found.sort()
    return found


def _hash_all(
    items: list[tuple[str, os.stat_result]], keep: dict[str, bytes] | None = None
) -> list[str]:
    """Digests in order: large files on a thread pool while small ones are read right here.

    Small files are cheaper to read one after another than to hand to threads. The content of
    files up to KEEP_CONTENT bytes is put in `keep`, so that it is sent without a second read.
    """
    results: list[str] = [""] * len(items)
    large = [i for i, (_, info) in enumerate(items) if info.st_size >= SMALL_FILE]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {i: pool.submit(_hash_file, items[i][0], items[i][1].st_size) for i in large}
        for index, (path, info) in enumerate(items):
            if info.st_size < SMALL_FILE:
                try:
                    results[index], data = _hash_small(path)
                except OSError as error:
                    raise WatchkeeperError(f"{path}: cannot be read ({error.strerror}).") from error
                if keep is not None and data is not None and len(data) <= KEEP_CONTENT:
                    keep[path] = data
        for index, future in futures.items():
            try:
                results[index] = future.result()
            except OSError as error:
                raise WatchkeeperError(
                    f"{items[index][0]}: cannot be read ({error.strerror})."
                ) from error
    return results


def _hash_small(path: str) -> tuple[str, bytes | None]:
    """The digest of a small file, and its content when it was read whole in one go."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        data = os.read(descriptor, SMALL_FILE + 1)
        hasher = blake3.blake3(data)
        whole: bytes | None = data
        while len(data) > SMALL_FILE or (data and len(data) == READ_CHUNK):  # it grew meanwhile
            whole = None
            data = os.read(descriptor, READ_CHUNK)
            hasher.update(data)
    finally:
        os.close(descriptor)
    return hasher.hexdigest(), whole


def _hash_file(path: str, size: int) -> str:
    if size >= BIG_FILE:
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        hasher.update_mmap(path)
        return hasher.hexdigest()
    with open(path, "rb") as handle:
        return blake3.blake3(handle.read()).hexdigest()


class TreeHasher:
    """Digests of a folder's files, produced in chunks so that sending can start early.

    Digests are reused from the DigestCache for files whose stat did not change (outside the
    racy window); iterating again replays the chunks already made.
    """

    def __init__(
        self,
        root: Path,
        cache: DigestCache | None = None,
        exclude: frozenset[str] = frozenset(),
        *,
        chunk_files: int = 4000,
        chunk_bytes: int = 64 << 20,
    ) -> None:
        self.root = root
        self.cache = cache
        self.exclude = exclude
        self.chunk_files = chunk_files
        self.chunk_bytes = chunk_bytes
        self.done: list[list[LocalFile]] = []
        self.finished = False
        self._fresh_rows: list[CacheRow] = []
        self.links: list[tuple[str, str]] = []
        self.kept_bytes = 0

    def chunks(self) -> Iterator[list[LocalFile]]:
        yield from self.done
        if self.finished:
            return
        self.links = []
        entries = scan_tree(self.root, self.exclude, self.links)
        known = self.cache.lookup() if self.cache else {}
        started_ns = time.time_ns()
        skip = sum(len(chunk) for chunk in self.done)
        batch: list[tuple[str, str, os.stat_result]] = []
        batch_bytes = 0
        for entry in entries[skip:]:
            batch.append(entry)
            batch_bytes += entry[2].st_size
            if len(batch) >= self.chunk_files or batch_bytes >= self.chunk_bytes:
                self.done.append(self._digest(batch, known, started_ns))
                yield self.done[-1]
                batch, batch_bytes = [], 0
        if batch:
            self.done.append(self._digest(batch, known, started_ns))
            yield self.done[-1]
        self.finished = True

    def _digest(
        self,
        batch: list[tuple[str, str, os.stat_result]],
        known: dict[tuple[int, int], CacheRow],
        started_ns: int,
    ) -> list[LocalFile]:
        digests: dict[str, str] = {}
        infos: dict[str, os.stat_result] = {}
        to_hash: list[tuple[str, os.stat_result]] = []
        for _, path, info in batch:
            row = known.get((info.st_dev, info.st_ino))
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            if row is not None and row[:5] == key and max(key[3:]) < row[6] - RACY_NS:
                digests[path] = row[5]
                infos[path] = info
            else:
                to_hash.append((path, info))
        keep: dict[str, bytes] | None = {} if self.kept_bytes < KEEP_BUDGET else None
        for (path, info), digest in zip(to_hash, _hash_all(to_hash, keep), strict=True):
            # A file read whole in one go is sent from that read: no need to look again.
            after = info if keep is not None and path in keep else os.stat(path)
            if (after.st_mtime_ns, after.st_size) != (info.st_mtime_ns, info.st_size):
                digest = _hash_file(path, after.st_size)  # changed while we read it
                info = after
                if keep is not None:
                    keep.pop(path, None)
            digests[path] = digest
            infos[path] = info
            self._fresh_rows.append(
                (
                    info.st_dev,
                    info.st_ino,
                    info.st_size,
                    info.st_mtime_ns,
                    info.st_ctime_ns,
                    digest,
                    started_ns,
                )
            )
        kept = keep or {}
        self.kept_bytes += sum(len(data) for data in kept.values())
        return [
            LocalFile(
                relative=relative,
                path=path,
                size=infos[path].st_size,
                executable=bool(infos[path].st_mode & 0o111),
                digest=digests[path],
                content=kept.get(path),
                stamp=_stamp(infos[path]),
                settled=max(infos[path].st_mtime_ns, infos[path].st_ctime_ns)
                < started_ns - RACY_NS,
            )
            for relative, path, _ in batch
        ]

    def remember(self) -> None:
        """Store the digests computed now in the DigestCache."""
        if self.cache is not None and self._fresh_rows:
            self.cache.store(self._fresh_rows)
            self._fresh_rows = []

    def all_files(self) -> list[LocalFile]:
        return [file for chunk in self.chunks() for file in chunk]


def hash_tree(
    root: Path, cache: DigestCache | None = None, exclude: frozenset[str] = frozenset()
) -> list[LocalFile]:
    """Digest every file below root, reusing cached digests of files that did not change."""
    hasher = TreeHasher(root, cache, exclude)
    files = hasher.all_files()
    hasher.remember()
    return files


class _Lane:
    """One channel running the remote receiver; a thread feeds it framed blobs from a queue.

    Each frame names the paths the blob has in the destination tree, so the receiver links it
    there as soon as it is stored.
    """

    def __init__(self, channel: paramiko.Channel, remote_name: str) -> None:
        self.channel = channel
        self.remote_name = remote_name
        self.pending: queue.SimpleQueue[list[tuple[LocalFile, list[LocalFile]]] | None] = (
            queue.SimpleQueue()
        )
        self.load = 0
        self.sent: list[LocalFile] = []
        self.changed: list[LocalFile] = []
        self.bytes_written = 0
        self.error: BaseException | None = None
        self.result: dict[str, Any] | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def put(self, items: list[tuple[LocalFile, list[LocalFile]]]) -> None:
        """Queue blobs, each with the files of the tree that hold it."""
        self.load += sum(blob.size + 256 for blob, _ in items)
        self.pending.put(items)

    def close(self) -> None:
        self.pending.put(None)

    def run(self) -> None:
        try:
            self._send()
            self.result = self._read_reply()
        except BaseException as error:
            self.error = error

    def _flush(self, buffer: bytearray) -> None:
        if buffer:
            self.channel.sendall(buffer)
            self.bytes_written += len(buffer)
            buffer.clear()

    def _send(self) -> None:
        buffer = bytearray()
        while True:
            try:
                item = self.pending.get_nowait()
            except queue.Empty:
                self._flush(buffer)
                item = self.pending.get()
            if item is None:
                break
            for blob, paths in item:
                self._frame(blob, paths, buffer)
        buffer += END_FRAME
        self._flush(buffer)
        self.channel.shutdown_write()

    def _frame(self, blob: LocalFile, paths: list[LocalFile], buffer: bytearray) -> None:
        links = b"\0".join(
            (b"1" if f.executable else b"0") + os.fsencode(f.relative) for f in paths
        )
        buffer += FRAME_HEADER.pack(bytes.fromhex(blob.digest), blob.size, len(links))
        buffer += links
        if blob.content is not None:
            buffer += blob.content
            buffer += CRC_TRAILER.pack(zlib.crc32(blob.content))
            self.sent.append(blob)
            if len(buffer) >= SEND_BUFFER:
                self._flush(buffer)
            return
        crc = 0
        sent = 0
        # A settled file is checked by its stamp after the read; any other is hashed again.
        hasher = None if blob.settled and blob.stamp is not None else blake3.blake3()
        try:
            handle = open(blob.path, "rb")  # noqa: SIM115 - closed below
        except OSError as error:
            raise WatchkeeperError(f"{blob.path}: cannot be read ({error.strerror}).") from error
        with handle:
            while sent < blob.size:
                chunk = handle.read(min(READ_CHUNK, blob.size - sent))
                if not chunk:
                    break
                sent += len(chunk)
                crc = zlib.crc32(chunk, crc)
                if hasher is not None:
                    hasher.update(chunk)
                if len(chunk) >= SEND_BUFFER // 2:
                    self._flush(buffer)
                    self.channel.sendall(chunk)
                    self.bytes_written += len(chunk)
                    continue
                buffer += chunk
                if len(buffer) >= SEND_BUFFER:
                    self._flush(buffer)
            unchanged = (
                hasher.hexdigest() == blob.digest
                if hasher is not None
                else _stamp(os.fstat(handle.fileno())) == blob.stamp
            )
        if sent != blob.size:
            raise WatchkeeperError(f"{blob.path}: it shrank while being sent; sync again.")
        if not unchanged:
            # Changed since it was hashed: a wrong checksum makes the remote discard it.
            buffer += CRC_TRAILER.pack(crc ^ 0xFFFFFFFF)
            self.changed.append(blob)
            return
        buffer += CRC_TRAILER.pack(crc)
        self.sent.append(blob)

    def _read_reply(self) -> dict[str, Any]:
        """The receiver's one JSON line (at most MAX_REPLY_BYTES), checked."""
        output = bytearray()
        while True:
            data = self.channel.recv(65536)
            if not data:
                break
            output += data
            if len(output) > MAX_REPLY_BYTES:
                raise HelperReplyError(
                    f"remote {self.remote_name}: the helper's receive reply is longer than "
                    f"{MAX_REPLY_BYTES >> 20} MiB; expected one JSON line"
                )
        status = exit_status(self.channel)
        if status != 0:
            errors = read_stderr_tail(self.channel).decode(errors="replace").strip()
            transport = self.channel.get_transport()
            if transport is None or not transport.is_active():
                raise RemoteUnreachableError(f"remote {self.remote_name}: connection lost")
            last = errors.splitlines()[-1][-300:] if errors else "no message"
            raise WatchkeeperError(
                f"remote {self.remote_name}: the helper's receive failed (exit "
                f"{'unknown' if status is None else status}): {last}"
            )
        lines = bytes(output).strip().splitlines()
        reply = decode_object(
            self.remote_name, "the helper's receive reply", lines[-1] if lines else b""
        )
        return check_fields(self.remote_name, "receive", reply)


class _JsonLines:
    """Reads one JSON reply per line from a channel (several may arrive in one packet).

    Each line is at most MAX_REPLY_BYTES and must be a JSON object with the fields its mode
    promises (see `agent.remote.replies`).
    """

    def __init__(self, channel: paramiko.Channel, remote_name: str) -> None:
        self.channel = channel
        self.remote_name = remote_name
        self.buffer = bytearray()

    def next(self, mode: str) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_REPLY_BYTES:
                raise HelperReplyError(
                    f"remote {self.remote_name}: the helper's {mode} reply is longer than "
                    f"{MAX_REPLY_BYTES >> 20} MiB; expected one JSON line"
                )
            chunk = self.channel.recv(1 << 20)
            if not chunk:
                raise self._ended(mode)
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        reply = decode_object(self.remote_name, f"the helper's {mode} reply", line)
        if "error" in reply:
            raise WatchkeeperError(
                f"remote {self.remote_name}: the helper's {mode} failed: {reply['error']!s}"
            )
        return check_fields(self.remote_name, mode, reply)

    def _ended(self, mode: str) -> Exception:
        channel = self.channel
        name = self.remote_name
        transport = channel.get_transport()
        if transport is None or not transport.is_active():
            return RemoteUnreachableError(f"remote {name}: connection lost during the {mode}")
        status = exit_status(channel)
        if status == 127:
            return WatchkeeperError(
                f"remote {name}: {mode}: the remote python was not found (exit 127)."
            )
        errors = read_stderr_tail(channel).decode(errors="replace").strip().splitlines()
        return HelperReplyError(
            f"remote {name}: the helper's {mode} ended without a reply (exit "
            f"{'unknown' if status is None else status})"
            + (f": {errors[-1][-300:]}" if errors else "")
        )


class _Upload:
    """One attempt at a sync over one connection: check, send and link, chunk after chunk.

    The remote programs start first, so their start-up overlaps the local hashing; while the
    lanes send the missing blobs of one chunk, the next chunk is hashed and checked.
    """

    def __init__(
        self,
        connection: SshConnection,
        session: RemoteSession,
        hasher: TreeHasher,
        remote_dest: str,
        lanes: int,
    ) -> None:
        self.connection = connection
        self.hasher = hasher
        self.remote_dest = remote_dest
        cache = session.cache_dir
        self.receive_command = session.helper_command("receive", cache, remote_dest)
        self.remote_name = session.remote.name
        self.plan = connection.channel(session.helper_command("plan", cache))
        self.replies = _JsonLines(self.plan, self.remote_name)
        self.max_lanes = max(1, lanes)
        self.lanes: list[_Lane] = []
        self._add_lane()  # one starts now; more when there is much to send
        self.dispatched: dict[str, LocalFile] = {}
        self.dispatched_bytes = 0
        self.wire = 0
        self.phases: dict[str, float] = {}

    def _send_line(self, obj: dict[str, Any]) -> None:
        payload = json.dumps(obj).encode() + b"\n"
        self.plan.sendall(payload)
        self.wire += len(payload)

    def _dispatch(self, chunk: list[LocalFile], missing: set[str], later: list[LocalFile]) -> None:
        by_digest: dict[str, list[LocalFile]] = {}
        for file in chunk:
            if file.digest in missing and file.digest not in self.dispatched:
                by_digest.setdefault(file.digest, []).append(file)
            else:
                later.append(file)  # already in the cache, or on its way there
        for digest, paths in by_digest.items():
            self.dispatched[digest] = paths[0]
            self.dispatched_bytes += paths[0].size
        while len(self.lanes) < self.max_lanes and self._worth_another_lane():
            self._add_lane()
        shares: list[list[tuple[LocalFile, list[LocalFile]]]] = [[] for _ in self.lanes]
        loads = [lane.load for lane in self.lanes]
        for paths in sorted(by_digest.values(), key=lambda group: -group[0].size):
            lightest = loads.index(min(loads))
            shares[lightest].append((paths[0], paths))
            loads[lightest] += paths[0].size + 256
        for lane, share in zip(self.lanes, shares, strict=True):
            if share:
                lane.put(share)

    def _add_lane(self) -> None:
        lane = _Lane(self.connection.channel(self.receive_command), self.remote_name)
        lane.thread.start()
        self.lanes.append(lane)

    def _worth_another_lane(self) -> bool:
        """Another lane pays off once there are many files or many bytes to send."""
        per_lane = len(self.lanes)
        return (
            len(self.dispatched) > LANE_FILES * per_lane
            or self.dispatched_bytes > LANE_BYTES * per_lane
        )

    def run(self) -> tuple[list[LocalFile], list[LocalFile], int]:
        """Returns (all files, files to build from the cache at the end, files linked by lanes)."""
        started = time.perf_counter()
        files: list[LocalFile] = []
        later: list[LocalFile] = []
        waiting: list[LocalFile] | None = None
        for chunk in self.hasher.chunks():
            files.extend(chunk)
            self._send_line({"blobs": {f.digest: f.size for f in chunk}})
            if waiting is not None:
                self._dispatch(waiting, self._missing(), later)
            waiting = chunk
        if waiting is not None:
            self._dispatch(waiting, self._missing(), later)
        self.phases["hash+check"] = time.perf_counter() - started
        for lane in self.lanes:
            lane.close()
        for lane in self.lanes:
            lane.thread.join()
        self.phases["send"] = time.perf_counter() - started - self.phases["hash+check"]
        return files, later, sum(int(lane.result["linked"]) for lane in self.lanes if lane.result)

    def _missing(self) -> set[str]:
        return set(self.replies.next("cache check")["missing"])

    def finish(self, files: list[LocalFile], later: list[LocalFile]) -> SyncReport:
        """Resend rejected blobs, build the rest of the tree from the cache, and report."""
        rejected: set[str] = set()
        verified_with = "nothing sent"
        for lane in self.lanes:
            if lane.error is not None:
                raise lane.error
            assert lane.result is not None
            self.wire += lane.bytes_written
            rejected.update(lane.result["rejected"])
            if lane.result.get("refused"):
                raise WatchkeeperError(f"the remote refused: {lane.result['refused'][0]}")
            if lane.sent:
                verified_with = str(lane.result["verified_with"])
        sent = [blob for lane in self.lanes for blob in lane.sent]
        changed = [blob for lane in self.lanes for blob in lane.changed]
        if changed:
            raise WatchkeeperError(
                f"{changed[0].path} changed while it was being sent; nothing stale was kept. "
                "Sync (or train) again once it is written."
            )
        if rejected:
            retry = _Lane(self.connection.channel(self.receive_command), self.remote_name)
            retry.thread.start()
            retry.put([(self.dispatched[digest], []) for digest in sorted(rejected)])
            retry.close()
            retry.thread.join()
            if retry.error is not None:
                raise retry.error
            assert retry.result is not None
            self.wire += retry.bytes_written
            sent.extend(retry.sent)
            if retry.result["rejected"]:
                raise WatchkeeperError(
                    f"the remote rejected {len(retry.result['rejected'])} blob(s) twice after "
                    "checking them; is its disk full? See `watchkeeper remote test`."
                )
            later.extend(f for f in files if f.digest in rejected)
        started = time.perf_counter()
        self._send_line(
            {
                "materialize": {
                    "dest": self.remote_dest,
                    "files": [[f.relative, f.digest, f.size, f.executable] for f in later],
                    "links": self.hasher.links,
                }
            }
        )
        linked = int(self.replies.next("build")["built"])
        self.phases["build"] = time.perf_counter() - started
        self.plan.shutdown_write()
        exit_status(self.plan)
        self.plan.close()
        return SyncReport(
            files=len(files),
            blobs=len({f.digest for f in files}),
            blobs_sent=len(sent),
            blob_bytes_sent=sum(blob.size for blob in sent),
            wire_bytes_sent=self.wire,
            seconds=0.0,
            verified_with=verified_with,
            files_linked=linked,
            phases=self.phases,
        )


def _upload(
    connection: SshConnection,
    session: RemoteSession,
    hasher: TreeHasher,
    remote_dest: str,
    lanes: int,
) -> SyncReport:
    upload = _Upload(connection, session, hasher, remote_dest, lanes)
    try:
        files, later, linked_by_lanes = upload.run()
        report = upload.finish(files, later)
    except BaseException:
        for lane in upload.lanes:
            lane.close()
            lane.channel.close()  # the remote receiver sees the end of its input and stops
        upload.plan.close()
        raise
    report.files_linked += linked_by_lanes
    return report


def sync_tree(
    session: RemoteSession,
    local_root: Path,
    remote_dest: str,
    *,
    lanes: int = DEFAULT_LANES,
    digest_cache: DigestCache | None = None,
    progress: Callable[[str], None] | None = None,
    exclude: frozenset[str] = frozenset(),
    chunk_files: int = 4000,
) -> SyncReport:
    """Make remote_dest hold local_root's files, sending only blobs the remote cache lacks.

    Safe to repeat after a broken upload: blobs already checked are kept, others re-sent.
    """
    started = time.perf_counter()
    hasher = TreeHasher(local_root, digest_cache, exclude, chunk_files=chunk_files)
    report = session.call(
        lambda connection: _upload(connection, session, hasher, remote_dest, lanes),
        what="uploading the run",
    )
    hasher.remember()
    report.seconds = time.perf_counter() - started
    if progress:
        progress(
            f"sent {report.blobs_sent} of {report.blobs} blobs "
            f"({report.blob_bytes_sent / 1e6:.1f} MB) in {report.seconds:.1f} s"
        )
    return report
