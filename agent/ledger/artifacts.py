"""Content-addressed artifact store: a file is registered only once fully written and checked."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from pathlib import Path

import blake3

from agent.errors import WatchkeeperError

CHUNK_BYTES = 1 << 20
DIGEST_PREFIX = "blake3:"
# A copy in progress is `ab/.incoming-<writer pid>-<digest start>`; one whose writer is gone, or
# that nobody has written to for this long, was abandoned (kill -9, power loss) and is removed.
INCOMING_PREFIX = ".incoming-"
STALE_INCOMING_SECONDS = 10 * 60
_INCOMING_NAME = re.compile(r"^\.incoming-(\d+)-[0-9a-f]{16}$")


def file_digest(path: Path) -> str:
    """The store's digest of a file: `blake3:` and 64 hex digits.

    >>> file_digest(Path("/dev/null"))
    'blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262'
    """
    hasher = blake3.blake3()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            hasher.update(chunk)
    return DIGEST_PREFIX + hasher.hexdigest()


class ArtifactStore:
    """Artifacts under `root/ab/cdef…`, named by the blake3 digest of their content.

    A file is copied to a temporary file inside the store, flushed to disk, hashed again from
    the copy and only then renamed into place, so a crash or a full disk never leaves a partial
    artifact under a digest name. Temporary files abandoned by a writer that was killed are
    removed by the next `put` (see `remove_abandoned_copies`).

    >>> store = ArtifactStore(Path("/tmp/example-artifacts"))
    >>> digest = store.put(Path("/etc/hostname"))
    >>> store.path(digest).read_bytes() == Path("/etc/hostname").read_bytes()
    True
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._swept = False

    def path(self, digest: str) -> Path:
        """Where the artifact with this digest lives (whether or not it is stored)."""
        hex_digest = digest.removeprefix(DIGEST_PREFIX)
        if len(hex_digest) != 64 or any(c not in "0123456789abcdef" for c in hex_digest):
            raise WatchkeeperError(f"{digest!r} is not an artifact digest (blake3:<64 hex digits>)")
        return self.root / hex_digest[:2] / hex_digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, source: Path) -> str:
        """Copy `source` into the store and return its digest; a folder is refused."""
        if not source.is_file():
            raise WatchkeeperError(f"{source} is not a regular file; only files can be stored")
        if not self._swept:
            self.remove_abandoned_copies()
            self._swept = True
        expected = file_digest(source)
        destination = self.path(expected)
        if destination.is_file():
            return expected
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.parent / f"{INCOMING_PREFIX}{os.getpid()}-{destination.name[:16]}"
        try:
            self._copy_durably(source, temporary)
            actual = file_digest(temporary)
            if actual != expected:
                raise WatchkeeperError(
                    f"{source} changed while it was being stored (digest {expected} before the "
                    f"copy, {actual} after); make sure training has finished writing it."
                )
            os.replace(temporary, destination)
            _fsync_directory(destination.parent)
        except OSError as error:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise WatchkeeperError(
                    f"no space left to store {source} in {self.root} ({error.strerror}); "
                    "nothing was registered. Free some space and train again."
                ) from error
            raise WatchkeeperError(f"cannot store {source} in {self.root}: {error}") from error
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        return expected

    def remove_abandoned_copies(self) -> list[Path]:
        """Remove the temporary copies whose writer is dead or that went untouched too long.

        Returns the files removed. Copies of live writers in progress are left alone.
        """
        removed = []
        now = time.time()
        for path in self.root.glob(f"*/{INCOMING_PREFIX}*"):
            match = _INCOMING_NAME.match(path.name)
            if match is None:
                continue
            try:
                idle = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if idle < STALE_INCOMING_SECONDS and _process_exists(int(match.group(1))):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
        return removed

    @staticmethod
    def _copy_durably(source: Path, destination: Path) -> None:
        with source.open("rb") as reader, destination.open("wb") as writer:
            shutil.copyfileobj(reader, writer, CHUNK_BYTES)
            writer.flush()
            os.fsync(writer.fileno())


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
