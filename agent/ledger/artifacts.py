"""Content-addressed artifact store: a file is registered only once fully written and checked."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import blake3
import numpy

from agent.data import hashing
from agent.data.hashing import DIGEST_PREFIX
from agent.data.stat_cache import StatCache
from agent.disk import disk_full_error, is_disk_full
from agent.errors import WatchkeeperError
from agent.ledger import _clone
from agent.paths import PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE, WatchkeeperPaths, make_private

CHUNK_BYTES = 1 << 20
# A copy in progress is `ab/.incoming-<writer pid>-<digest start>`; one whose writer is gone, or
# that nobody has written to for this long, was abandoned (kill -9, power loss) and is removed.
INCOMING_PREFIX = ".incoming-"
STALE_INCOMING_SECONDS = 10 * 60
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_INCOMING_NAME = re.compile(r"^\.incoming-(\d+)-[0-9a-f]{16}$")
# ioctl(dest, FICLONE, source): share the source's extents copy-on-write (btrfs, XFS, bcachefs).
FICLONE = getattr(fcntl, "FICLONE", 0x40049409)
# Threads cloning at once: one per core, at most two (more only contend for the metadata).
CLONE_THREADS = max(1, min(2, os.cpu_count() or 1))
DAMAGED_SUFFIX = ".damaged"
# Held shared while a writer claims a blob the store has, exclusive while gc unlinks (gc.py).
GC_LOCK_NAME = ".gc-lock"


class SourceChangedError(WatchkeeperError):
    """A file changed between being fingerprinted and being kept; nothing was registered."""


class DamagedBlobError(WatchkeeperError):
    """A stored blob does not hash to its name; it was set aside and is never used."""


def file_digest(path: Path, cache: StatCache | None = None) -> str:
    """The store's digest of a file: `blake3:` and 64 hex digits (from `cache` when its stat
    vouches for it; see `agent.data.hashing.file_digest`).

    >>> import tempfile; empty = Path(tempfile.mkdtemp()) / "empty"; _ = empty.write_bytes(b"")
    >>> file_digest(empty)
    'blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262'
    """
    return DIGEST_PREFIX + hashing.file_digest(path, cache)


class ArtifactStore:
    """Artifacts under `root/ab/cdef…`, named by the blake3 digest of their content.

    A file is copied to a temporary file inside the store, flushed to disk, hashed again from
    the copy and only then renamed into place, so a crash or a full disk never leaves a partial
    artifact under a digest name. Temporary files abandoned by a writer that was killed are
    removed by the next `put` (see `remove_abandoned_copies`). Artifacts keep at most their
    owner's permissions: 0600, or 0700 when the source is executable; the store's folders are
    0700.

    >>> from agent.paths import WatchkeeperPaths
    >>> store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    >>> digest = store.put(Path("/etc/hostname"))
    >>> store.path(digest).read_bytes() == Path("/etc/hostname").read_bytes()
    True
    """

    def __init__(self, root: Path, hash_cache: StatCache | None = None) -> None:
        self.root = root
        self._swept = False
        self._hash_cache = hash_cache
        self._reflinks_refused: set[int] = set()  # devices whose files cannot be cloned here
        self._folders_made: set[str] = set()  # blob folders this store has made or found
        self._unnamed_files = os.path.isdir("/proc/self/fd")  # O_TMPFILE, linked by /proc
        # Blobs `restore` hashed and found whole (stat, digest), and when the first was checked.
        self._verified: list[tuple[hashing.StatKey, bytes]] = []
        self._verified_since: int | None = None
        self._verified_lock = threading.Lock()

    @property
    def hash_cache(self) -> StatCache:
        """The stat cache that spares reading a source whose digest is known (the default one
        of the Watchkeeper data folder unless given)."""
        if self._hash_cache is None:
            self._hash_cache = StatCache.open(WatchkeeperPaths.from_environment())
        return self._hash_cache

    def path(self, digest: str) -> Path:
        """Where the artifact with this digest lives (whether or not it is stored)."""
        hex_digest = digest.removeprefix(DIGEST_PREFIX)
        if _HEX_DIGEST.fullmatch(hex_digest) is None:
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
        expected = file_digest(source, self.hash_cache)
        destination = self.path(expected)
        if self.claim(destination):
            make_private(destination)
            return expected
        for folder in (self.root, destination.parent):
            folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
            make_private(folder)
        temporary = destination.parent / f"{INCOMING_PREFIX}{os.getpid()}-{destination.name[:16]}"
        try:
            self._copy_durably(source, temporary, artifact_mode(source.stat().st_mode))
            actual = file_digest(temporary)
            if actual != expected:
                raise WatchkeeperError(
                    f"{source} changed while it was being stored (digest {expected} before the "
                    f"copy, {actual} after); make sure training has finished writing it."
                )
            os.replace(temporary, destination)
            _fsync_directory(destination.parent)
        except OSError as error:
            # Measured before the partial copy is removed: the free space the copy ran out of.
            disk_full = disk_full_error(self.root) if is_disk_full(error) else None
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            if disk_full is not None:
                raise disk_full from error
            if error.errno == errno.EFBIG:
                raise WatchkeeperError(
                    f"{source} is too large to store in {self.root} ({error.strerror}); "
                    "nothing was registered."
                ) from error
            raise WatchkeeperError(f"cannot store {source} in {self.root}: {error}") from error
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        return expected

    def claim(self, blob: Path) -> bool:
        """Touch a stored blob so that a gc running now keeps it; False when it is not stored.

        The touch happens under the store's gc lock (shared), so it falls either before gc
        looks at the blob's age (gc then sees a new blob and keeps it) or after gc removed it
        (the caller then stores it again): never in between.
        """
        if not blob.is_file():
            return False
        with gc_lock(self.root, exclusive=False):
            try:
                os.utime(blob)
            except FileNotFoundError:
                return False
        return True

    def claim_stored(self, digests: list[str]) -> set[str]:
        """Claim (touch) each of `digests` the store has, under one hold of the gc lock; the
        digests it has. What `claim` does for one blob, for many under one lock.

        A blob whose stat the hash cache vouched for just before its touch is vouched for
        again with the stat the touch gave it (`StatCache.remember_written_digests`): the touch
        changes its times, not its content, so a restore after it need not read it again.
        """
        claimed: set[str] = set()
        if not digests or not self.root.is_dir():
            return claimed
        stats = self.blob_stats(digests)
        if not stats:
            return claimed
        vouched = self.vouched_blobs(stats)
        touched: list[tuple[hashing.StatKey, bytes]] = []
        with gc_lock(self.root, exclusive=False):
            for digest in stats:
                try:
                    after = _touch(self._blob_name(digest), vouched.get(digest))
                except (FileNotFoundError, NotADirectoryError):
                    continue  # collected meanwhile: stored again by the caller
                if after is not None:
                    touched.append((after, bytes.fromhex(digest.removeprefix(DIGEST_PREFIX))))
                claimed.add(digest)
        self.hash_cache.remember_written_digests(touched)
        return claimed

    def blob_stats(self, digests: Iterable[str]) -> dict[str, os.stat_result]:
        """The stat of each blob of `digests` the store has (the others are left out)."""
        stats: dict[str, os.stat_result] = {}
        for digest in digests:
            if digest in stats or _HEX_DIGEST.fullmatch(digest.removeprefix(DIGEST_PREFIX)) is None:
                continue
            try:
                info = os.stat(self._blob_name(digest))
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISREG(info.st_mode):
                stats[digest] = info
        return stats

    def vouched_blobs(self, stats: dict[str, os.stat_result]) -> dict[str, hashing.StatKey]:
        """Of blobs and their stats (`blob_stats`), the stat of each for which the hash cache
        vouches that the blob hashes to its name (it was hashed whole and found so, and has not
        changed since): `restore` copies such a blob without reading it again."""
        if not stats:
            return {}
        keys = {digest: hashing.stat_key(info) for digest, info in stats.items()}
        found = self.hash_cache.cached_digests(list(keys.values()))
        return {
            digest: key
            for (digest, key), known in zip(keys.items(), found, strict=True)
            if known is not None and known.hex() == digest.removeprefix(DIGEST_PREFIX)
        }

    def _checked_blob_name(self, digest: str) -> str:
        """`path(digest)` as a string: the same check of the digest, no Path built."""
        if _HEX_DIGEST.fullmatch(digest.removeprefix(DIGEST_PREFIX)) is None:
            self.path(digest)  # raises, naming the digest
        return self._blob_name(digest)

    def _blob_name(self, digest: str) -> str:
        """`path(digest)` as a string, without the checks (many blobs, known digests)."""
        hex_digest = digest.removeprefix(DIGEST_PREFIX)
        return f"{self.root}/{hex_digest[:2]}/{hex_digest[2:]}"

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

    def put_bytes(self, content: bytes) -> str:
        """Store `content` as a blob and return its digest (written durably, like `put`)."""
        digest = DIGEST_PREFIX + blake3.blake3(content).hexdigest()
        destination = self.path(digest)
        if self.claim(destination):
            return digest
        self._make_folders(destination.parent)
        temporary = self._incoming(destination)
        try:
            descriptor = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE
            )
            with os.fdopen(descriptor, "wb") as writer:
                writer.write(content)
                writer.flush()
                os.fsync(descriptor)
            os.replace(temporary, destination)
        except OSError as error:
            self._discard(temporary)
            if is_disk_full(error):
                raise disk_full_error(self.root) from error
            raise WatchkeeperError(f"cannot store a blob in {self.root}: {error}") from error
        except BaseException:
            self._discard(temporary)
            raise
        return digest

    def keep_file(
        self,
        source: str | Path,
        digest: str,
        *,
        size: int,
        mtime_ns: int,
        vouched: hashing.StatKey | None = None,
    ) -> str:
        """Keep the content of a file already fingerprinted as `digest` (size, mtime_ns).

        Returns "present" (the store got it meanwhile: the caller claims the blobs the store
        has first, see `claim_stored`), "cloned" (a reflink: no bytes copied) or "copied".
        The user's file is only read: never linked, moved or changed, so a later
        edit of theirs cannot reach the blob. The kernel copies it into an unnamed file in the
        blob's folder (O_TMPFILE), which is linked into place once whole: a kill at any point
        leaves nothing behind (where the filesystem has no unnamed files, a temporary name
        renamed into place; `remove_abandoned_copies` removes what a kill leaves of those).
        The copy is not hashed again when `vouched` is given (the stat for which the hash cache
        vouches that the content hashes to `digest`, see `StatCache.cached_digests`) and the
        file has that very stat before and after the copy; otherwise the copy is hashed (so a
        file whose stat is not the fingerprinted one is kept when its content still hashes to
        `digest`). A file that changed raises SourceChangedError and a full disk a disk-full
        error; in both cases nothing is registered. Blobs written here are not fsynced one by
        one: a blob damaged by a power cut is caught by the hash check of `restore`.
        """
        # Strings, not Paths, and folders made once: thousands of files, each a few system calls.
        destination = self._checked_blob_name(digest)
        folder = os.path.dirname(destination)
        if folder not in self._folders_made:
            self._make_folders(Path(folder))
            self._folders_made.add(folder)
        temporary: str | None = None
        try:
            reader = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            try:
                before = os.fstat(reader)
                descriptor, temporary = self._open_unnamed(folder, destination)
                try:
                    how = self._clone_or_copy(reader, descriptor, before.st_size, before.st_dev)
                    after = os.fstat(reader)
                    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                        raise SourceChangedError(f"{source} changed while it was being kept")
                    # A snapshot reused for content seen before carries that time's mtimes: a
                    # file whose stat is not the fingerprinted one is kept only if its copy
                    # hashes to `digest`.
                    as_fingerprinted = (before.st_size, before.st_mtime_ns) == (size, mtime_ns)
                    trusted = (
                        as_fingerprinted
                        and vouched is not None
                        and (hashing.stat_key(before) == vouched == hashing.stat_key(after))
                    )
                    if not trusted:
                        copy = temporary or f"/proc/self/fd/{descriptor}"
                        copied = DIGEST_PREFIX + hashing.hash_whole_file(copy, size).hex()
                        if copied != digest:
                            raise SourceChangedError(f"{source} changed while it was being kept")
                    if temporary is None:
                        how = self._name_unnamed(descriptor, destination, how)
                finally:
                    os.close(descriptor)
            finally:
                os.close(reader)
            if temporary is not None:
                os.replace(temporary, destination)
        except OSError as error:
            disk_full = disk_full_error(self.root) if is_disk_full(error) else None
            if temporary is not None:
                self._discard(Path(temporary))
            if disk_full is not None:
                raise disk_full from error
            raise WatchkeeperError(f"cannot keep {source} in {self.root}: {error}") from error
        except BaseException:
            if temporary is not None:
                self._discard(Path(temporary))
            raise
        return how

    def clone_vouched(
        self, files: list[tuple[str, str, hashing.StatKey | None]]
    ) -> list[str | None]:
        """Keep by reflink each (source, digest, vouched stat) whose stat is the vouched one
        before and after its clone, in C (a clone is a few metadata updates: per file, Python
        would cost more than the kernel): "cloned" or "present" (claimed) for those, None for
        each file the caller keeps by `keep_file` (not vouched, changed, not clonable here, or
        any failure: nothing of it was left). What `keep_file` does for a vouched file, where
        the filesystem clones and has unnamed files.
        """
        if not files or not self._unnamed_files:
            return [None] * len(files)
        destinations = [self._checked_blob_name(digest) for _, digest, _ in files]
        folders = [os.path.dirname(destination) for destination in destinations]
        for folder in dict.fromkeys(folders):
            if folder not in self._folders_made:
                self._make_folders(Path(folder))
                self._folders_made.add(folder)
        none = (-1, -1, -1, -1, -1)
        keys = numpy.array(
            [none if key is None or max(key) >= 1 << 63 else key for _, _, key in files],
            dtype=numpy.int64,
        )
        sources = [os.fsencode(source) for source, _, _ in files]
        folder_names = [os.fsencode(folder) for folder in folders]
        destination_names = [os.fsencode(destination) for destination in destinations]

        def clone(indices: list[int]) -> tuple[numpy.ndarray, numpy.ndarray]:
            return _clone.clone_files(
                [sources[index] for index in indices],
                [folder_names[index] for index in indices],
                [destination_names[index] for index in indices],
                numpy.ascontiguousarray(keys[indices]),
            )

        # The C loop lets go of the GIL for each file: one share per core (2,000 clones on XFS
        # took 0.09 s in one thread, 0.05 s in two; btrfs the same in both).
        shares = [list(range(start, len(files), CLONE_THREADS)) for start in range(CLONE_THREADS)]
        outcomes = numpy.empty(len(files), dtype=numpy.int32)
        errors = numpy.empty(len(files), dtype=numpy.int32)
        with ThreadPoolExecutor(max_workers=CLONE_THREADS) as pool:
            for share, (share_outcomes, share_errors) in zip(
                shares, pool.map(clone, shares), strict=True
            ):
                outcomes[share], errors[share] = share_outcomes, share_errors
        gone = numpy.flatnonzero((outcomes == _clone.FAILED) & (errors == errno.ENOENT)).tolist()
        if gone:  # blob folders removed since this store made them: made again, once
            for index in gone:
                self._make_folders(Path(folders[index]))
            outcomes[gone] = clone(gone)[0]
        kept: list[str | None] = []
        for outcome, destination in zip(outcomes.tolist(), destinations, strict=True):
            if outcome == _clone.CLONED:
                kept.append("cloned")
            elif outcome == _clone.PRESENT and self.claim(Path(destination)):
                kept.append("present")
            else:
                kept.append(None)
        return kept

    def _name_unnamed(self, descriptor: int, destination: str, how: str) -> str:
        """Link the unnamed copy open as `descriptor` into place; "present" when the store got
        the blob meanwhile (then claimed, so that gc keeps it), else `how`."""
        while not _clone.link_unnamed(descriptor, os.fsencode(destination)):
            if self.claim(Path(destination)):
                return "present"
        return how

    def _open_unnamed(self, folder: str, destination: str) -> tuple[int, str | None]:
        """A new file in `folder` to copy into: unnamed (O_TMPFILE) where the filesystem and
        /proc allow, with None; else a temporary name beside `destination`, with that name."""
        if self._unnamed_files:
            try:
                return os.open(folder, os.O_WRONLY | os.O_TMPFILE, PRIVATE_FILE_MODE), None
            except FileNotFoundError:  # its folder was removed since it was made here
                self._make_folders(Path(folder))
                return os.open(folder, os.O_WRONLY | os.O_TMPFILE, PRIVATE_FILE_MODE), None
            except OSError as error:
                if error.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self._unnamed_files = False
        if not self._swept:
            self.remove_abandoned_copies()
            self._swept = True
        temporary = f"{folder}/{INCOMING_PREFIX}{os.getpid()}-{os.path.basename(destination)[:16]}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            return os.open(temporary, flags, PRIVATE_FILE_MODE), temporary
        except FileNotFoundError:
            self._make_folders(Path(folder))
            return os.open(temporary, flags, PRIVATE_FILE_MODE), temporary

    def _clone_or_copy(self, source: int, destination: int, size: int, device: int) -> str:
        """`_clone_or_copy`, not trying reflinks again from a device that refused one."""
        if device in self._reflinks_refused:
            return _copy(source, destination, size)
        how = _clone_or_copy(source, destination, size)
        if how == "copied":
            self._reflinks_refused.add(device)
        return how

    def restore(
        self,
        digest: str,
        target: str | Path,
        name: str,
        *,
        vouched: hashing.StatKey | None = None,
    ) -> os.stat_result:
        """Write the blob `digest` to `target` (a new file), checked against its digest; the
        stat of `target` once written (what the checked digest vouches for).

        The kernel copies the blob (or clones it where the filesystem can). The copy is not
        hashed when `vouched` is given (the blob's stat for which the hash cache vouches, see
        `vouched_blobs`) and the blob has that very stat before and after the copy; otherwise
        the copy is hashed. A blob hashed and found whole is remembered by `remember_verified`
        (its stat then vouches for it). A blob that does not hash to its digest is renamed to
        `<blob>.damaged`, so that it is never used again and the next training stores the
        content anew; `target` is removed and DamagedBlobError names it (`name` is what the
        blob stands for).
        """
        blob = self._checked_blob_name(digest)  # a string: thousands of blobs
        try:
            reader = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as error:
            raise WatchkeeperError(
                f"the kept copy of {name} ({digest}) is not in {self.root}"
            ) from error
        try:
            checked_ns = time.time_ns()
            before = os.fstat(reader)
            writer = os.open(
                target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE
            )
            try:
                self._clone_or_copy(reader, writer, before.st_size, before.st_dev)
                written = os.fstat(writer)
            finally:
                os.close(writer)
            after = hashing.stat_key(os.fstat(reader))
            unchanged = hashing.stat_key(before) == after
            if unchanged and vouched is not None and vouched == after:
                return written
            actual = DIGEST_PREFIX + hashing.hash_whole_file(str(target), before.st_size).hex()
            if actual != digest:
                self._discard(Path(target))
                self._set_aside(Path(blob))
                raise DamagedBlobError(
                    f"the kept copy of {name} is damaged: {blob} hashes to {actual}, not "
                    f"{digest}; it was moved to {Path(blob).name}{DAMAGED_SUFFIX} and not used"
                )
            if unchanged:
                # On disk before its stat may vouch for it: a blob kept just before a power cut
                # may not be. Free for a blob written back long ago (almost every one).
                os.fdatasync(reader)
                with self._verified_lock:
                    self._verified.append((after, bytes.fromhex(actual[len(DIGEST_PREFIX) :])))
                    since = self._verified_since
                    self._verified_since = checked_ns if since is None else min(since, checked_ns)
            return written
        except OSError as error:
            self._discard(Path(target))
            if is_disk_full(error):
                raise disk_full_error(Path(target).parent) from error
            raise WatchkeeperError(f"cannot write {target}: {error.strerror or error}") from error
        finally:
            os.close(reader)

    def remember_verified(self) -> None:
        """Let the hash cache vouch for the blobs `restore` hashed, found whole and flushed to
        disk (each one alone: a flush of the whole filesystem would also write the data just
        restored, seconds on a disk)."""
        with self._verified_lock:
            verified, since = self._verified, self._verified_since
            self._verified, self._verified_since = [], None
        if verified and since is not None:
            self.hash_cache.remember_digests(verified, checked_ns=since)

    def checked_path(self, digest: str, name: str) -> Path | None:
        """Where a blob is, once hashed and found whole (None when not stored); a damaged one
        is set aside and DamagedBlobError names it."""
        blob = self.path(digest)
        try:
            size = blob.stat().st_size
        except FileNotFoundError:
            return None
        actual = DIGEST_PREFIX + hashing.hash_whole_file(str(blob), size).hex()
        if actual != digest:
            self._set_aside(blob)
            raise DamagedBlobError(
                f"the kept copy of {name} is damaged: {blob} hashes to {actual}, not {digest}; "
                f"it was moved to {blob.name}{DAMAGED_SUFFIX} and not used"
            )
        return blob

    def read_checked(self, digest: str, name: str) -> bytes:
        """A blob's bytes, checked against its digest (DamagedBlobError when they differ)."""
        blob = self.path(digest)
        content = blob.read_bytes()
        actual = DIGEST_PREFIX + blake3.blake3(content).hexdigest()
        if actual != digest:
            self._set_aside(blob)
            raise DamagedBlobError(
                f"the kept copy of {name} is damaged: {blob} hashes to {actual}, not {digest}; "
                f"it was moved to {blob.name}{DAMAGED_SUFFIX} and not used"
            )
        return content

    def _make_folders(self, folder: Path) -> None:
        """Make a blob folder (and the store), private, unless it is there."""
        try:
            os.mkdir(folder, PRIVATE_FOLDER_MODE)
        except FileExistsError:
            return
        except FileNotFoundError:  # the store itself is not made yet
            for each in (self.root, folder):
                if not each.is_dir():
                    each.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
                    make_private(each)
            return
        make_private(folder)

    @staticmethod
    def _incoming(destination: Path) -> Path:
        return destination.parent / f"{INCOMING_PREFIX}{os.getpid()}-{destination.name[:16]}"

    @staticmethod
    def _discard(temporary: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()

    @staticmethod
    def _set_aside(blob: Path) -> None:
        with contextlib.suppress(OSError):
            os.replace(blob, blob.with_name(blob.name + DAMAGED_SUFFIX))

    @staticmethod
    def _copy_durably(source: Path, destination: Path, mode: int) -> None:
        """Copy into a new file of exactly `mode` (whatever the umask), flushed to disk."""
        with source.open("rb") as reader:
            descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(descriptor, "wb") as writer:
                os.fchmod(descriptor, mode)
                shutil.copyfileobj(reader, writer, CHUNK_BYTES)
                writer.flush()
                os.fsync(descriptor)


@contextlib.contextmanager
def gc_lock(root: Path, *, exclusive: bool) -> Iterator[None]:
    """The store's gc lock: shared for writers claiming blobs, exclusive for gc's unlinks.

    An flock, so a writer or gc killed with -9 releases it with its last descriptor.
    """
    descriptor = os.open(root / GC_LOCK_NAME, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(descriptor)


def _touch(blob: str, vouched: hashing.StatKey | None) -> hashing.StatKey | None:
    """Set a blob's times to now; its stat after the touch when `vouched` was its stat just
    before (so that what vouched for it before vouches after), else None."""
    if vouched is None:
        os.utime(blob)
        return None
    descriptor = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
    try:
        same = hashing.stat_key(os.fstat(descriptor)) == vouched
        os.utime(descriptor)
        return hashing.stat_key(os.fstat(descriptor)) if same else None
    finally:
        os.close(descriptor)


def stat_keys(paths: list[str]) -> list[hashing.StatKey | None]:
    """The stat key of each path (links followed), None where it cannot be stat'ed: thousands
    of files in one compiled call."""
    rows = _clone.stat_keys([os.fsencode(path) for path in paths]).tolist()
    return [None if min(row) < 0 else (row[0], row[1], row[2], row[3], row[4]) for row in rows]


def _clone_or_copy(source: int, destination: int, size: int) -> str:
    """Reflink `source` into `destination` where the filesystem can; else copy in the kernel."""
    try:
        fcntl.ioctl(destination, FICLONE, source)
        return "cloned"
    except OSError:
        pass
    return _copy(source, destination, size)


def _copy(source: int, destination: int, size: int) -> str:
    """Copy `size` bytes in the kernel (copy_file_range), else through a buffer."""
    copied = 0
    try:
        while copied < size:
            step = os.copy_file_range(source, destination, min(size - copied, 1 << 30))
            if step == 0:
                break
            copied += step
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.lseek(source, copied, os.SEEK_SET)
        os.lseek(destination, copied, os.SEEK_SET)
        while chunk := os.read(source, CHUNK_BYTES):
            os.write(destination, chunk)
    return "copied"


def artifact_mode(source_mode: int) -> int:
    """An artifact's mode: 0700 when its source is executable by anyone, else 0600.

    >>> oct(artifact_mode(0o100600)), oct(artifact_mode(0o100644)), oct(artifact_mode(0o100755))
    ('0o600', '0o600', '0o700')
    """
    return PRIVATE_FOLDER_MODE if source_mode & 0o111 else PRIVATE_FILE_MODE


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


def select_artifacts(artifacts: dict[str, str], wanted: list[str], label: str) -> dict[str, str]:
    """The artifacts named by `wanted` (paths, or folders holding them); all when none named.

    >>> select_artifacts({"model.pkl": "d1", "plots/a.png": "d2"}, ["plots"], "m v1")
    {'plots/a.png': 'd2'}
    """
    if not wanted:
        return dict(artifacts)
    chosen: dict[str, str] = {}
    for name in wanted:
        prefix = name.strip("/")
        matched = {
            path: digest
            for path, digest in artifacts.items()
            if path == prefix or path.startswith(prefix + "/")
        }
        if not matched:
            listing = ", ".join(sorted(artifacts)) or "none"
            raise WatchkeeperError(f"{label} has no artifact {name!r}; its artifacts: {listing}")
        chosen.update(matched)
    return chosen


def export_artifacts(
    store: ArtifactStore, artifacts: dict[str, str], out_dir: Path, *, force: bool = False
) -> list[Path]:
    """Copy artifacts (path -> digest) out of the store into `out_dir`, each checked against
    its digest; a file that exists there is overwritten only with `force`.

    Every target is checked before anything is written, so a refusal leaves `out_dir` as it
    was. Returns the files written.
    """
    targets = {path: out_dir / path for path in artifacts}
    real_out = out_dir.resolve() if out_dir.exists() else None
    for path, target in targets.items():
        parts = PurePosixPath(path).parts
        if not parts or PurePosixPath(path).is_absolute() or ".." in parts:
            raise WatchkeeperError(
                f"artifact path {path!r} leads out of {out_dir}; nothing was written (the "
                "ledger's record of this version is not to be trusted)"
            )
        if not store.has(artifacts[path]):
            raise WatchkeeperError(
                f"artifact {path} ({artifacts[path]}) is missing from the store {store.root}; "
                "it cannot be copied out (train the version again to restore it)"
            )
        if (target.exists() or target.is_symlink()) and not force:
            raise WatchkeeperError(
                f"{target} already exists; pass --force to overwrite it, or -o DIR to copy "
                "elsewhere"
            )
        escapes = target.parent.exists() and not target.parent.resolve().is_relative_to(
            real_out or out_dir.resolve()
        )
        if real_out is not None and escapes:
            raise WatchkeeperError(
                f"{target.parent} leads out of {out_dir} (a symlink); remove it or choose "
                "another -o DIR"
            )
    written = []
    for path, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_checked(store.path(artifacts[path]), target, artifacts[path], path)
        written.append(target)
    return written


def _copy_checked(source: Path, target: Path, digest: str, name: str) -> None:
    """Copy through a temporary file, hashing as it goes; rename only when the digest matches."""
    temporary = target.with_name(f".{target.name}.wk-incoming-{os.getpid()}")
    hasher = blake3.blake3()
    try:
        with source.open("rb") as reader, temporary.open("wb") as writer:
            while chunk := reader.read(CHUNK_BYTES):
                hasher.update(chunk)
                writer.write(chunk)
        actual = DIGEST_PREFIX + hasher.hexdigest()
        if actual != digest:
            raise WatchkeeperError(
                f"artifact {name} is damaged in the store ({source} hashes to {actual}, the "
                f"ledger recorded {digest}); nothing was written for it"
            )
        if target.is_symlink():
            target.unlink()
        os.replace(temporary, target)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(target.parent) from error
        raise WatchkeeperError(f"cannot write {target}: {error.strerror or error}") from error
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
