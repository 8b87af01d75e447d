"""List every file below a data folder with its lstat, in a fixed order, as compact arrays."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

try:  # The compiled walker; the pure-Python walk below gives identical results, only slower.
    from agent.data import _scan as _native
except ImportError:  # pragma: no cover - exercised when the extension is not built
    _native = None  # type: ignore[assignment]

KIND_FILE = 0
KIND_SYMLINK = 1
KIND_OTHER = 2
# An entry that could not be stat'ed, or a folder that could not be opened; `size` holds the errno.
KIND_UNREADABLE = 3

ENTRY_DTYPE = np.dtype(
    [
        ("dev", "<u8"),
        ("ino", "<u8"),
        ("size", "<i8"),
        ("mtime_ns", "<i8"),
        ("ctime_ns", "<i8"),
        ("path_offset", "<i8"),
        ("path_length", "<i4"),
        ("kind", "<i4"),
        ("mode", "<i8"),
    ]
)
# The folder skipped at the top of a data folder: version control metadata is not data.
SKIPPED_TOP_LEVEL_NAME = b".git"
_PARALLEL_WALKERS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class FolderScan:
    """Every non-folder entry below a root: NUL-terminated relative paths plus their lstat rows.

    Paths are relative, with `/` separators, in walk order: names sorted byte-wise inside each
    folder, depth first. That order is the manifest order of a folder fingerprint.
    """

    blob: bytes
    entries: np.ndarray

    def paths(self) -> list[str]:
        """The relative paths, decoded (undecodable bytes kept as surrogate escapes)."""
        if not self.blob:
            return []
        return [os.fsdecode(raw) for raw in self.blob[:-1].split(b"\0")]

    def raw_paths(self) -> list[bytes]:
        """The relative paths as bytes."""
        if not self.blob:
            return []
        return self.blob[:-1].split(b"\0")

    def with_prefix(self, prefix: bytes) -> FolderScan:
        """The same scan with `prefix` put before every path."""
        if not prefix or not self.blob:
            return self
        raw = self.raw_paths()
        entries = self.entries.copy()
        entries["path_offset"] += np.arange(len(raw), dtype=np.int64) * len(prefix)
        entries["path_length"] += len(prefix)
        return FolderScan(b"".join(prefix + path + b"\0" for path in raw), entries)

    def select(self, keep: np.ndarray) -> FolderScan:
        """The scan of the rows where the boolean mask `keep` is true, in the same order.

        >>> scan = FolderScan(b"a\\0b\\0", np.array([(0, 0, 1, 0, 0, 0, 1, 0, 0o100644),
        ...     (0, 0, 2, 0, 0, 2, 1, 0, 0o100644)], dtype=ENTRY_DTYPE))
        >>> scan.select(np.array([False, True])).paths()
        ['b']
        """
        if keep.all():
            return self
        kept_paths = [path for path, wanted in zip(self.raw_paths(), keep, strict=True) if wanted]
        entries = self.entries[keep].copy()
        lengths = np.array([len(path) for path in kept_paths], dtype=np.int64)
        entries["path_offset"] = np.cumsum(lengths + 1) - (lengths + 1)
        return FolderScan(b"".join(path + b"\0" for path in kept_paths), entries)


def entry_stat_key(entry: np.void) -> tuple[int, int, int, int, int]:
    """The stat key (device, inode, size, mtime, ctime) of one scan entry, as the hash cache
    keys digests (see `agent.data.hashing.stat_key`)."""
    return (
        int(entry["dev"]),
        int(entry["ino"]),
        int(entry["size"]),
        int(entry["mtime_ns"]),
        int(entry["ctime_ns"]),
    )


def is_native() -> bool:
    """True when the compiled walker is in use."""
    return _native is not None


def scan_folder(
    root: bytes, *, prefix: bytes = b"", skip: Collection[bytes] = (SKIPPED_TOP_LEVEL_NAME,)
) -> FolderScan:
    """Walk `root` (a folder path as bytes) and return every entry below it.

    Symbolic links are reported as links (kind 1) and never followed; the caller decides.
    An entry that cannot be stat'ed and a folder that cannot be opened are reported as one entry
    of kind KIND_UNREADABLE (its `size` is the errno) and the walk goes on. Raises OSError only
    when `root` itself cannot be listed. Names in `skip` directly inside `root` are left out
    (version control metadata, by default); `prefix` (empty, or ending in `/`) is put before
    every reported path.

    Example::

        scan = scan_folder(b"/etc/ssl")
        scan.paths()[:1]  # ['certs/ca-certificates.crt']
    """
    if _native is None:
        return _python_walk(root, prefix, frozenset(skip))
    with os.scandir(root) as listing:
        names = sorted(entry.name for entry in listing if entry.name not in skip)
    workers = min(_PARALLEL_WALKERS, len(names))
    if workers <= 1:
        blob, entries = _native.scan_names(root, names)
        return FolderScan(blob, entries).with_prefix(prefix)
    # The compiled walk releases the GIL: give each thread a contiguous share of the top level.
    bounds = [len(names) * share // workers for share in range(workers + 1)]
    shares = [names[bounds[k] : bounds[k + 1]] for k in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda share: _native.scan_names(root, share), shares))
    return concatenate([FolderScan(blob, entries) for blob, entries in parts]).with_prefix(prefix)


def _python_walk(folder: bytes, prefix: bytes, skip: frozenset[bytes] = frozenset()) -> FolderScan:
    """The same walk as the compiled one, in Python."""
    rows: list[tuple[int, int, int, int, int, int, int, int, int]] = []
    blob = bytearray()

    def add_unreadable(relative: bytes, error_number: int) -> None:
        rows.append((0, 0, error_number, 0, 0, len(blob), len(relative), KIND_UNREADABLE, 0))
        blob.extend(relative + b"\0")

    def visit(current: bytes, current_prefix: bytes) -> None:
        try:
            names = sorted(os.listdir(current))
        except OSError as error:
            if current == folder:
                raise OSError(error.errno, "cannot read", os.fsdecode(current_prefix)) from error
            if not isinstance(error, FileNotFoundError):
                add_unreadable(current_prefix[:-1], error.errno or 0)
            return
        for name in names:
            if current == folder and name in skip:
                continue
            relative = current_prefix + name
            try:
                info = os.lstat(os.path.join(current, name))
            except FileNotFoundError:
                continue
            except OSError as error:
                add_unreadable(relative, error.errno or 0)
                continue
            if stat.S_ISDIR(info.st_mode):
                visit(os.path.join(current, name), relative + b"/")
                continue
            kind = (
                KIND_FILE
                if stat.S_ISREG(info.st_mode)
                else KIND_SYMLINK
                if stat.S_ISLNK(info.st_mode)
                else KIND_OTHER
            )
            rows.append(
                (
                    info.st_dev,
                    info.st_ino,
                    info.st_size,
                    info.st_mtime_ns,
                    info.st_ctime_ns,
                    len(blob),
                    len(relative),
                    kind,
                    info.st_mode,
                )
            )
            blob.extend(relative + b"\0")

    visit(folder, prefix)
    return FolderScan(bytes(blob), np.array(rows, dtype=ENTRY_DTYPE))


def _single_entry(name: bytes, info: os.stat_result) -> FolderScan:
    kind = (
        KIND_FILE
        if stat.S_ISREG(info.st_mode)
        else KIND_SYMLINK
        if stat.S_ISLNK(info.st_mode)
        else KIND_OTHER
    )
    row = (
        info.st_dev,
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        0,
        len(name),
        kind,
        info.st_mode,
    )
    return FolderScan(name + b"\0", np.array([row], dtype=ENTRY_DTYPE))


def single_file_scan(name: str, info: os.stat_result) -> FolderScan:
    """The scan of a single-file data source: one entry named by the file name."""
    return _single_entry(os.fsencode(name), info)


def concatenate(parts: list[FolderScan]) -> FolderScan:
    """Join scans in the given order, fixing up the path offsets."""
    if not parts:
        return FolderScan(b"", np.zeros(0, dtype=ENTRY_DTYPE))
    if len(parts) == 1:
        return parts[0]
    counts = [len(part.entries) for part in parts]
    entries = np.empty(sum(counts), dtype=ENTRY_DTYPE)
    position = 0
    for part, count in zip(parts, counts, strict=True):
        entries[position : position + count] = part.entries  # same dtype: a plain copy
        position += count
    starts = np.cumsum([0] + [len(part.blob) for part in parts[:-1]], dtype=np.int64)
    entries["path_offset"] += np.repeat(starts, counts)
    return FolderScan(b"".join(part.blob for part in parts), entries)
