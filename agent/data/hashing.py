"""The one content-hashing engine: BLAKE3 file digests, the racy-timestamp rule, cached digests.

Data fingerprints, the remote upload and the artifact store all hash files here, and all keep
what they learnt in the one stat cache (`agent.data.stat_cache.StatCache`), so a file hashed by
one of them is not read again by another while its stat is unchanged.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import blake3

from agent.errors import WatchkeeperError

READ_CHUNK = 1 << 20
# Files at least this large are hashed with BLAKE3's own threads as well.
LARGE_FILE = 64 << 20
# A file below this size is read whole in one call (and its content may be kept for sending).
SMALL_FILE = 256 << 10
# A file from this size on is memory-mapped and hashed on BLAKE3's threads by hash_whole_file.
MAPPED_FILE = 4 << 20
# How often a file that keeps changing while it is read is read again before giving up.
MAX_READ_ATTEMPTS = 5
# A stat changed less than this long before the moment it was checked is "racy": a rewrite within
# the same timestamp tick leaves the stat unchanged, so it proves nothing about the content and
# the file is hashed again. Two seconds covers coarse clocks (FAT: 2 s, HFS+ and ext3: 1 s).
RACY_WINDOW_NS = 2_000_000_000
DIGEST_PREFIX = "blake3:"

StatKey = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns


def settled(
    mtime_ns: Any,
    ctime_ns: Any,
    checked_ns: Any,
    *,
    window_ns: int = RACY_WINDOW_NS,
    trust_ctime: bool = True,
) -> Any:
    """Whether a stat seen at `checked_ns` vouches for the content hashed then (git's racy rule).

    Works on numbers and on numpy arrays alike.

    >>> settled(10_000_000_000, 0, 13_000_000_000), settled(12_000_000_000, 0, 13_000_000_000)
    (True, False)
    >>> settled(0, 12_000_000_000, 13_000_000_000), settled(0, 12_000_000_000, 13_000_000_000,
    ...     trust_ctime=False)
    (False, True)
    """
    horizon = checked_ns - window_ns
    fresh = mtime_ns < horizon
    if trust_ctime:
        fresh = fresh & (ctime_ns < horizon)
    return fresh


def stat_key(info: os.stat_result) -> StatKey:
    """What identifies a file's content by its stat: device, inode, size, mtime and ctime."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class DigestCache(Protocol):
    """Digests by stat key, as `agent.data.stat_cache.StatCache` keeps them."""

    def cached_digests(self, keys: Sequence[StatKey]) -> Sequence[bytes | None]: ...

    def remember_digests(self, hashed: Sequence[tuple[StatKey, bytes]]) -> None: ...


def file_digest(path: str | Path, cache: DigestCache | None = None) -> str:
    """A file's BLAKE3 digest as 64 hex digits, from `cache` when its stat vouches for it.

    A digest computed here goes into the cache, for every other user of the cache.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> (folder / "empty").write_bytes(b"")
    0
    >>> file_digest(folder / "empty")
    'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262'
    """
    if cache is not None:
        try:
            info = os.stat(path)
        except OSError as error:
            raise read_error(path, error) from error
        known = cache.cached_digests([stat_key(info)])
        if known[0] is not None:
            return known[0].hex()
    digest, seen = hash_file(path)
    if cache is not None:
        cache.remember_digests([(stat_key(seen), digest)])
    return digest.hex()


def hash_small_file(path: str) -> tuple[bytes, bytes | None]:
    """The digest of a small file read in one call, and its content when it was read whole."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
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
    return hasher.digest(), whole


def hash_whole_file(path: str, size: int) -> bytes:
    """The digest of a file expected to be `size` bytes: memory-mapped on threads when large."""
    if size >= MAPPED_FILE:
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        hasher.update_mmap(path)
        return hasher.digest()
    with open(path, "rb") as handle:
        return blake3.blake3(handle.read()).digest()


class SkippedEntryError(WatchkeeperError):
    """A data file that cannot be part of a fingerprint: not a regular file, or unreadable."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}; fix it or remove it from the data")
        self.reason = reason


def file_type_name(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "not a regular file"


def read_chunk(descriptor: int, buffer: memoryview) -> int:
    """Read the next chunk of a file being hashed into `buffer`; the number of bytes read."""
    return os.readv(descriptor, [buffer])


_read_buffers = threading.local()


def _read_buffer() -> memoryview:
    buffer: memoryview | None = getattr(_read_buffers, "buffer", None)
    if buffer is None:
        buffer = memoryview(bytearray(READ_CHUNK))
        _read_buffers.buffer = buffer
    return buffer


def hash_file(path: str | Path) -> tuple[bytes, os.stat_result]:
    """BLAKE3 digest of a file and the stat it had while being read.

    The file is stat'ed before and after reading (by descriptor and by path); when anything
    differs, it changed while being read and is read again, up to MAX_READ_ATTEMPTS times.
    It is opened without blocking, so a pipe put in its place cannot hang the read. Raises
    SkippedEntryError when the file cannot be opened for lack of permission or is not a regular
    file, WatchkeeperError for other failures.
    """
    buffer = _read_buffer()
    for _attempt in range(MAX_READ_ATTEMPTS):
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EPERM):
                raise SkippedEntryError(path, f"unreadable ({error.strerror})") from error
            raise read_error(path, error) from error
        try:
            before = os.fstat(descriptor)
            if not stat.S_ISREG(before.st_mode):
                raise SkippedEntryError(path, file_type_name(before.st_mode))
            threads = blake3.blake3.AUTO if before.st_size >= LARGE_FILE else 1
            hasher = blake3.blake3(max_threads=threads)
            size_read = 0
            # Read no more than the size seen at the start, so a growing file cannot keep us.
            while size_read < before.st_size:
                wanted = min(len(buffer), before.st_size - size_read)
                count = read_chunk(descriptor, buffer[:wanted])
                if count == 0:
                    break
                hasher.update(buffer[:count])
                size_read += count
            grew = size_read == before.st_size and read_chunk(descriptor, buffer[:1]) > 0
            after = os.fstat(descriptor)
        except OSError as error:
            raise read_error(path, error) from error
        finally:
            os.close(descriptor)
        try:
            on_disk = os.stat(path)
        except OSError:
            continue  # replaced or removed while being read: look again
        unchanged = _same_stat(before, after) and _same_stat(before, on_disk)
        if unchanged and not grew and size_read == before.st_size:
            return hasher.digest(), before
    raise WatchkeeperError(
        f"{path}: kept changing while being read ({MAX_READ_ATTEMPTS} attempts); "
        "wait until whatever writes it has finished, then try again"
    )


def _same_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
    )


def read_error(path: str | Path, error: OSError) -> WatchkeeperError:
    # The walker names the entry relative to the root; opening names the absolute path.
    where = Path(path) / error.filename if isinstance(error.filename, str) else Path(path)
    reason = error.strerror or str(error)
    if error.errno in (errno.EACCES, errno.EPERM):
        return WatchkeeperError(f"{where}: cannot read data file: {reason}; fix its permissions")
    if error.errno == errno.ENOENT:
        return WatchkeeperError(f"{where}: removed while the data was being read; try again")
    return WatchkeeperError(f"{where}: cannot read data: {reason}")
