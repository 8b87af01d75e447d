"""The tree a sync sends: every file below a folder with its digest, hashed in chunks.

The walk is agent.data's; digests come from agent.data's hashing and its stat cache, so a file
fingerprinted as data (or sent before) is not read again while its stat vouches for it.
"""

from __future__ import annotations

import os
import posixpath
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agent.data.hashing import (
    RACY_WINDOW_NS,
    SMALL_FILE,
    StatKey,
    hash_small_file,
    hash_whole_file,
    settled,
    stat_key,
)
from agent.data.scan import (
    KIND_FILE,
    KIND_SYMLINK,
    KIND_UNREADABLE,
    FolderScan,
    entry_stat_key,
    scan_folder,
)
from agent.data.stat_cache import StatCache
from agent.errors import WatchkeeperError

KEEP_CONTENT = 64 << 10  # small files are kept in memory from hashing to sending
KEEP_BUDGET = 256 << 20  # at most this much content is kept per sync


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
    stamp: StatKey | None = field(default=None, compare=False)
    settled: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class TreeEntry:
    """A regular file found by the walk (through links when they lead out of the tree)."""

    relative: str
    path: str
    stamp: StatKey
    executable: bool


def internal_link_target(relative: str, target: str) -> bool:
    """Whether a symlink at `relative` with this target text stays inside the tree.

    >>> internal_link_target("code/data/x", "../../data/x"), internal_link_target("a", "../b")
    (True, False)
    """
    if not target or target.startswith("/"):
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relative), target))
    return resolved not in (".", "..") and not resolved.startswith("../")


def walk_tree(
    root: Path, exclude: frozenset[str] = frozenset(), links: list[tuple[str, str]] | None = None
) -> list[TreeEntry]:
    """Every regular file below root, in walk order.

    Symlinks whose relative target stays inside the tree are kept as links (appended to
    `links` as (relative, target)) when a list is given; other symlinks are followed, with
    loops refused. Top-level names in `exclude` are left out; other special files are skipped.
    """
    if root.is_file():
        info = root.stat()
        return [TreeEntry(root.name, str(root), stat_key(info), bool(info.st_mode & 0o111))]
    found: list[TreeEntry] = []
    real_root = os.path.realpath(root)
    skip = {os.fsencode(name) for name in exclude}
    _walk_into(os.fsencode(root), b"", skip, frozenset({real_root}), links, found)
    return found


def _walk_into(
    folder: bytes,
    prefix: bytes,
    skip: set[bytes],
    followed: frozenset[str],
    links: list[tuple[str, str]] | None,
    found: list[TreeEntry],
) -> None:
    try:
        scan = scan_folder(folder, prefix=prefix, skip=skip)
    except OSError as error:
        where = os.fsdecode(folder)
        raise WatchkeeperError(f"{where}: cannot be read ({error.strerror}).") from error
    entries = scan.entries
    if len(entries) and (entries["kind"] == KIND_FILE).all():
        _add_files(scan, folder, prefix, found)
        return
    text_folder = os.fsdecode(folder)
    cut = len(os.fsdecode(prefix))
    for row, relative in enumerate(scan.paths()):
        entry = entries[row]
        kind = int(entry["kind"])
        path = text_folder + "/" + relative[cut:]
        if kind == KIND_FILE:
            executable = bool(entry["mode"] & 0o111)
            found.append(TreeEntry(relative, path, entry_stat_key(entry), executable))
        elif kind == KIND_UNREADABLE:
            reason = os.strerror(int(entry["size"]))
            raise WatchkeeperError(f"{path}: cannot be read ({reason}).")
        elif kind == KIND_SYMLINK:
            _follow_link(relative, path, followed, links, found)


def _add_files(scan: FolderScan, folder: bytes, prefix: bytes, found: list[TreeEntry]) -> None:
    """The fast path: a folder of regular files only."""
    text_folder = os.fsdecode(folder)
    cut = len(os.fsdecode(prefix))
    entries = scan.entries
    columns = zip(
        scan.paths(),
        entries["dev"].tolist(),
        entries["ino"].tolist(),
        entries["size"].tolist(),
        entries["mtime_ns"].tolist(),
        entries["ctime_ns"].tolist(),
        entries["mode"].tolist(),
        strict=True,
    )
    for relative, dev, ino, size, mtime, ctime, mode in columns:
        path = text_folder + "/" + relative[cut:]
        found.append(TreeEntry(relative, path, (dev, ino, size, mtime, ctime), bool(mode & 0o111)))


def _follow_link(
    relative: str,
    path: str,
    followed: frozenset[str],
    links: list[tuple[str, str]] | None,
    found: list[TreeEntry],
) -> None:
    target = os.readlink(path)
    if links is not None and internal_link_target(relative, target):
        links.append((relative, target))
        return
    try:
        info = os.stat(path)
    except OSError as error:
        raise WatchkeeperError(f"{path}: cannot be read ({error.strerror}).") from error
    if stat.S_ISREG(info.st_mode):
        found.append(TreeEntry(relative, path, stat_key(info), bool(info.st_mode & 0o111)))
    elif stat.S_ISDIR(info.st_mode):
        real = os.path.realpath(path)
        parent = os.path.realpath(os.path.dirname(path))
        if real in followed or parent == real or parent.startswith(real.rstrip("/") + "/"):
            raise WatchkeeperError(f"{path}: symlink loop; fix or remove it.")
        _walk_into(
            os.fsencode(real),
            os.fsencode(relative + "/"),
            set(),
            followed | {real},
            links,
            found,
        )


def _hash_all(items: list[tuple[str, int]], keep: dict[str, bytes] | None = None) -> list[bytes]:
    """Digests in order: large files on a thread pool while small ones are read right here.

    Small files are cheaper to read one after another than to hand to threads. The content of
    files up to KEEP_CONTENT bytes is put in `keep`, so that it is sent without a second read.
    """
    results: list[bytes] = [b""] * len(items)
    large = [i for i, (_, size) in enumerate(items) if size >= SMALL_FILE]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {i: pool.submit(hash_whole_file, items[i][0], items[i][1]) for i in large}
        for index, (path, size) in enumerate(items):
            if size < SMALL_FILE:
                try:
                    results[index], data = hash_small_file(path)
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


class TreeHasher:
    """Digests of a folder's files, produced in chunks so that sending can start early.

    Digests are taken from the stat cache for files whose stat vouches for them (see
    `agent.data.hashing.settled`); iterating again replays the chunks already made.
    """

    def __init__(
        self,
        root: Path,
        cache: StatCache | None = None,
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
        self._fresh: list[tuple[StatKey, bytes]] = []
        self._started_ns = 0
        self.links: list[tuple[str, str]] = []
        self.kept_bytes = 0

    @property
    def racy_window_ns(self) -> int:
        return self.cache.racy_window_ns if self.cache is not None else RACY_WINDOW_NS

    def chunks(self) -> Iterator[list[LocalFile]]:
        yield from self.done
        if self.finished:
            return
        self.links = []
        self._started_ns = time.time_ns()
        entries = walk_tree(self.root, self.exclude, self.links)
        skip = sum(len(chunk) for chunk in self.done)
        batch: list[TreeEntry] = []
        batch_bytes = 0
        for entry in entries[skip:]:
            batch.append(entry)
            batch_bytes += entry.stamp[2]
            if len(batch) >= self.chunk_files or batch_bytes >= self.chunk_bytes:
                self.done.append(self._digest(batch))
                yield self.done[-1]
                batch, batch_bytes = [], 0
        if batch:
            self.done.append(self._digest(batch))
            yield self.done[-1]
        self.finished = True

    def _digest(self, batch: list[TreeEntry]) -> list[LocalFile]:
        started_ns = self._started_ns
        known = (
            self.cache.cached_digests([entry.stamp for entry in batch])
            if self.cache is not None
            else [None] * len(batch)
        )
        digests: dict[str, bytes] = {}
        stamps: dict[str, StatKey] = {}
        to_hash: list[TreeEntry] = []
        for entry, digest in zip(batch, known, strict=True):
            if digest is not None:
                digests[entry.path] = digest
                stamps[entry.path] = entry.stamp
            else:
                to_hash.append(entry)
        keep: dict[str, bytes] | None = {} if self.kept_bytes < KEEP_BUDGET else None
        hashed = _hash_all([(entry.path, entry.stamp[2]) for entry in to_hash], keep)
        for entry, digest in zip(to_hash, hashed, strict=True):
            stamp = entry.stamp
            # A file read whole in one go is sent from that read: no need to look again.
            if keep is None or entry.path not in keep:
                after = stat_key(os.stat(entry.path))
                if (after[2], after[3]) != (stamp[2], stamp[3]):
                    digest = hash_whole_file(entry.path, after[2])  # changed while we read it
                    stamp = after
                    if keep is not None:
                        keep.pop(entry.path, None)
            digests[entry.path] = digest
            stamps[entry.path] = stamp
            self._fresh.append((stamp, digest))
        kept = keep or {}
        self.kept_bytes += sum(len(data) for data in kept.values())
        window = self.racy_window_ns
        return [
            LocalFile(
                relative=entry.relative,
                path=entry.path,
                size=stamps[entry.path][2],
                executable=entry.executable,
                digest=digests[entry.path].hex(),
                content=kept.get(entry.path),
                stamp=stamps[entry.path],
                settled=bool(
                    settled(
                        stamps[entry.path][3],
                        stamps[entry.path][4],
                        started_ns,
                        window_ns=window,
                    )
                ),
            )
            for entry in batch
        ]

    def remember(self) -> None:
        """Store the digests computed now in the stat cache."""
        if self.cache is not None and self._fresh:
            self.cache.remember_digests(self._fresh, checked_ns=self._started_ns)
            self._fresh = []

    def all_files(self) -> list[LocalFile]:
        return [file for chunk in self.chunks() for file in chunk]


def hash_tree(
    root: Path, cache: StatCache | None = None, exclude: frozenset[str] = frozenset()
) -> list[LocalFile]:
    """Digest every file below root, reusing cached digests of files that did not change."""
    hasher = TreeHasher(root, cache, exclude)
    files = hasher.all_files()
    hasher.remember()
    return files
