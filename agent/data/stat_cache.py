"""The stat cache: per data root, the last walk with each file's digest, in one binary file."""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import numpy as np

from agent.data.scan import ENTRY_DTYPE
from agent.paths import WatchkeeperPaths

DIGEST_SIZE = 32
# Entries changed less than this long before the cache was written are "racy": a rewrite within
# the same timestamp tick leaves their stat unchanged, so they are hashed again on the next check.
# Two seconds covers coarse file-system clocks (FAT: 2 s, HFS+ and ext3: 1 s, kernel ticks).
RACY_WINDOW_NS = 2_000_000_000

_MAGIC = b"WKSC"
_FORMAT_VERSION = 1
# magic, version, entry count, written_at_ns, blob length, root digest, body checksum
_HEADER = struct.Struct("<4sIQqQ32s32s")


@dataclass
class CachedTree:
    """What the last check of one root saw: its walk, each entry's digest and the root digest.

    `entries` rows hold the stat observed while the file was hashed (see scan.ENTRY_DTYPE).
    `written_at_ns` is the wall-clock time the record was made, after all hashing finished.
    """

    blob: bytes
    entries: np.ndarray
    digests: np.ndarray  # (n, 32) uint8
    root_digest: bytes
    written_at_ns: int

    def racy_mask(self, trust_ctime: bool, window_ns: int = RACY_WINDOW_NS) -> np.ndarray:
        """Entries whose stat is too recent to prove that their content is what was hashed."""
        horizon = self.written_at_ns - window_ns
        racy: np.ndarray = self.entries["mtime_ns"] >= horizon
        if trust_ctime:
            racy |= self.entries["ctime_ns"] >= horizon
        return racy

    def to_bytes(self) -> bytes:
        body = self.entries.tobytes() + np.ascontiguousarray(self.digests).tobytes() + self.blob
        header = _HEADER.pack(
            _MAGIC,
            _FORMAT_VERSION,
            len(self.entries),
            self.written_at_ns,
            len(self.blob),
            self.root_digest,
            blake3.blake3(body).digest(),
        )
        return header + body

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedTree | None:
        """Parse a record; None when it is truncated, from another version or corrupt."""
        if len(data) < _HEADER.size:
            return None
        magic, version, count, written_at_ns, blob_length, root_digest, checksum = (
            _HEADER.unpack_from(data)
        )
        entries_size = count * ENTRY_DTYPE.itemsize
        digests_size = count * DIGEST_SIZE
        expected = _HEADER.size + entries_size + digests_size + blob_length
        if magic != _MAGIC or version != _FORMAT_VERSION or len(data) != expected:
            return None
        body = memoryview(data)[_HEADER.size :]
        if blake3.blake3(body).digest() != checksum:
            return None
        entries = np.frombuffer(body, dtype=ENTRY_DTYPE, count=count)
        digests = np.frombuffer(body, dtype=np.uint8, count=digests_size, offset=entries_size)
        blob = bytes(body[entries_size + digests_size :])
        return cls(
            blob=blob,
            entries=entries,
            digests=digests.reshape(count, DIGEST_SIZE),
            root_digest=root_digest,
            written_at_ns=written_at_ns,
        )


@dataclass
class CacheStats:
    """Counters of one StatCache: entries answered from the cache and files actually read."""

    hits: int = 0
    misses: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0


@dataclass
class StatCache:
    """Remembers file digests by stat, so that unchanged files are never read again.

    An entry is reused only when the file has the same path, device, inode, size, mtime_ns and
    ctime_ns as when it was hashed, and it was not changed within `racy_window_ns` of the moment
    the record was written (git's "racily clean" rule: a file rewritten within the same timestamp
    tick keeps its stat, so a recent stat proves nothing and the file is read again).
    `directory=None` keeps records in memory only. `trust_ctime=False` ignores ctime, as git's
    core.trustctime does, for file systems whose ctime changes without the content changing.

    Example::

        cache = StatCache.open(WatchkeeperPaths.from_environment())
        fingerprint(Path("data"), cache=cache).digest
    """

    directory: Path | None
    trust_ctime: bool = True
    racy_window_ns: int = RACY_WINDOW_NS
    stats: CacheStats = field(default_factory=CacheStats)
    _memory: dict[str, CachedTree] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, paths: WatchkeeperPaths) -> StatCache:
        """The cache in the Watchkeeper data folder (`<data dir>/stat-cache/`)."""
        return cls(directory=paths.data_dir / "stat-cache")

    @classmethod
    def in_memory(cls) -> StatCache:
        """A cache that lives as long as this object and writes nothing to disk."""
        return cls(directory=None)

    def record_file(self, root: Path) -> Path | None:
        """The file holding the record of `root`, or None for an in-memory cache."""
        if self.directory is None:
            return None
        key = blake3.blake3(os.fsencode(root)).hexdigest(length=16)
        return self.directory / f"{key}.bin"

    def load(self, root: Path) -> CachedTree | None:
        """The last record of `root`; None when there is none or it cannot be trusted."""
        record_file = self.record_file(root)
        if record_file is None:
            return self._memory.get(str(root))
        try:
            data = record_file.read_bytes()
        except OSError:
            return None
        return CachedTree.from_bytes(data)

    def save(self, root: Path, record: CachedTree) -> None:
        """Store the record of `root`, atomically replacing the previous one."""
        record_file = self.record_file(root)
        if record_file is None:
            self._memory[str(root)] = record
            return
        record_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor, temporary = tempfile.mkstemp(dir=record_file.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(record.to_bytes())
            os.replace(temporary, record_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def now_ns() -> int:
    """The wall-clock time used to stamp records."""
    return time.time_ns()
