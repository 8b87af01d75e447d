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
import zlib
from dataclasses import dataclass
from pathlib import Path

from agent.data.stat_cache import StatCache
from agent.paths import PRIVATE_FOLDER_MODE

RECORD_FORMAT = 1
RECORD_FOLDER = "remote-trees"


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


@dataclass(frozen=True)
class RecordedFile:
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
        body = {
            "format": RECORD_FORMAT,
            "paths": list(self.files),
            "digests": "".join(f.digest for f in self.files.values()),
            "sizes": [f.size for f in self.files.values()],
            "executable": "".join("1" if f.executable else "0" for f in self.files.values()),
            "links": sorted(self.links.items()),
        }
        return zlib.compress(json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass"))

    @classmethod
    def from_bytes(cls, data: bytes) -> TreeRecord | None:
        """Parse a record; None when it is damaged, unsafe or of another format."""
        try:
            body = json.loads(zlib.decompress(data).decode("utf-8", "surrogatepass"))
            if body.get("format") != RECORD_FORMAT:
                return None
            paths, digests = body["paths"], body["digests"]
            sizes, executable = body["sizes"], body["executable"]
            if not (len(paths) == len(sizes) == len(executable) == len(digests) // 64):
                return None
            files = {
                safe_relative(path): RecordedFile(
                    digests[64 * i : 64 * i + 64], int(sizes[i]), executable[i] == "1"
                )
                for i, path in enumerate(paths)
            }
            links = {safe_relative(str(path)): str(target) for path, target in body["links"]}
        except (ValueError, KeyError, TypeError, zlib.error, UnicodeError):
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

    def distrust(self, store: str, remote_folder: str) -> None:
        """Mark the record as not to be trusted (before the folder is changed): a sync that
        breaks half way leaves it so."""
        if self.folder is not None:
            path = self._file(store, remote_folder)
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, _distrusted(path))


def _distrusted(path: Path) -> Path:
    return path.with_name(path.name + ".distrusted")
