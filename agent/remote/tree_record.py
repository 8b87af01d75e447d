"""What the last sync left in a remote folder, recorded locally so that the next one can update it.

One small file per remote cache and folder, next to the stat cache: each path's digest, size and
executable flag, and the tree's internal symlinks. A record is a claim, not a proof: its user
checks the remote folder against it before relying on it, and marks it distrusted before
changing that folder, so that a sync broken half way leaves no record to trust (only a list of
the paths the folder may still hold).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from blake3 import blake3

from agent.data.stat_cache import StatCache
from agent.paths import PRIVATE_FOLDER_MODE

RECORD_FORMAT = 1
_MAGIC = b"WKRT"
_HEADER = struct.Struct("<4sIQ32s")  # magic, format, file count, BLAKE3 of the body
# In NUL-separated paths, each framed by NULs: one that is empty, absolute, or has an empty,
# "." or ".." part.
_UNSAFE_PATH = re.compile(rb"\0(?=\0)|\0/|//|/\0|(?:\0|/)\.\.?(?=/|\0)")
RECORD_FOLDER = "remote-trees"
KEPT_RECORDS = 256


class UnsafePathError(ValueError):
    """A relative path that is absolute or would leave its folder."""


def safe_relative(relative: str) -> str:
    """A relative posix path that stays inside its folder, unchanged; else UnsafePathError.

    >>> safe_relative("code/a b.txt")
    'code/a b.txt'
    >>> safe_relative("../x")
    Traceback (most recent call last):
    ...
    agent.remote.tree_record.UnsafePathError: refusing path '../x': it must stay inside the folder
    """
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafePathError(f"refusing path {relative!r}: it must stay inside the folder")
    if "\0" in relative:
        raise UnsafePathError(f"refusing path {relative!r}: it holds a NUL byte")
    return relative


class RecordedFile(NamedTuple):
    """One file the remote folder got from the last sync."""

    digest: str
    size: int
    executable: bool


@dataclass
class TreeRecord:
    """The files (by relative path) and internal symlinks a sync placed in a remote folder."""

    files: dict[str, RecordedFile]
    links: dict[str, str]

    def folders(self) -> set[str]:
        """Every folder of the tree, the root as ""."""
        return folders_of([*self.files, *self.links])

    def to_bytes(self) -> bytes:
        files = self.files.values()
        body = b"".join(
            (
                array("q", [f.size for f in files]).tobytes(),
                bytes(f.executable for f in files),
                bytes.fromhex("".join(f.digest for f in files)),
                b"\0".join(os.fsencode(path) for path in self.files),
                b"\0",
                json.dumps(sorted(self.links.items())).encode(),
            )
        )
        return _HEADER.pack(_MAGIC, RECORD_FORMAT, len(self.files), blake3(body).digest()) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> TreeRecord | None:
        """Parse a record; None when it is damaged, unsafe or of another format."""
        if len(data) < _HEADER.size:
            return None
        magic, version, count, checksum = _HEADER.unpack_from(data)
        body = memoryview(data)[_HEADER.size :]
        if magic != _MAGIC or version != RECORD_FORMAT or blake3(body).digest() != checksum:
            return None
        try:
            sizes = array("q", bytes(body[: 8 * count]))
            at = 8 * count
            executable = body[at : at + count]
            at += count
            digests = bytes(body[at : at + 32 * count]).hex()
            at += 32 * count
            rest = bytes(body[at:])
            paths_blob, _, links_text = rest.rpartition(b"\0")
            if count and _UNSAFE_PATH.search(b"\0" + paths_blob + b"\0"):
                return None
            paths = os.fsdecode(paths_blob).split("\0") if count else []
            if len(paths) != count or len(sizes) != count or len(digests) != 64 * count:
                return None
            each_digest = [digests[i : i + 64] for i in range(0, 64 * count, 64)]
            flags = map(bool, executable)
            files = dict(zip(paths, map(RecordedFile, each_digest, sizes, flags), strict=True))
            links = {
                safe_relative(str(path)): str(target) for path, target in json.loads(links_text)
            }
        except (ValueError, TypeError, UnicodeError):
            return None
        return cls(files, links)


def folders_of(paths: list[str]) -> set[str]:
    """The folders that hold these relative paths, with all their parents; the root is "".

    >>> sorted(folders_of(["a/b/c.txt", "d.txt"]))
    ['', 'a', 'a/b']
    """
    found = {""}
    for path in paths:
        parent = path.rpartition("/")[0]
        while parent and parent not in found:
            found.add(parent)
            parent = parent.rpartition("/")[0]
    return found


class TreeRecords:
    """The records of remote folders, kept beside a stat cache file (none for an in-memory one)."""

    def __init__(self, hash_cache: StatCache) -> None:
        self.folder = hash_cache.path.parent / RECORD_FOLDER if hash_cache.path else None

    @property
    def available(self) -> bool:
        return self.folder is not None

    def _file(self, store: str, remote_folder: str) -> Path:
        assert self.folder is not None
        name = hashlib.sha256(f"{store}\0{remote_folder}".encode(errors="surrogatepass"))
        return self.folder / name.hexdigest()[:40]

    def load(self, store: str, remote_folder: str) -> tuple[TreeRecord | None, bool]:
        """The record and whether it may be trusted (a distrusted one still says which paths
        the folder may hold, so that paths the tree lost can be removed)."""
        if self.folder is None:
            return None, False
        path = self._file(store, remote_folder)
        for candidate, trusted in ((path, True), (_distrusted(path), False)):
            try:
                data = candidate.read_bytes()
            except OSError:
                continue
            return TreeRecord.from_bytes(data), trusted
        return None, False

    def save(self, store: str, remote_folder: str, record: TreeRecord) -> None:
        """Write the record whole (a temporary file renamed over the old one), trusted."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
        path = self._file(store, remote_folder)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_bytes(record.to_bytes())
            os.replace(temporary, path)
            with contextlib.suppress(FileNotFoundError):
                _distrusted(path).unlink()
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()
        self._drop_oldest()

    def _drop_oldest(self) -> None:
        """Keep the KEPT_RECORDS most recently written records (each run folder makes one)."""
        assert self.folder is not None
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return
        if len(entries) <= KEPT_RECORDS:
            return
        by_age = sorted(entries, key=_written_ns)
        for entry in by_age[: len(entries) - KEPT_RECORDS]:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)

    def distrust(self, store: str, remote_folder: str) -> None:
        """Mark the record as not to be trusted (before the folder is changed): a sync that
        breaks half way leaves it so."""
        if self.folder is not None:
            path = self._file(store, remote_folder)
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, _distrusted(path))


def _written_ns(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat().st_mtime_ns
    except OSError:
        return 0


def _distrusted(path: Path) -> Path:
    return path.with_name(path.name + ".distrusted")
