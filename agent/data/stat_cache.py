"""The stat cache, one SQLite file: each data root's last walk, and digests by inode for all."""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import numpy as np

from agent.data.hashing import RACY_WINDOW_NS, StatKey, settled
from agent.data.scan import ENTRY_DTYPE
from agent.paths import PRIVATE_FOLDER_MODE, WatchkeeperPaths

log = logging.getLogger(__name__)

DIGEST_SIZE = 32
CACHE_FILE_NAME = "hash-cache.db"
# Digests by inode not confirmed for this long are dropped.
KEEP_INODE_DIGESTS_NS = 30 * 86400 * 1_000_000_000
_LOOKUP_BATCH = 500
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS trees (root BLOB PRIMARY KEY, record BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS inode_digests (dev INTEGER, ino INTEGER, size INTEGER, "
    "mtime_ns INTEGER, ctime_ns INTEGER, digest BLOB, checked_ns INTEGER, "
    "PRIMARY KEY (dev, ino)) WITHOUT ROWID",
    # One row per store: its digests, 32 bytes each, one after another.
    "CREATE TABLE IF NOT EXISTS held_digests (store TEXT PRIMARY KEY, digests BLOB NOT NULL)",
)

_MAGIC = b"WKSC"
_FORMAT_VERSION = 2  # 2: entries carry the file mode
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
        fresh: np.ndarray = settled(
            self.entries["mtime_ns"],
            self.entries["ctime_ns"],
            self.written_at_ns,
            window_ns=window_ns,
            trust_ctime=trust_ctime,
        )
        return ~fresh

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

    Two kinds of memory share one SQLite file: per data root, the last walk with every entry's
    digest (read back as arrays, for fingerprints of large folders), and digests by (device,
    inode), which the remote upload, the artifact store and fingerprints all consult and feed, so
    a file reached through another path (a run folder's link to a data file) is hashed once.

    A digest is reused only when the file has the same device, inode, size, mtime_ns and
    ctime_ns as when it was hashed, and it was not changed within `racy_window_ns` of the moment
    it was checked (git's "racily clean" rule, `agent.data.hashing.settled`): a file rewritten
    within the same timestamp tick keeps its stat, so a recent stat proves nothing and the file
    is read again. `path=None` keeps everything in memory only. `trust_ctime=False` ignores
    ctime, as git's core.trustctime does, for file systems whose ctime changes without the
    content changing.

    Example::

        cache = StatCache.open(WatchkeeperPaths.from_environment())
        fingerprint(Path("data"), cache=cache).digest
    """

    path: Path | None
    trust_ctime: bool = True
    racy_window_ns: int = RACY_WINDOW_NS
    stats: CacheStats = field(default_factory=CacheStats)
    _trees: dict[bytes, CachedTree] = field(default_factory=dict, repr=False)
    _inodes: dict[tuple[int, int], tuple[int, int, int, bytes, int]] = field(
        default_factory=dict, repr=False
    )
    _db: sqlite3.Connection | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pruned: bool = field(default=False, repr=False)
    _held: dict[str, set[bytes]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, paths: WatchkeeperPaths) -> StatCache:
        """The cache in the Watchkeeper data folder (`<data dir>/hash-cache.db`)."""
        return cls(path=paths.data_dir / CACHE_FILE_NAME)

    @classmethod
    def in_memory(cls) -> StatCache:
        """A cache that lives as long as this object and writes nothing to disk."""
        return cls(path=None)

    def database(self) -> sqlite3.Connection | None:
        """The cache file's connection, opened (and made) on first use; None in memory.

        A file that is not a database (damaged) is removed and made anew: it is only a cache.
        """
        if self.path is None:
            return None
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
            try:
                self._db = _connect(self.path)
            except sqlite3.DatabaseError as error:
                log.warning(
                    "the hash cache %s is damaged (%s); starting it afresh", self.path, error
                )
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                self._db = _connect(self.path)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- whole trees (fingerprints) ---------------------------------------------------------
    def load(self, root: Path) -> CachedTree | None:
        """The last record of `root`; None when there is none or it cannot be trusted."""
        key = os.fsencode(root)
        with self._lock:
            db = self.database()
            if db is None:
                return self._trees.get(key)
            try:
                row = db.execute("SELECT record FROM trees WHERE root = ?", [key]).fetchone()
            except sqlite3.Error as error:
                log.warning("cannot read the hash cache %s: %s", self.path, error)
                return None
        return None if row is None else CachedTree.from_bytes(row[0])

    def save(self, root: Path, record: CachedTree) -> None:
        """Store the record of `root`, replacing the previous one in one transaction."""
        key = os.fsencode(root)
        with self._lock:
            db = self.database()
            if db is None:
                self._trees[key] = record
                return
            try:
                with db:
                    db.execute(
                        "INSERT OR REPLACE INTO trees VALUES (?, ?)", [key, record.to_bytes()]
                    )
            except sqlite3.Error as error:
                raise OSError(f"cannot write the hash cache {self.path}: {error}") from error

    # -- digests by inode (every user) ------------------------------------------------------
    def cached_digests(self, keys: Sequence[StatKey]) -> list[bytes | None]:
        """For each stat key, the digest remembered for it when the stat still vouches for it.

        A stat vouches when it is the one seen at hashing (ctime only when trusted) and it was
        settled then (see `agent.data.hashing.settled`). None where the file must be read.
        """
        rows = self._inode_rows({(dev, ino) for dev, ino, *_ in keys})
        found: list[bytes | None] = []
        for dev, ino, size, mtime_ns, ctime_ns in keys:
            row = rows.get((dev, ino))
            usable = (
                row is not None
                and row[0] == size
                and row[1] == mtime_ns
                and (row[2] == ctime_ns or not self.trust_ctime)
                and bool(
                    settled(
                        row[1],
                        row[2],
                        row[4],
                        window_ns=self.racy_window_ns,
                        trust_ctime=self.trust_ctime,
                    )
                )
            )
            found.append(row[3] if usable and row is not None else None)
        hits = sum(digest is not None for digest in found)
        self.stats.hits += hits
        return found

    def remember_digests(
        self, hashed: Sequence[tuple[StatKey, bytes]], checked_ns: int | None = None
    ) -> None:
        """Remember digests computed from files whose stat was `key` at `checked_ns` (a time
        taken before they were read; now when not given)."""
        if not hashed:
            return
        checked = now_ns() if checked_ns is None else checked_ns
        self._store_rows(
            [
                (_signed(dev), _signed(ino), size, mtime, ctime, digest, checked)
                for (dev, ino, size, mtime, ctime), digest in hashed
            ]
        )

    def remember_written_digests(self, written: Sequence[tuple[StatKey, bytes]]) -> None:
        """Remember digests of files this process has just written and hashed itself, in a
        private folder nobody else writes to (a reproduction's worktree), or whose times it has
        just set when this cache vouched for their stat right before (a blob claimed in the
        artifact store, which nothing writes in place: its content is what was vouched for).

        The racy rule guards against a writer that changes a file after it was hashed without
        changing its stat; here no other writer exists, so each digest is stored as settled
        (as if checked a racy window after the file's last change) and vouches for the file
        as long as its stat stays the same. The key must be the stat taken after the last
        change (the rename into place included).
        """
        window = self.racy_window_ns + 1
        self._store_rows(
            [
                (_signed(dev), _signed(ino), size, mtime, ctime, digest, max(mtime, ctime) + window)
                for (dev, ino, size, mtime, ctime), digest in written
            ]
        )

    def _store_rows(self, rows: list[tuple[int, int, int, int, int, bytes, int]]) -> None:
        if not rows:
            return
        with self._lock:
            db = self.database()
            if db is None:
                for row in rows:
                    self._inodes[(row[0], row[1])] = (row[2], row[3], row[4], row[5], row[6])
                return
            try:
                with db:
                    if not self._pruned:
                        db.execute(
                            "DELETE FROM inode_digests WHERE checked_ns < ?",
                            [now_ns() - KEEP_INODE_DIGESTS_NS],
                        )
                        self._pruned = True
                    db.executemany(
                        "INSERT OR REPLACE INTO inode_digests VALUES (?,?,?,?,?,?,?)", sorted(rows)
                    )
            except sqlite3.Error as error:
                log.warning("cannot write the hash cache %s: %s", self.path, error)

    def _inode_rows(
        self, wanted: set[tuple[int, int]]
    ) -> dict[tuple[int, int], tuple[int, int, int, bytes, int]]:
        keys = {(_signed(dev), _signed(ino)): (dev, ino) for dev, ino in wanted}
        with self._lock:
            db = self.database()
            if db is None:
                return {keys[k]: self._inodes[k] for k in keys if k in self._inodes}
            if len(keys) > _LOOKUP_BATCH * 4:
                return self._inode_rows_joined(db, keys)
            by_device: dict[int, list[int]] = {}
            for dev, ino in keys:
                by_device.setdefault(dev, []).append(ino)
            found: dict[tuple[int, int], tuple[int, int, int, bytes, int]] = {}
            try:
                for dev, inodes in by_device.items():
                    for start in range(0, len(inodes), _LOOKUP_BATCH):
                        batch = inodes[start : start + _LOOKUP_BATCH]
                        marks = ",".join("?" * len(batch))
                        for ino, *rest in db.execute(
                            "SELECT ino, size, mtime_ns, ctime_ns, digest, checked_ns FROM "
                            f"inode_digests WHERE dev = ? AND ino IN ({marks})",
                            [dev, *batch],
                        ):
                            found[keys[(dev, ino)]] = (rest[0], rest[1], rest[2], rest[3], rest[4])
            except sqlite3.Error as error:
                log.warning("cannot read the hash cache %s: %s", self.path, error)
            return found

    def _inode_rows_joined(
        self, db: sqlite3.Connection, keys: dict[tuple[int, int], tuple[int, int]]
    ) -> dict[tuple[int, int], tuple[int, int, int, bytes, int]]:
        """Many lookups at once: the wanted keys go into a temporary table joined in SQLite."""
        found: dict[tuple[int, int], tuple[int, int, int, bytes, int]] = {}
        try:
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS wanted_inodes (dev INTEGER, ino INTEGER, "
                "PRIMARY KEY (dev, ino)) WITHOUT ROWID"
            )
            with db:
                db.execute("DELETE FROM wanted_inodes")
                db.executemany("INSERT OR IGNORE INTO wanted_inodes VALUES (?, ?)", sorted(keys))
            for row in db.execute(
                "SELECT d.dev, d.ino, d.size, d.mtime_ns, d.ctime_ns, d.digest, d.checked_ns "
                "FROM wanted_inodes w JOIN inode_digests d ON d.dev = w.dev AND d.ino = w.ino"
            ):
                found[keys[(row[0], row[1])]] = row[2:]
        except sqlite3.Error as error:
            log.warning("cannot read the hash cache %s: %s", self.path, error)
        return found

    # -- what content stores elsewhere hold (the remote upload caches) -----------------------
    def held_digests(self, store: str) -> set[bytes]:
        """The digests `store` (a remote's upload cache) was last seen to hold; empty when
        nothing is recorded. A record may be out of date: its user checks before relying on it.
        """
        with self._lock:
            db = self.database()
            if db is None:
                return set(self._held.get(store, ()))
            try:
                row = db.execute(
                    "SELECT digests FROM held_digests WHERE store = ?", [store]
                ).fetchone()
            except sqlite3.Error as error:
                log.warning("cannot read the hash cache %s: %s", self.path, error)
                return set()
        if row is None:
            return set()
        return _unpack_digests(bytes(row[0]))

    def add_held_digests(self, store: str, digests: set[bytes], known: set[bytes]) -> None:
        """Record that `store` holds `digests` (`known` is what held_digests gave)."""
        new = digests - known
        with self._lock:
            db = self.database()
            if db is None:
                self._held.setdefault(store, set()).update(new)
                return
            if not new:
                return
            try:
                with db:
                    row = db.execute(
                        "SELECT digests FROM held_digests WHERE store = ?", [store]
                    ).fetchone()
                    before = bytes(row[0]) if row is not None else b""
                    if len(before) != len(known) * DIGEST_SIZE:  # another writer came between
                        new -= _unpack_digests(before)
                    db.execute(
                        "INSERT OR REPLACE INTO held_digests VALUES (?, ?)",
                        [store, before + b"".join(sorted(new))],
                    )
            except sqlite3.Error as error:
                log.warning("cannot write the hash cache %s: %s", self.path, error)

    def forget_held_digests(self, store: str) -> None:
        """Drop the record of `store`, whose next upload then asks it what it holds."""
        with self._lock:
            db = self.database()
            if db is None:
                self._held.pop(store, None)
                return
            try:
                with db:
                    db.execute("DELETE FROM held_digests WHERE store = ?", [store])
            except sqlite3.Error as error:
                log.warning("cannot write the hash cache %s: %s", self.path, error)


def _unpack_digests(packed: bytes) -> set[bytes]:
    return {packed[i : i + DIGEST_SIZE] for i in range(0, len(packed), DIGEST_SIZE)}


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for statement in _SCHEMA:
        db.execute(statement)
    return db


def _signed(value: int) -> int:
    """An unsigned 64-bit device or inode number as SQLite's signed integer."""
    return value - (1 << 64) if value >= 1 << 63 else value


def now_ns() -> int:
    """The wall-clock time used to stamp records."""
    return time.time_ns()
