"""Keep the content of a version's data deps in the blob store, and put it back in a worktree."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlite_utils import Database

from agent.data.fingerprint import DataFingerprint, FileEntry
from agent.data.hashing import StatKey, stat_key
from agent.data.snapshots import load_snapshot
from agent.errors import WatchkeeperError
from agent.formatting import format_size
from agent.ledger.artifacts import ArtifactStore, SourceChangedError
from agent.ledger.blobs import DATA, VersionBlob

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


def file_path(dep: str, fingerprint: DataFingerprint, relative: str) -> str:
    """The repo-relative path of one file of a data dep.

    >>> file_path("data/", DataFingerprint(Path("x"), "d", {}, "folder"), "a/b.csv")
    'data/a/b.csv'
    """
    if fingerprint.kind == "file":
        return PurePosixPath(dep).as_posix()
    return (PurePosixPath(dep) / relative).as_posix()


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
    done = 0
    with ThreadPoolExecutor(max_workers=KEEP_WORKERS) as pool:
        for dep, fingerprint in chosen.items():
            source_root = root / dep
            files = [
                (
                    source_root if fingerprint.kind == "file" else source_root / relative,
                    file_path(dep, fingerprint, relative),
                    entry,
                )
                for relative, entry in fingerprint.files.items()
            ]

            vouched = _vouched_stats(store, files)

            def keep_one(
                item: tuple[Path, str, FileEntry], vouched: dict[str, StatKey] = vouched
            ) -> tuple[str, FileEntry, str | Exception]:
                source, name, entry = item
                try:
                    how = store.keep_file(
                        source,
                        "blake3:" + entry.digest,
                        size=entry.size,
                        mtime_ns=entry.mtime_ns,
                        vouched=vouched.get(name),
                    )
                except WatchkeeperError as error:
                    return name, entry, error
                return name, entry, how

            for name, entry, outcome in pool.map(keep_one, files):
                if isinstance(outcome, SourceChangedError):
                    if keep == KEEP_ALWAYS:
                        pool.shutdown(cancel_futures=True)
                        raise WatchkeeperError(f"{outcome}; train again once it stays put")
                    kept.notes.append(f"{name} was not kept: it changed while training started")
                    continue
                if isinstance(outcome, Exception):
                    pool.shutdown(cancel_futures=True)
                    if keep == KEEP_ALWAYS:
                        raise WatchkeeperError(
                            f'keep_data = "always", and the content of {name} could not be '
                            f"kept: {outcome}"
                        )
                    kept.notes.append(f"the content of {dep} was kept only in part: {outcome}")
                    break
                kept.blobs.append(VersionBlob(DATA, name, "blake3:" + entry.digest))
                if outcome == "copied":
                    kept.copied_bytes += entry.size
                elif outcome == "cloned":
                    kept.cloned_bytes += entry.size
                done += entry.size
                if on_progress is not None:
                    on_progress(done, total)
    return kept


def _vouched_stats(
    store: ArtifactStore, files: list[tuple[Path, str, FileEntry]]
) -> dict[str, StatKey]:
    """The stat of each file to copy for which the hash cache vouches for its fingerprinted
    digest (the fingerprint just hashed it, or found it by stat): its copy needs no hashing."""
    stats: dict[str, StatKey] = {}
    for source, name, entry in files:
        if store.has("blake3:" + entry.digest):
            continue
        try:
            stats[name] = stat_key(os.stat(source))
        except OSError:
            continue  # keep_file says what is wrong with it
    found = store.hash_cache.cached_digests(list(stats.values()))
    digests = {name: entry.digest for _, name, entry in files}
    return {
        name: key
        for (name, key), digest in zip(stats.items(), found, strict=True)
        if digest is not None and digest.hex() == digests[name]
    }


@dataclass(frozen=True)
class RowChanges:
    """The rows of a tabular file removed and added from one content to another (in order)."""

    header: str
    removed: list[str]
    added: list[str]


def changed_rows(old: bytes, new: bytes) -> RowChanges:
    """The data rows (lines after the header) one content lacks and the other has.

    Rows are compared as whole lines, each as many times as it occurs:

    >>> changed_rows(b"x,y\\n1,2\\n3,4\\n", b"x,y\\n1,2\\n3,5\\n1,2\\n")
    RowChanges(header='x,y', removed=['3,4'], added=['1,2', '3,5'])
    """
    from collections import Counter

    old_lines = old.decode(errors="replace").splitlines()
    new_lines = new.decode(errors="replace").splitlines()
    old_rows, new_rows = Counter(old_lines[1:]), Counter(new_lines[1:])
    gone, came = old_rows - new_rows, new_rows - old_rows
    removed = [row for row in old_lines[1:] if gone[row] > 0 and _take(gone, row)]
    added = [row for row in new_lines[1:] if came[row] > 0 and _take(came, row)]
    return RowChanges((new_lines or old_lines or [""])[0], removed, added)


def _take(counts: dict[str, int], row: str) -> bool:
    counts[row] -= 1
    return True


def kept_content(store: ArtifactStore, digest_hex: str, name: str) -> bytes | None:
    """The kept content of a data file by its fingerprint digest (None when not kept)."""
    digest = "blake3:" + digest_hex
    return store.read_checked(digest, name) if store.has(digest) else None
