"""Content fingerprints of data files and folders: BLAKE3 digests, a stat cache, parallel reads."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3
import numpy as np

from agent.data.hashing import (
    SkippedEntryError,
    file_type_name,
    hash_file,
    read_error,
)
from agent.data.scan import (
    KIND_FILE,
    KIND_OTHER,
    KIND_SYMLINK,
    KIND_UNREADABLE,
    FolderScan,
    entry_stat_key,
    scan_folder,
)
from agent.data.scan import single_file_scan as _single_file_scan
from agent.data.stat_cache import DIGEST_SIZE, CachedTree, StatCache, now_ns
from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths

__all__ = [
    "DataFingerprint",
    "FileEntry",
    "Manifest",
    "SkippedEntry",
    "StatCache",
    "fingerprint",
    "hash_file",
]

log = logging.getLogger(__name__)

_HASH_WORKERS = max(1, min(8, os.cpu_count() or 1))
PARALLEL_BYTES_PER_WORKER = 8 << 20
_CACHE_KEY_FIELDS = ("dev", "ino", "size", "mtime_ns", "kind")

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a data source: its path relative to the source root, size, mtime and digest."""

    path: str
    size: int
    mtime_ns: int
    digest: str


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """An entry of a data folder left out of its fingerprint, and why (a pipe, a bad link...).

    >>> SkippedEntry("raw/pipe", "named pipe (FIFO)").describe()
    'raw/pipe: named pipe (FIFO)'
    """

    path: str
    reason: str

    def describe(self) -> str:
        return f"{self.path}: {self.reason}"

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


class Manifest(Mapping[str, FileEntry]):
    """The files of a fingerprint by relative path, built lazily from the compact walk arrays.

    Behaves as a read-only dict of FileEntry; the entries of a 100,000-file folder are only
    made into Python objects when someone asks for them.
    """

    def __init__(self, scan: FolderScan, digests: np.ndarray) -> None:
        self._scan = scan
        self._digests = digests
        self._index: dict[str, int] | None = None

    def _paths_index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {path: i for i, path in enumerate(self._scan.paths())}
        return self._index

    def __len__(self) -> int:
        return len(self._scan.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths_index())

    def __contains__(self, path: object) -> bool:
        return path in self._paths_index()

    def __getitem__(self, path: str) -> FileEntry:
        row = self._paths_index()[path]
        entry = self._scan.entries[row]
        return FileEntry(
            path=path,
            size=int(entry["size"]),
            mtime_ns=int(entry["mtime_ns"]),
            digest=self._digests[row].tobytes().hex(),
        )

    @property
    def total_bytes(self) -> int:
        return int(self._scan.entries["size"].sum())


@dataclass(frozen=True)
class DataFingerprint:
    """The fingerprint of a data source (a file or a folder).

    `digest` is the file's BLAKE3 digest for a single file, and for a folder the BLAKE3 digest of
    its manifest: for every file in sorted path order, the UTF-8 relative path, a NUL byte and the
    file's 32-byte digest. `files` maps relative paths (the file name for a single file) to
    entries. `skipped` lists the entries of a folder that are not part of the fingerprint (pipes,
    sockets, devices, dangling links, links leading outside, unreadable entries), in path order;
    they do not change `digest`.
    """

    root: Path
    digest: str
    files: Mapping[str, FileEntry]
    kind: str = "folder"
    skipped: tuple[SkippedEntry, ...] = ()

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        if isinstance(self.files, Manifest):
            return self.files.total_bytes
        return sum(entry.size for entry in self.files.values())


def manifest_digest(entries: list[tuple[str, str]]) -> str:
    """The digest of a folder from (relative path, hex digest) pairs, in any order."""
    hasher = blake3.blake3()
    for path, digest in sorted(entries, key=lambda item: item[0].split("/")):
        hasher.update(os.fsencode(path) + b"\0" + bytes.fromhex(digest))
    return hasher.hexdigest()


def fingerprint(
    path: Path,
    *,
    cache: StatCache | None = None,
    on_progress: ProgressCallback | None = None,
) -> DataFingerprint:
    """Fingerprint a data file or folder, reading only files whose stat changed since last time.

    `cache` defaults to the stat cache in the Watchkeeper data folder. `on_progress` is called
    with (bytes hashed so far, bytes to hash) while files are read. Entries of a folder that are
    not data (pipes, sockets, devices, dangling links, links leading outside the folder) or that
    cannot be read are left out and listed in `skipped`; a pipe is never opened.

    Example::

        fp = fingerprint(Path("data"))
        fp.digest[:12], fp.n_files  # ('5f1c0e2a9b7d', 2000)
    """
    root = resolve_data_path(path)
    if cache is None:
        cache = StatCache.open(WatchkeeperPaths.from_environment())
    try:
        root_stat = os.stat(root)
    except OSError as error:
        raise read_error(root, error) from error
    if stat.S_ISDIR(root_stat.st_mode):
        kind = "folder"
        try:
            scan = scan_folder(os.fsencode(root))
        except OSError as error:
            raise read_error(root, error) from error
    elif stat.S_ISREG(root_stat.st_mode):
        kind = "file"
        scan = _single_file_scan(root.name, root_stat)
    else:
        raise WatchkeeperError(f"{root}: not a regular file or folder; point to the data itself")
    skipped = _entries_to_skip(root, kind, scan)
    scan = _without(scan, skipped)
    link_digests = _resolve_links(root, kind, scan)
    record = cache.load(root)
    digests, known = _reuse_cached_digests(scan, record, cache)
    for row, digest in link_digests.items():
        digests[row] = np.frombuffer(digest, dtype=np.uint8)
        known[row] = True
    to_hash = np.flatnonzero(~known)
    cache.stats.hits += int(known.sum()) - len(link_digests)
    to_hash = _reuse_inode_digests(scan, to_hash, digests, cache)
    cache.stats.misses += len(to_hash)
    if (
        len(to_hash) == 0
        and record is not None
        and record.blob == scan.blob
        and np.array_equal(record.digests, digests)
    ):
        root_digest = record.root_digest
    else:
        started_ns = now_ns()
        unreadable = _hash_entries(root, kind, scan, to_hash, digests, cache, on_progress)
        hashed = [int(row) for row in to_hash if int(row) not in unreadable]
        cache.remember_digests(
            [(entry_stat_key(scan.entries[row]), digests[row].tobytes()) for row in hashed],
            checked_ns=started_ns,
        )
        if unreadable:
            skipped.update(unreadable)
            keep = np.ones(len(scan.entries), dtype=bool)
            keep[list(unreadable)] = False
            scan, digests = scan.select(keep), digests[keep]
        root_digest = _root_digest(kind, scan, digests)
        try:
            cache.save(root, CachedTree(scan.blob, scan.entries, digests, root_digest, now_ns()))
        except OSError as error:
            log.warning("could not write the stat cache for %s: %s", root, error)
    return DataFingerprint(
        root=root,
        digest=root_digest.hex(),
        files=Manifest(scan, digests),
        kind=kind,
        skipped=tuple(sorted(skipped.values(), key=lambda entry: entry.path.split("/"))),
    )


def resolve_data_path(path: Path) -> Path:
    """The absolute, symlink-free path of a data source, with a clear error when it is missing."""
    try:
        return Path(path).expanduser().resolve(strict=True)
    except FileNotFoundError as error:
        raise WatchkeeperError(f"{path}: no such file or folder; check the data path") from error
    except (RuntimeError, OSError) as error:
        if isinstance(error, RuntimeError) or error.errno == errno.ELOOP:
            raise WatchkeeperError(f"{path}: symlink loop; fix or remove the link") from error
        raise WatchkeeperError(f"{path}: cannot open: {error.strerror}") from error


def _entries_to_skip(root: Path, kind: str, scan: FolderScan) -> dict[int, SkippedEntry]:
    """The rows of a folder scan that are not data, by row, each with the reason.

    Unreadable entries, pipes, sockets and devices, and links that dangle, loop, lead outside the
    root or lead to something that is neither a file nor a folder. Nothing here opens a file.
    """
    if kind != "folder":
        return {}
    entries = scan.entries
    special = np.flatnonzero(entries["kind"] != KIND_FILE)
    if len(special) == 0:
        return {}
    paths = scan.paths()
    skipped: dict[int, SkippedEntry] = {}
    for row in special:
        relative = paths[row]
        entry_kind = entries["kind"][row]
        if entry_kind == KIND_UNREADABLE:
            reason = f"unreadable ({os.strerror(int(entries['size'][row]))})"
        elif entry_kind == KIND_SYMLINK:
            reason = _bad_link_reason(root, root / relative) or ""
        else:
            reason = _special_file_reason(root / relative)
        if reason:
            skipped[int(row)] = SkippedEntry(relative, reason)
    return skipped


def _special_file_reason(path: Path) -> str:
    """Why an entry that is neither a file, a folder nor a link is not data (lstat only)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as error:
        return f"unreadable ({error.strerror})"
    return file_type_name(mode)


def _bad_link_reason(root: Path, link: Path) -> str | None:
    """Why a link is not data, or None when it leads to a file or folder inside the root."""
    try:
        target = Path(os.path.realpath(link, strict=True))
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symlink loop"
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return "dangling symlink (its target is missing)"
        return f"unreadable symlink ({error.strerror})"
    if not target.is_relative_to(root):
        return f"symlink leading outside the data folder (to {target})"
    try:
        mode = os.stat(target).st_mode
    except OSError as error:
        return f"unreadable symlink target ({error.strerror})"
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    return f"symlink to a {file_type_name(mode)}"


def _without(scan: FolderScan, skipped: dict[int, SkippedEntry]) -> FolderScan:
    if not skipped:
        return scan
    keep = np.ones(len(scan.entries), dtype=bool)
    keep[list(skipped)] = False
    return scan.select(keep)


def _resolve_links(root: Path, kind: str, scan: FolderScan) -> dict[int, bytes]:
    """Give the links of a scan (all leading to a file or folder inside the root) their stat.

    A link to a file inside the root is hashed as that file (its row takes the target's stat).
    A link to a folder inside the root is recorded by its target path, not followed (its files
    are already in the manifest under their own paths). Returns {row: digest} for the folder
    links. A link changed since it was checked gives a clear error.
    """
    entries = scan.entries
    special = np.flatnonzero(entries["kind"] != KIND_FILE)
    if len(special) == 0:
        return {}
    paths = scan.paths()
    link_digests: dict[int, bytes] = {}
    for row in special:
        relative = paths[row]
        absolute = root / relative if kind == "folder" else root
        if entries["kind"][row] == KIND_OTHER:
            raise WatchkeeperError(
                f"{absolute}: not a regular file (a pipe, socket or device); "
                "remove it from the data folder"
            )
        target = _link_target(root, absolute)
        try:
            target_stat = os.stat(target)
        except OSError as error:
            raise read_error(target, error) from error
        if stat.S_ISDIR(target_stat.st_mode):
            entries["size"][row] = 0
            target_relative = target.relative_to(root).as_posix()
            link_digests[int(row)] = blake3.blake3(
                b"symlink\0" + os.fsencode(target_relative)
            ).digest()
        elif stat.S_ISREG(target_stat.st_mode):
            entries["dev"][row] = target_stat.st_dev
            entries["ino"][row] = target_stat.st_ino
            entries["size"][row] = target_stat.st_size
            entries["mtime_ns"][row] = target_stat.st_mtime_ns
            entries["ctime_ns"][row] = target_stat.st_ctime_ns
        else:
            raise WatchkeeperError(f"{absolute}: links to something that is not a regular file")
    return link_digests


def _link_target(root: Path, link: Path) -> Path:
    reason = _bad_link_reason(root, link)
    if reason is not None:
        raise WatchkeeperError(f"{link}: {reason} (it changed while being read); try again")
    return Path(os.path.realpath(link))


def _reuse_cached_digests(
    scan: FolderScan, record: CachedTree | None, cache: StatCache
) -> tuple[np.ndarray, np.ndarray]:
    """Digests copied from the cache for entries whose path and stat match; a mask of those."""
    count = len(scan.entries)
    digests = np.zeros((count, DIGEST_SIZE), dtype=np.uint8)
    known = np.zeros(count, dtype=bool)
    if record is None or len(record.entries) == 0 or count == 0:
        return digests, known
    fields = _CACHE_KEY_FIELDS + (("ctime_ns",) if cache.trust_ctime else ())
    racy = record.racy_mask(cache.trust_ctime, cache.racy_window_ns)
    if record.blob == scan.blob:  # the same paths in the same order: compare row by row
        same = ~racy
        for name in fields:
            same &= scan.entries[name] == record.entries[name]
        if same.all():
            return record.digests.copy(), same
        digests[same] = record.digests[same]
        return digests, same
    previous = {
        path: i for i, path in enumerate(FolderScan(record.blob, record.entries).raw_paths())
    }
    match = np.array([previous.get(path, -1) for path in scan.raw_paths()], dtype=np.int64)
    present = match >= 0
    rows = np.where(present, match, 0)
    matched_rows = record.entries[rows]
    same = present & ~racy[rows]
    for name in fields:
        same &= scan.entries[name] == matched_rows[name]
    digests[same] = record.digests[match[same]]
    return digests, same


def _reuse_inode_digests(
    scan: FolderScan, rows: np.ndarray, digests: np.ndarray, cache: StatCache
) -> np.ndarray:
    """Fill in digests the cache knows by inode (hashed for another path or another user);
    returns the rows that are still to be read."""
    if len(rows) == 0:
        return rows
    entries = scan.entries
    found = cache.cached_digests([entry_stat_key(entries[row]) for row in rows])
    still = np.ones(len(rows), dtype=bool)
    for index, digest in enumerate(found):
        if digest is not None:
            digests[rows[index]] = np.frombuffer(digest, dtype=np.uint8)
            still[index] = False
    return rows[still]


def _hash_entries(
    root: Path,
    kind: str,
    scan: FolderScan,
    rows: np.ndarray,
    digests: np.ndarray,
    cache: StatCache,
    on_progress: ProgressCallback | None,
) -> dict[int, SkippedEntry]:
    """Hash the given rows in parallel; store digests and the stat seen while reading.

    Returns the rows that turned out unreadable (or no longer regular files), with the reason.
    """
    if len(rows) == 0:
        return {}
    paths = scan.paths()
    sizes = scan.entries["size"]
    total = int(sizes[rows].sum())
    done = 0
    seen_stats: list[tuple[int, int, int, int, int]] = []
    hashed_rows: list[int] = []
    unreadable: dict[int, SkippedEntry] = {}

    def hash_row(row: int) -> tuple[bytes, os.stat_result] | SkippedEntryError:
        try:
            return hash_file(os.path.join(root, paths[row]) if kind == "folder" else root)
        except SkippedEntryError as error:
            if kind != "folder":
                raise
            return error

    # Many small files are faster on one thread (the per-file cost is Python's); big ones are
    # read and hashed with the GIL released, one thread per core.
    workers = max(1, min(_HASH_WORKERS, len(rows), total // PARALLEL_BYTES_PER_WORKER))
    results: Iterator[tuple[bytes, os.stat_result] | SkippedEntryError]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        row_list = [int(row) for row in rows]
        results = pool.map(hash_row, row_list) if workers > 1 else map(hash_row, row_list)
        for row, result in zip(row_list, results, strict=True):
            if isinstance(result, SkippedEntryError):
                unreadable[row] = SkippedEntry(paths[row], result.reason)
                continue
            digest, seen = result
            hashed_rows.append(row)
            digests[row] = np.frombuffer(digest, dtype=np.uint8)
            seen_stats.append(
                (seen.st_dev, seen.st_ino, seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns)
            )
            done += seen.st_size
            if on_progress is not None:
                on_progress(done, max(total, done))
    observed = np.array(seen_stats, dtype=np.int64).reshape(-1, 5)
    for column, name in enumerate(("dev", "ino", "size", "mtime_ns", "ctime_ns")):
        scan.entries[name][hashed_rows] = observed[:, column]
    cache.stats.files_hashed += len(hashed_rows)
    cache.stats.bytes_hashed += int(observed[:, 2].sum())
    return unreadable


def _root_digest(kind: str, scan: FolderScan, digests: np.ndarray) -> bytes:
    if kind == "file":
        return digests[0].tobytes()
    hasher = blake3.blake3()
    for path, digest in zip(scan.raw_paths(), digests, strict=True):
        hasher.update(path + b"\0" + digest.tobytes())
    return hasher.digest()
