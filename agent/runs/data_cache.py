"""Keep the content of data (a version's data deps, a snapshot's files) in the blob store."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlite_utils import Database

from agent.data.fingerprint import DataFingerprint, FileEntry
from agent.data.hashing import DIGEST_PREFIX, StatKey
from agent.data.snapshots import load_snapshot
from agent.disk import disk_full_error, is_disk_full
from agent.errors import WatchkeeperError
from agent.formatting import format_size
from agent.ledger import write_transaction
from agent.ledger.artifacts import ArtifactStore, SourceChangedError, stat_keys
from agent.ledger.blobs import DATA, VersionBlob, blobs_of_snapshot, record_snapshot_blobs

KEEP_ALWAYS = "always"
KEEP_SMALL = "small"
KEEP_NEVER = "never"
KEEP_CHOICES = (KEEP_ALWAYS, KEEP_SMALL, KEEP_NEVER)
DEFAULT_KEEP_LIMIT = 1 << 30
# Files kept at once: the copies run in the kernel, so threads overlap their system calls.
KEEP_WORKERS = 4


@dataclass
class KeptData:
    """The data blobs kept for a version, what was not kept and why, and how it was kept."""

    blobs: list[VersionBlob] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    copied_bytes: int = 0
    cloned_bytes: int = 0


def file_names(dep: str, fingerprint: DataFingerprint) -> list[tuple[str, str]]:
    """(path in the fingerprint, repo-relative path) of each file of a data dep: strings
    joined, not Paths built, as a dep may hold thousands of files.

    >>> file_names("data/", DataFingerprint(Path("x"), "d", {"a/b.csv": None}, "folder"))
    [('a/b.csv', 'data/a/b.csv')]
    >>> file_names("./t.csv", DataFingerprint(Path("x"), "d", {"t.csv": None}, "file"))
    [('t.csv', 't.csv')]
    """
    prefix = PurePosixPath(dep).as_posix()
    if fingerprint.kind == "file":
        return [(relative, prefix) for relative in fingerprint.files]
    return [(relative, f"{prefix}/{relative}") for relative in fingerprint.files]


def keep_data_deps(
    db: Database,
    store: ArtifactStore,
    root: Path,
    snapshots: dict[str, int],
    keep: str,
    limit_bytes: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> KeptData:
    """Keep the content of each data dep (dep -> its snapshot id) as `keep` says.

    `small` keeps a dep whose files add up to at most `limit_bytes`; `always` keeps all and
    raises when it cannot (a full disk, a file that changed); `never` keeps nothing. Files the
    store has already are not copied again. A copy is not hashed again when the store's hash
    cache (the fingerprints' own) vouches for its file's digest by stat. Only complete blobs
    are listed: a full disk half-way leaves the files kept so far, and the note says which dep
    stopped.
    """
    kept = KeptData()
    if keep == KEEP_NEVER:
        return kept
    fingerprints = {dep: load_snapshot(db, snapshot) for dep, snapshot in snapshots.items()}
    chosen = {}
    for dep, fingerprint in fingerprints.items():
        if keep == KEEP_SMALL and fingerprint.total_bytes > limit_bytes:
            kept.notes.append(
                f"the content of {dep} was not kept: {format_size(fingerprint.total_bytes)} is "
                f"over the keep_data_limit of {format_size(limit_bytes)} "
                '(set keep_data = "always" to keep it)'
            )
        else:
            chosen[dep] = fingerprint
    total = sum(fingerprint.total_bytes for fingerprint in chosen.values())
    progress = _Progress(total, on_progress)
    with ThreadPoolExecutor(max_workers=KEEP_WORKERS) as pool:
        for dep, fingerprint in chosen.items():
            source_root = root / dep
            base = str(source_root)
            files = [
                (
                    base if fingerprint.kind == "file" else f"{base}/{relative}",
                    name,
                    fingerprint.files[relative],
                )
                for relative, name in file_names(dep, fingerprint)
            ]
            if not _keep_files(pool, store, files, dep, keep == KEEP_ALWAYS, kept, progress):
                break
    return kept


@dataclass
class _Progress:
    """Bytes kept so far out of `total`, reported to an optional callback."""

    total: int
    callback: Callable[[int, int], None] | None
    done: int = 0

    def add(self, size: int) -> None:
        self.done += size
        if self.callback is not None:
            self.callback(self.done, self.total)


def _keep_files(
    pool: ThreadPoolExecutor,
    store: ArtifactStore,
    files: list[tuple[str, str, FileEntry]],
    label: str,
    strict: bool,
    kept: KeptData,
    progress: _Progress,
    changed_note: str = "it changed while training started",
) -> bool:
    """Keep each (source, name, entry) in parallel, listing the complete blobs in `kept`.

    `strict` raises when a file cannot be kept; otherwise a note says so. Returns False when
    keeping stopped part-way (a full disk): the caller keeps nothing more.
    """
    present = store.claim_stored([DIGEST_PREFIX + entry.digest for _, _, entry in files])
    for _, name, entry in files:
        if DIGEST_PREFIX + entry.digest in present:
            kept.blobs.append(VersionBlob(DATA, name, DIGEST_PREFIX + entry.digest))
            progress.add(entry.size)
    files = [item for item in files if DIGEST_PREFIX + item[2].digest not in present]
    vouched = _vouched_stats(store, files)

    def keep_one(item: tuple[str, str, FileEntry]) -> tuple[str, FileEntry, str | Exception]:
        source, name, entry = item
        try:
            how = store.keep_file(
                source,
                DIGEST_PREFIX + entry.digest,
                size=entry.size,
                mtime_ns=entry.mtime_ns,
                vouched=vouched.get(name),
            )
        except WatchkeeperError as error:
            return name, entry, error
        except OSError as error:  # the store's folders could not be made
            if is_disk_full(error):
                return name, entry, disk_full_error(store.root)
            return name, entry, WatchkeeperError(f"cannot keep {source} in {store.root}: {error}")
        return name, entry, how

    # Clones are a few metadata updates each, which threads only contend for (2,000 files on
    # XFS: 0.09 s in one thread, 0.14 s in four); copies move bytes, which threads overlap.
    # The first file says which this store gets from these files.
    first = [keep_one(files[0])] if files else []
    rest: Iterable[tuple[str, FileEntry, str | Exception]]
    if first and first[0][2] == "cloned":  # the vouched ones in C, the others one by one
        asked = [
            (source, DIGEST_PREFIX + entry.digest, vouched.get(name))
            for source, name, entry in files[1:]
        ]
        cloned = store.clone_vouched(asked)
        rest = (
            keep_one(item) if how is None else (item[1], item[2], how)
            for item, how in zip(files[1:], cloned, strict=True)
        )
    else:
        rest = pool.map(keep_one, files[1:])
    for name, entry, outcome in itertools.chain(first, rest):
        if isinstance(outcome, SourceChangedError):
            if strict:
                pool.shutdown(cancel_futures=True)
                raise WatchkeeperError(f"{outcome}; train again once it stays put")
            kept.notes.append(f"{name} was not kept: {changed_note}")
            continue
        if isinstance(outcome, Exception):
            pool.shutdown(cancel_futures=True)
            if strict:
                raise WatchkeeperError(
                    f'keep_data = "always", and the content of {name} could not be kept: {outcome}'
                )
            kept.notes.append(f"the content of {label} was kept only in part: {outcome}")
            return False
        kept.blobs.append(VersionBlob(DATA, name, DIGEST_PREFIX + entry.digest))
        if outcome == "copied":
            kept.copied_bytes += entry.size
        elif outcome == "cloned":
            kept.cloned_bytes += entry.size
        progress.add(entry.size)
    return True


def keep_snapshot(
    db: Database,
    store: ArtifactStore,
    snapshot_id: int,
    fingerprint: DataFingerprint,
    keep: str,
    limit_bytes: int,
) -> KeptData:
    """Keep the content of a snapshot's files as `[watch] keep_data` says, and list the kept
    blobs as the snapshot's (`snapshot_blobs`) once they are all complete in the store.

    The same store and digests as training's kept data, so content kept by either is stored
    once. Nothing here fails the snapshot: what cannot be kept (over the limit, a full disk,
    a file that changed meanwhile) is said in the notes. A kill at any point leaves the
    snapshot listing only complete blobs (at worst none).

    Example::

        keep_snapshot(db, store, 3, fingerprint(Path("data")), "small", 1 << 30).notes  # []
    """
    kept = KeptData()
    if keep == KEEP_NEVER:
        return kept
    source = fingerprint.root
    if keep == KEEP_SMALL and fingerprint.total_bytes > limit_bytes:
        kept.notes.append(
            f"the content of {source} was not kept: {format_size(fingerprint.total_bytes)} is "
            f"over [watch] keep_data_limit of {format_size(limit_bytes)} "
            '(set keep_data = "always" in [watch] to keep it)'
        )
        return kept
    have = blobs_of_snapshot(db, snapshot_id)
    files = [
        (str(source if fingerprint.kind == "file" else source / relative), relative, entry)
        for relative, entry in fingerprint.files.items()
        if have.get(relative) != DIGEST_PREFIX + entry.digest
        or not store.has(DIGEST_PREFIX + entry.digest)
    ]
    if files:
        progress = _Progress(sum(entry.size for _, _, entry in files), None)
        with ThreadPoolExecutor(max_workers=KEEP_WORKERS) as pool:
            _keep_files(
                pool,
                store,
                files,
                str(source),
                False,
                kept,
                progress,
                "it changed after it was fingerprinted",
            )
    if kept.blobs:
        with write_transaction(db):
            record_snapshot_blobs(db, snapshot_id, kept.blobs)
    return kept


def _vouched_stats(
    store: ArtifactStore, files: list[tuple[str, str, FileEntry]]
) -> dict[str, StatKey]:
    """The stat of each file to copy (none the store has) for which the hash cache vouches
    for its fingerprinted digest (the fingerprint just hashed it, or found it by stat): its
    copy needs no hashing."""
    stats = {  # one that cannot be stat'ed is left to keep_file, which says what is wrong
        name: key
        for (_, name, _), key in zip(
            files, stat_keys([source for source, _, _ in files]), strict=True
        )
        if key is not None
    }
    found = store.hash_cache.cached_digests(list(stats.values()))
    digests = {name: entry.digest for _, name, entry in files}
    return {
        name: key
        for (name, key), digest in zip(stats.items(), found, strict=True)
        if digest is not None and digest.hex() == digests[name]
    }
