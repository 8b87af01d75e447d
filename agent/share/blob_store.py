"""The team's shared blob store: artifacts, data and diffs of pushed versions, by digest.

`[share] store` in `watchkeeper.toml` names either a configured SSH remote (its host key
checked by the remote layer, never added silently) or a folder (a network mount). Blobs live
under `ab/cdef…` named by their blake3 digest, are written to a temporary name and renamed
into place, and are hashed on download before they reach the local store.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import blake3
from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger import write_transaction
from agent.ledger.artifacts import (
    CHUNK_BYTES,
    DIGEST_PREFIX,
    INCOMING_PREFIX,
    ArtifactStore,
)
from agent.ledger.blobs import ARTIFACT, VersionBlob, blobs_of_version, record_version_blobs
from agent.paths import PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE

SHARED_BLOBS_FOLDER = "shared-blobs"  # under a remote's workdir
SSH_RETRY_SECONDS = 10.0  # how long an unreachable SSH store is retried before giving up


class BlobStoreError(WatchkeeperError):
    """The shared blob store cannot be reached, or holds a blob that is not what it claims."""


class SharedStore(Protocol):
    """Where the team's blobs live: asked what it has, written and read by digest."""

    description: str

    def has(self, digest: str) -> bool: ...

    def upload(self, source: Path, digest: str) -> None: ...

    def open_blob(self, digest: str) -> IO[bytes]: ...

    def close(self) -> None: ...


def blob_name(digest: str) -> str:
    """A digest's place in a store, `ab/cdef…`.

    >>> blob_name("blake3:" + "ab" * 32)[:6]
    'ab/aba'
    """
    hex_digest = digest.removeprefix(DIGEST_PREFIX)
    if len(hex_digest) != 64 or any(c not in "0123456789abcdef" for c in hex_digest):
        raise BlobStoreError(f"{digest!r} is not a blob digest (blake3:<64 hex digits>)")
    return f"{hex_digest[:2]}/{hex_digest[2:]}"


class FolderStore:
    """Blobs in a folder, usually a network mount shared by the team."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"the folder {root}"

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise BlobStoreError(
                f"the shared blob store {self.root} is not a folder (not mounted?); mount or "
                "create it, or change [share] store in watchkeeper.toml"
            )

    def has(self, digest: str) -> bool:
        self._check_root()
        return (self.root / blob_name(digest)).is_file()

    def upload(self, source: Path, digest: str) -> None:
        self._check_root()
        target = self.root / blob_name(digest)
        target.parent.mkdir(exist_ok=True)
        temporary = target.parent / f"{INCOMING_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        try:
            with source.open("rb") as reader, temporary.open("xb") as writer:
                while chunk := reader.read(CHUNK_BYTES):
                    writer.write(chunk)
                writer.flush()
                os.fsync(writer.fileno())
            os.replace(temporary, target)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise BlobStoreError(f"cannot write {target}: {error.strerror or error}") from error

    def open_blob(self, digest: str) -> IO[bytes]:
        self._check_root()
        return (self.root / blob_name(digest)).open("rb")

    def close(self) -> None:
        pass


class SshStore:
    """Blobs under `WORKDIR/shared-blobs` of a configured SSH remote, reached over SFTP."""

    def __init__(self, remote_name: str) -> None:
        from agent.remote.config import load_remote
        from agent.remote.connection import RemoteSession

        self.remote = load_remote(remote_name)
        self.session = RemoteSession(self.remote, retry_for=SSH_RETRY_SECONDS, max_delay=2.0)
        self.description = f"the remote {remote_name} ({self.remote.host})"
        self._base: str | None = None

    def _call(self, action: Callable[[Any], Any], what: str) -> Any:
        from agent.remote.connection import RemoteStalledError, RemoteUnreachableError

        try:
            return self.session.call(lambda connection: action(connection.sftp()), what=what)
        except (RemoteUnreachableError, RemoteStalledError) as error:
            raise BlobStoreError(
                f"the shared blob store {self.description} is unreachable ({error}); nothing "
                "was lost: run the command again once it is back"
            ) from error

    def base(self) -> str:
        if self._base is None:
            workdir = self.remote.workdir

            def resolve(sftp: Any) -> str:
                home = str(sftp.normalize("."))
                folder = home + workdir[1:] if workdir.startswith("~") else workdir
                folder = folder.rstrip("/") + "/" + SHARED_BLOBS_FOLDER
                path = ""
                for part in folder.strip("/").split("/"):
                    path += "/" + part
                    with contextlib.suppress(OSError):
                        sftp.mkdir(path)
                return folder

            self._base = str(self._call(resolve, "opening the shared blob store"))
        return self._base

    def has(self, digest: str) -> bool:
        path = f"{self.base()}/{blob_name(digest)}"

        def exists(sftp: Any) -> bool:
            try:
                return stat.S_ISREG(sftp.stat(path).st_mode or 0)
            except FileNotFoundError:
                return False

        return bool(self._call(exists, "looking for a blob"))

    def upload(self, source: Path, digest: str) -> None:
        name = blob_name(digest)
        folder = f"{self.base()}/{name[:2]}"
        target = f"{self.base()}/{name}"

        def send(sftp: Any) -> None:
            with contextlib.suppress(OSError):
                sftp.mkdir(folder)
            temporary = f"{folder}/{INCOMING_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
            with source.open("rb") as reader:
                sftp.putfo(reader, temporary, confirm=True)
            sftp.posix_rename(temporary, target)

        self._call(send, "uploading a blob")

    def open_blob(self, digest: str) -> IO[bytes]:
        path = f"{self.base()}/{blob_name(digest)}"

        def open_remote(sftp: Any) -> Any:
            try:
                handle = sftp.open(path, "rb")
            except FileNotFoundError:
                return None
            handle.prefetch()
            return handle

        handle = self._call(open_remote, "reading a blob")
        if handle is None:
            raise FileNotFoundError(path)
        return handle

    def close(self) -> None:
        self.session.drop()


def open_store(spec_value: str, root: Path) -> SharedStore:
    """The store that `[share] store` names: a folder when it looks like a path, else a remote.

    >>> open_store("/mnt/team-blobs", Path("/repo")).description
    'the folder /mnt/team-blobs'
    """
    if "/" in spec_value or spec_value.startswith(("~", ".")):
        folder = Path(spec_value).expanduser()
        return FolderStore(folder if folder.is_absolute() else root / folder)
    return SshStore(spec_value)


def configured_store(root: Path) -> SharedStore | None:
    """The shared store of the repo at `root`, or None when its watchkeeper.toml names none."""
    from agent.project.spec import SPEC_FILE, load_project

    if not (root / SPEC_FILE).is_file():
        return None
    project = load_project(root)
    return None if project.share_store is None else open_store(project.share_store, root)


# -- the blobs a version needs -------------------------------------------------------------------


def record_blobs(record: dict[str, Any]) -> list[VersionBlob]:
    """The blobs a shared record names: its `blobs` list, or its artifacts in older records.

    >>> record_blobs({"artifacts": {"m.pkl": "blake3:00"}})
    [VersionBlob(kind='artifact', path='m.pkl', digest='blake3:00')]
    """
    listed = record.get("blobs")
    if isinstance(listed, list):
        return [
            VersionBlob(str(kind), str(path), str(digest))
            for kind, path, digest in (item for item in listed if len(item) == 3)
        ]
    return [VersionBlob(ARTIFACT, p, str(d)) for p, d in (record.get("artifacts") or {}).items()]


def version_blobs(db: Database, version: dict[str, Any]) -> list[VersionBlob]:
    """Every blob a version needs: those listed locally, those its record names, its artifacts."""
    found = {
        (blob.kind, blob.path): blob
        for blob in (
            VersionBlob(ARTIFACT, path, str(digest))
            for path, digest in (version.get("artifacts") or {}).items()
        )
    }
    row = db.execute(
        "SELECT body FROM shared_records WHERE id = ?", [version.get("global_id")]
    ).fetchone()
    if row is not None:
        import json

        for blob in record_blobs(json.loads(row[0])):
            found[(blob.kind, blob.path)] = blob
    for kind in ("artifact", "data", "diff"):
        for path, digest in blobs_of_version(db, int(version["id"]), kind).items():
            found[(kind, path)] = VersionBlob(kind, path, digest)
    return sorted(found.values(), key=lambda blob: (blob.kind, blob.path))


# -- uploading before a push, fetching on demand -----------------------------------------------


@dataclass
class UploadReport:
    """What a push sent to the shared store: blobs uploaded and blobs it already had."""

    store: str
    uploaded: int = 0
    present: int = 0


def upload_blobs(
    store: SharedStore,
    local: ArtifactStore,
    blobs: Iterable[tuple[str, VersionBlob]],
    on_uploaded: Callable[[VersionBlob], None] = lambda blob: None,
) -> UploadReport:
    """Send the blobs (each with the label of its version) the store lacks, one by one.

    A blob missing from the local store stops the upload, naming it, before any record is
    pushed: a record never points at a blob the shared store lacks.
    """
    report = UploadReport(store.description)
    seen: set[str] = set()
    for label, blob in blobs:
        if blob.digest in seen:
            continue
        seen.add(blob.digest)
        if store.has(blob.digest):
            report.present += 1
            continue
        if not local.has(blob.digest):
            raise BlobStoreError(
                f"{blob.kind} {blob.path} of {label} ({blob.digest}) is not in the local store "
                f"{local.root}, so it cannot go to the shared store; nothing was pushed. Push "
                "the other models by name, or share records only with `push --no-blobs`"
            )
        store.upload(local.path(blob.digest), blob.digest)
        report.uploaded += 1
        on_uploaded(blob)
    return report


@dataclass
class FetchReport:
    """What an on-demand fetch did: blobs brought, and blobs the shared store lacks."""

    store: str | None
    fetched: list[VersionBlob] = field(default_factory=list)
    missing: list[VersionBlob] = field(default_factory=list)


def fetch_blobs(
    db: Database, local: ArtifactStore, version: dict[str, Any], wanted: list[VersionBlob]
) -> FetchReport:
    """Bring the `wanted` blobs the local store lacks from the repo's shared store.

    Each is hashed as it arrives and placed in the local store only when it matches its
    digest; a damaged one raises BlobStoreError naming it. Blobs fetched are listed on the
    version (`version_blobs`). Blobs the shared store lacks (or all, when none is
    configured) come back in `missing`.
    """
    absent = [blob for blob in wanted if not local.has(blob.digest)]
    if not absent:
        return FetchReport(None)
    store = configured_store(Path(version["repo_path"]))
    if store is None:
        return FetchReport(None, missing=absent)
    report = FetchReport(store.description)
    try:
        for blob in absent:
            if local.has(blob.digest):
                report.fetched.append(blob)
                continue
            try:
                reader = store.open_blob(blob.digest)
            except FileNotFoundError:
                report.missing.append(blob)
                continue
            with reader:
                _place_checked(local, reader, blob, store.description)
            report.fetched.append(blob)
    finally:
        store.close()
    if report.fetched:
        with write_transaction(db):
            record_version_blobs(db, int(version["id"]), report.fetched)
    return report


def _place_checked(local: ArtifactStore, reader: IO[bytes], blob: VersionBlob, where: str) -> None:
    """Copy a downloaded blob into the local store, renamed into place only if it hashes right."""
    target = local.path(blob.digest)
    for folder in (local.root, target.parent):
        folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
    temporary = target.parent / f"{INCOMING_PREFIX}{os.getpid()}-{target.name[:16]}"
    hasher = blake3.blake3()
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "wb") as writer:
            while chunk := reader.read(CHUNK_BYTES):
                hasher.update(chunk)
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        actual = DIGEST_PREFIX + hasher.hexdigest()
        if actual != blob.digest:
            raise BlobStoreError(
                f"{blob.kind} {blob.path} is damaged in the shared store {where}: "
                f"{blob_name(blob.digest)} hashes to {actual}, not {blob.digest}; it was not "
                "used. Ask whoever pushed it to remove it from the store and push again"
            )
        os.replace(temporary, target)
    except OSError as error:
        raise BlobStoreError(f"cannot write {target}: {error.strerror or error}") from error
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def missing_blobs_message(label: str, report: FetchReport) -> str:
    """One line naming the blobs neither the local nor the shared store has."""
    names = ", ".join(f"{blob.path} ({blob.digest[:19]}…)" for blob in report.missing)
    if report.store is None:
        return (
            f"{label}: {names} not in the local store and no shared store is configured; "
            'set [share] store = "REMOTE" or "/folder" in watchkeeper.toml to fetch them'
        )
    return (
        f"{label}: {names} missing from the local store and from the shared store "
        f"{report.store}; ask whoever trained it to run `watchkeeper push` with the store "
        "configured"
    )
