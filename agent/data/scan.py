"""List every file below a data folder with its lstat, in a fixed order, as compact arrays."""

from __future__ import annotations

import os
import stat
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


def is_native() -> bool:
    """True when the compiled walker is in use."""
    return _native is not None


def scan_folder(root: bytes) -> FolderScan:
    """Walk `root` (a folder path as bytes) and return every entry below it.

    Symbolic links are reported as links (kind 1) and never followed; the caller decides.
    Raises OSError naming the first entry that could not be listed or stat'ed.

    >>> scan = scan_folder(b"/etc/ssl")  # doctest: +SKIP
    >>> scan.paths()[:1]  # doctest: +SKIP
    ['certs/ca-certificates.crt']
    """
    top_files: list[tuple[bytes, os.stat_result]] = []
    top_folders: list[bytes] = []
    with os.scandir(root) as listing:
        names = sorted(entry.name for entry in listing)
    order: list[tuple[str, int]] = []
    for name in names:
        if name == SKIPPED_TOP_LEVEL_NAME:
            continue
        try:
            info = os.lstat(os.path.join(root, name))
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode):
            order.append(("folder", len(top_folders)))
            top_folders.append(name)
        else:
            order.append(("file", len(top_files)))
            top_files.append((name, info))
    folder_scans = _scan_subfolders(root, top_folders)
    parts: list[FolderScan] = []
    for what, index in order:
        if what == "folder":
            parts.append(folder_scans[index])
        else:
            name, info = top_files[index]
            parts.append(_single_entry(name, info))
    return concatenate(parts)


def _scan_subfolders(root: bytes, folders: list[bytes]) -> list[FolderScan]:
    if not folders:
        return []
    if _native is None or len(folders) == 1 or _PARALLEL_WALKERS == 1:
        return [_walk_one(root, name) for name in folders]
    # os-level walking releases the GIL in the compiled walker: split the folders over threads.
    results: list[FolderScan | None] = [None] * len(folders)

    def walk_share(worker: int) -> None:
        for index in range(worker, len(folders), _PARALLEL_WALKERS):
            results[index] = _walk_one(root, folders[index])

    with ThreadPoolExecutor(max_workers=_PARALLEL_WALKERS) as pool:
        for future in [pool.submit(walk_share, w) for w in range(_PARALLEL_WALKERS)]:
            future.result()
    return [scan for scan in results if scan is not None]


def _walk_one(root: bytes, name: bytes) -> FolderScan:
    folder = os.path.join(root, name)
    if _native is not None:
        blob, entries = _native.scan_folder(folder, name + b"/", None)
        return FolderScan(blob, entries)
    return _python_walk(folder, name + b"/")


def _python_walk(folder: bytes, prefix: bytes) -> FolderScan:
    """The same walk as the compiled one, in Python."""
    rows: list[tuple[int, int, int, int, int, int, int, int]] = []
    blob = bytearray()

    def visit(current: bytes, current_prefix: bytes) -> None:
        try:
            names = sorted(os.listdir(current))
        except OSError as error:
            raise OSError(error.errno, "cannot read", os.fsdecode(current_prefix)) from error
        for name in names:
            relative = current_prefix + name
            try:
                info = os.lstat(os.path.join(current, name))
            except FileNotFoundError:
                continue
            except OSError as error:
                raise OSError(error.errno, "cannot read", os.fsdecode(relative)) from error
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
    entries = np.concatenate([part.entries for part in parts])
    starts = np.cumsum([0] + [len(part.blob) for part in parts[:-1]], dtype=np.int64)
    counts = [len(part.entries) for part in parts]
    entries["path_offset"] += np.repeat(starts, counts)
    return FolderScan(b"".join(part.blob for part in parts), entries)
