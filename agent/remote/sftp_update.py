"""An incremental sync over the SFTP channel alone: no remote program, so no remote shell start-up.

Used when the local side recorded both the remote folder (`agent.remote.tree_record`) and what
the remote cache holds. It lists the folder and checks it against the record, uploads the few
missing blobs to temporary names in the cache, renames them into place once every write was
acknowledged, then swaps only the changed paths (a hard link to a temporary name, renamed over
the old file) and removes the deleted ones. Requests go back to back, replies are read after:
about three round trips in all. Anything unexpected raises `QuickSyncUnavailable`, and the
caller falls back to the remote helper program, which checks and repairs everything.
"""

from __future__ import annotations

import os
import secrets
import stat
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import blake3
import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_FSETSTAT,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_LSTAT,
    CMD_MKDIR,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_REMOVE,
    CMD_RMDIR,
    CMD_SETSTAT,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_OK,
)
from paramiko.sftp_attr import SFTPAttributes

from agent.remote.remote_helper import VERIFIED_MTIME
from agent.remote.tree import LocalFile
from agent.remote.tree_record import RecordedFile, TreeRecord, folders_of, safe_relative

MAX_FILES = 20_000  # a larger folder is checked by the helper (listing it costs too much)
MAX_CHANGED_PATHS = 2_000
MAX_UPLOAD_BYTES = 64 << 20  # more than this goes on the helper's parallel lanes
SAMPLED_BLOBS = 8  # cache entries of unchanged files looked at, to notice an emptied cache
WRITE_CHUNK = 64 << 10
ENTRIES_PER_READDIR = 100  # what OpenSSH's sftp-server sends at most per READDIR reply
OPEN_WRITE_NEW = 0x02 | 0x08 | 0x10 | 0x20  # SSH_FXF_WRITE | CREAT | TRUNC | EXCL


# (paths to place, paths to remove, blobs to upload by digest)
Plan = tuple[dict[str, LocalFile], list[str], dict[str, LocalFile]]


class QuickSyncUnavailable(Exception):
    """The folder or cache is not as recorded, or a request failed: use the helper instead."""


@dataclass
class QuickSyncResult:
    """What the SFTP-only sync did."""

    blobs_sent: list[LocalFile]
    bytes_on_wire: int
    paths_placed: int
    paths_removed: int
    phases: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """SFTP requests sent back to back on one channel; their replies are read afterwards.

    OpenSSH's sftp-server handles requests in the order they arrive, so a request may depend on
    an earlier one of the same batch (a link into a folder made just before).
    """

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        self.sent: list[int] = []
        self.bytes_sent = 0

    def request(self, kind: int, *args: object) -> int:
        message = Message()
        number = self.sftp.request_number
        self.sftp.request_number += 1
        message.add_int(number)
        for item in args:
            if isinstance(item, SFTPAttributes):
                item._pack(message)
            elif isinstance(item, int):
                message.add_int(item)
            elif isinstance(item, _Int64):
                message.add_int64(item.value)
            else:
                message.add_string(item)
        packet = message.asbytes()
        self.sftp._send_packet(kind, message)
        self.bytes_sent += len(packet) + 5
        self.sent.append(number)
        return number

    def extended(self, name: str, *args: object) -> int:
        return self.request(CMD_EXTENDED, name, *args)

    def replies(self) -> dict[int, tuple[int, Message]]:
        """Every reply of the requests sent since the last call, by request number."""
        wanted = set(self.sent)
        found: dict[int, tuple[int, Message]] = {}
        while wanted:
            kind, data = self.sftp._read_packet()
            message = Message(data)
            number = message.get_int()
            if number in wanted:
                wanted.discard(number)
                found[number] = (kind, message)
        self.sent = []
        return found


@dataclass(frozen=True)
class _Int64:
    value: int


class ListedEntry(NamedTuple):
    """What a folder listing says of one entry (SFTP version 3 attributes)."""

    size: int
    mode: int
    mtime: int


_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_FLAG_SIZE, _FLAG_UIDGID, _FLAG_PERMISSIONS, _FLAG_TIMES, _FLAG_EXTENDED = 1, 2, 4, 8, 1 << 31


def parse_names(data: bytes) -> dict[str, ListedEntry]:
    """The entries of an SSH_FXP_NAME reply (after its request number), by name.

    A missing size, mode or time reads as -1 or 0, which no check accepts.
    """
    found: dict[str, ListedEntry] = {}
    (count,) = _U32.unpack_from(data, 0)
    at = 4
    for _ in range(count):
        (length,) = _U32.unpack_from(data, at)
        name = data[at + 4 : at + 4 + length]
        at += 4 + length
        (length,) = _U32.unpack_from(data, at)  # the long name, not needed
        at += 4 + length
        (flags,) = _U32.unpack_from(data, at)
        at += 4
        size, mode, mtime = -1, 0, -1
        if flags & _FLAG_SIZE:
            (size,) = _U64.unpack_from(data, at)
            at += 8
        if flags & _FLAG_UIDGID:
            at += 8
        if flags & _FLAG_PERMISSIONS:
            (mode,) = _U32.unpack_from(data, at)
            at += 4
        if flags & _FLAG_TIMES:
            (mtime,) = _U32.unpack_from(data, at + 4)
            at += 8
        if flags & _FLAG_EXTENDED:
            (pairs,) = _U32.unpack_from(data, at)
            at += 4
            for _ in range(2 * pairs):
                (length,) = _U32.unpack_from(data, at)
                at += 4 + length
        found[os.fsdecode(name)] = ListedEntry(size, mode, mtime)
    return found


def status_ok(reply: tuple[int, Message]) -> bool:
    kind, message = reply
    return kind == CMD_STATUS and message.get_int() == SFTP_OK


def _status_code(reply: tuple[int, Message]) -> int | None:
    kind, message = reply
    return message.get_int() if kind == CMD_STATUS else None


def _attributes(reply: tuple[int, Message]) -> SFTPAttributes | None:
    kind, message = reply
    return SFTPAttributes._from_msg(message) if kind == CMD_ATTRS else None


def _handle(reply: tuple[int, Message], what: str) -> bytes:
    kind, message = reply
    if kind != CMD_HANDLE:
        raise QuickSyncUnavailable(f"cannot open {what}")
    return bytes(message.get_binary())


def _trusted_entry(attributes: SFTPAttributes | None, size: int) -> bool:
    """Like the helper's `valid_entry`: a regular file of the right size, marked as checked."""
    return (
        attributes is not None
        and attributes.st_mode is not None
        and stat.S_ISREG(attributes.st_mode)
        and attributes.st_size == size
        and attributes.st_mtime == VERIFIED_MTIME
    )


def _encoded(path: str) -> bytes:
    return os.fsencode(path)


class QuickSync:
    """One SFTP-only update of `dest` from `recorded` to the tree of `files` and `links`."""

    def __init__(
        self,
        cache_dir: str,
        dest: str,
        recorded: TreeRecord,
        held: set[bytes],
        files: list[LocalFile],
        links: list[tuple[str, str]],
    ) -> None:
        self.pipeline: Pipeline
        self.cache_dir = cache_dir
        self.dest = dest.rstrip("/") or "/"
        self.recorded = recorded
        self.held = held
        self.files = {safe_relative(f.relative): f for f in files}
        self.links = {safe_relative(relative): target for relative, target in links}
        self.token = secrets.token_hex(8)
        self.phases: dict[str, float] = {}
        self._size_checks: dict[str, int] = {}
        self._listing: dict[str, list[int]] = {}
        self._replies: dict[int, tuple[int, Message]] = {}

    @property
    def _suffix(self) -> bytes:
        return f".wk-new-{self.token}".encode()

    def remote(self, relative: str) -> bytes:
        """The remote path of a relative path of the tree (the folder itself for "")."""
        return _encoded(self.dest + "/" + relative if relative else self.dest)

    def blob(self, digest: str) -> bytes:
        return _encoded(f"{self.cache_dir}/blobs/{digest}")

    def plan(self) -> Plan:
        """(paths to place, paths to remove, blobs to upload by digest), or unavailable."""
        if len(self.recorded.files) > MAX_FILES or len(self.files) > MAX_FILES:
            raise QuickSyncUnavailable("too many files to check over SFTP")
        if self.links != self.recorded.links:
            raise QuickSyncUnavailable("the tree's symlinks changed")
        place = {
            relative: file
            for relative, file in self.files.items()
            if self.recorded.files.get(relative)
            != RecordedFile(file.digest, file.size, file.executable)
        }
        remove = sorted(set(self.recorded.files) - set(self.files))
        upload: dict[str, LocalFile] = {}
        for file in place.values():
            if bytes.fromhex(file.digest) not in self.held:
                upload.setdefault(file.digest, file)
        if len(place) + len(remove) > MAX_CHANGED_PATHS:
            raise QuickSyncUnavailable("too many changed paths")
        if sum(file.size for file in upload.values()) > MAX_UPLOAD_BYTES:
            raise QuickSyncUnavailable("too much to send on one channel")
        return place, remove, upload

    def run(self, sftp: paramiko.SFTPClient, plan: Plan) -> QuickSyncResult:
        """Check, send, swap; raises QuickSyncUnavailable (or a network error) on any surprise."""
        self.pipeline = Pipeline(sftp)
        started = time.perf_counter()
        place, remove, upload = plan
        reused = sorted({f.digest for f in place.values()} - set(upload))
        handles = self._open_folders_and_uploads(place, reused, upload)
        self.phases["check"] = time.perf_counter() - started
        started = time.perf_counter()
        staged = self._write_uploads(upload, handles)
        self._check_folders(handles["folders"])
        self.phases["send"] = time.perf_counter() - started
        started = time.perf_counter()
        self._swap(place, remove, staged)
        self.phases["swap"] = time.perf_counter() - started
        return QuickSyncResult(
            blobs_sent=list(upload.values()),
            bytes_on_wire=self.pipeline.bytes_sent,
            paths_placed=len(place),
            paths_removed=len(remove),
            phases=self.phases,
        )

    # -- round trip 1: open the folders to list, look at cache entries, open upload files -------
    def _open_folders_and_uploads(
        self, place: dict[str, LocalFile], reused: list[str], upload: dict[str, LocalFile]
    ) -> dict[str, dict[str, bytes]]:
        pipeline = self.pipeline
        folders = sorted(self.recorded.folders())
        opened = {folder: pipeline.request(CMD_OPENDIR, self.remote(folder)) for folder in folders}
        unchanged = sorted(
            {f.digest for rel, f in self.files.items() if rel not in place} - set(reused)
        )
        step = max(1, len(unchanged) // SAMPLED_BLOBS)
        sampled = unchanged[::step][:SAMPLED_BLOBS]
        sizes = {f.digest: f.size for f in self.files.values()}
        looked = {
            digest: pipeline.request(CMD_LSTAT, self.blob(digest)) for digest in reused + sampled
        }
        made_tmp = pipeline.request(CMD_MKDIR, _encoded(f"{self.cache_dir}/tmp"), SFTPAttributes())
        attributes = SFTPAttributes()
        attributes.st_mode = 0o600
        uploads = {
            digest: pipeline.request(CMD_OPEN, self._staging(digest), OPEN_WRITE_NEW, attributes)
            for digest in upload
        }
        replies = pipeline.replies()
        del made_tmp  # it exists already, or was made now: the opens tell
        for digest, number in looked.items():
            if not _trusted_entry(_attributes(replies[number]), sizes[digest]):
                raise QuickSyncUnavailable(f"cache entry {digest[:12]} is missing or damaged")
        handles: dict[str, dict[str, bytes]] = {"folders": {}, "uploads": {}}
        problem = None
        for folder, number in opened.items():
            try:
                handles["folders"][folder] = _handle(replies[number], f"folder {folder!r}")
            except QuickSyncUnavailable as error:
                problem = problem or error
        for digest, number in uploads.items():
            try:
                handles["uploads"][digest] = _handle(replies[number], "a staging file")
            except QuickSyncUnavailable as error:
                problem = problem or error
        if problem is not None:
            self._close_all([*handles["folders"].values(), *handles["uploads"].values()])
            self._remove_staged(list(handles["uploads"]))
            raise problem
        return handles

    def _staging(self, digest: str) -> bytes:
        return _encoded(f"{self.cache_dir}/tmp/sftp-{self.token}-{digest}")

    # -- round trip 2: write the blobs, list the folders ---------------------------------------
    def _write_uploads(
        self, upload: dict[str, LocalFile], handles: dict[str, dict[str, bytes]]
    ) -> list[str]:
        """Send each blob's bytes (hashed again as they are read); returns the digests staged."""
        pipeline = self.pipeline
        folder_handles = handles["folders"]
        expected = self._expected_entries()
        for folder, handle in folder_handles.items():
            reads = expected.get(folder, 0) // ENTRIES_PER_READDIR + 2
            self._listing[folder] = [pipeline.request(CMD_READDIR, handle) for _ in range(reads)]
        checks: list[int] = []
        changed: list[str] = []
        for digest, file in upload.items():
            handle = handles["uploads"][digest]
            if not self._send_content(file, handle, checks):
                changed.append(digest)
            marked = SFTPAttributes()
            marked.st_mode = 0o444
            marked.st_atime = marked.st_mtime = VERIFIED_MTIME
            checks.append(pipeline.request(CMD_FSETSTAT, handle, marked))
            self._size_checks[digest] = pipeline.request(CMD_FSTAT, handle)
            checks.append(pipeline.request(CMD_CLOSE, handle))
        self._replies = pipeline.replies()
        failed = [n for n in checks if not status_ok(self._replies[n])]
        wrong_size = [
            digest
            for digest, number in self._size_checks.items()
            if (_attributes(self._replies[number]) or SFTPAttributes()).st_size
            != upload[digest].size
        ]
        if failed or wrong_size or changed:
            self._close_all(list(folder_handles.values()))
            self._remove_staged(list(upload))
            why = "changed while being read" if changed else "a write failed"
            raise QuickSyncUnavailable(f"staging a blob: {why}")
        return list(upload)

    def _send_content(self, file: LocalFile, handle: bytes, checks: list[int]) -> bool:
        """Queue the writes of one blob; False when its content no longer has its digest."""
        hasher = blake3.blake3()
        offset = 0
        if file.content is not None:
            chunks: Iterable[bytes] = [file.content]
        else:
            chunks = _read_chunks(file.path, file.size)
        for chunk in chunks:
            hasher.update(chunk)
            for start in range(0, len(chunk), WRITE_CHUNK):
                piece = chunk[start : start + WRITE_CHUNK]
                checks.append(self.pipeline.request(CMD_WRITE, handle, _Int64(offset), piece))
                offset += len(piece)
        return offset == file.size and hasher.hexdigest() == file.digest

    def _expected_entries(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for relative in [*self.recorded.files, *self.recorded.links, *self.recorded.folders()]:
            if relative:
                parent = relative.rpartition("/")[0]
                counts[parent] = counts.get(parent, 0) + 1
        return counts

    def _check_folders(self, folder_handles: dict[str, bytes]) -> None:
        """Every recorded path must be in its folder as left: kind, size, check mark, mode."""
        found: dict[str, dict[str, ListedEntry]] = {folder: {} for folder in folder_handles}
        more: dict[str, bytes] = {}
        replies = self._replies
        while True:
            for folder, numbers in self._listing.items():
                ended = False
                for number in numbers:
                    kind, message = replies[number]
                    if kind == CMD_NAME:
                        found[folder].update(parse_names(message.get_remainder()))
                    elif _status_code((kind, message)) == SFTP_EOF:
                        ended = True
                        break
                    else:
                        self._close_all(list(folder_handles.values()))
                        raise QuickSyncUnavailable(f"cannot list folder {folder!r}")
                if not ended:
                    more[folder] = folder_handles[folder]
            if not more:
                break
            self._listing = {
                folder: [self.pipeline.request(CMD_READDIR, handle) for _ in range(4)]
                for folder, handle in more.items()
            }
            replies = self.pipeline.replies()
            more = {}
        for handle in folder_handles.values():
            self.pipeline.request(CMD_CLOSE, handle)  # replies read with the next batch
        self._verify_listing(found)

    def _verify_listing(self, found: dict[str, dict[str, ListedEntry]]) -> None:
        for folder in self.recorded.folders() - {""}:
            parent, _, name = folder.rpartition("/")
            entry = found.get(parent, {}).get(name)
            if entry is None or not stat.S_ISDIR(entry.mode):  # a symlink could lead outside
                raise QuickSyncUnavailable(f"{folder} is no longer a folder")
        for relative, recorded in self.recorded.files.items():
            folder, _, name = relative.rpartition("/")
            entry = found.get(folder, {}).get(name)
            if entry is None or not (
                stat.S_ISREG(entry.mode)
                and entry.size == recorded.size
                and entry.mtime == VERIFIED_MTIME
            ):
                raise QuickSyncUnavailable(f"{relative} is not as the last sync left it")
            if recorded.executable and not entry.mode & 0o111:
                raise QuickSyncUnavailable(f"{relative} lost its executable bit")
        for relative in self.recorded.links:
            folder, _, name = relative.rpartition("/")
            entry = found.get(folder, {}).get(name)
            if entry is None or not stat.S_ISLNK(entry.mode):
                raise QuickSyncUnavailable(f"{relative} is no longer a symlink")

    # -- round trip 3: rename blobs into the cache, swap the changed paths -----------------------
    def _swap(self, place: dict[str, LocalFile], remove: list[str], staged: list[str]) -> None:
        pipeline = self.pipeline
        needed: list[int] = []
        for digest in staged:
            needed.append(
                pipeline.extended(
                    "posix-rename@openssh.com", self._staging(digest), self.blob(digest)
                )
            )
        for relative in remove:
            needed.append(pipeline.request(CMD_REMOVE, self.remote(relative)))
        old_folders = self.recorded.folders()
        new_folders = folders_of([*self.files, *self.links])
        for folder in sorted(old_folders - new_folders, key=lambda f: -f.count("/")):
            pipeline.request(CMD_RMDIR, self.remote(folder))  # left alone if not empty
        for folder in sorted(new_folders - old_folders, key=lambda f: f.count("/")):
            needed.append(pipeline.request(CMD_MKDIR, self.remote(folder), SFTPAttributes()))
        executable = SFTPAttributes()
        executable.st_mode = 0o555
        for relative, file in place.items():
            before = self.recorded.files.get(relative)
            if before is None or before.digest != file.digest:
                temporary = self.remote(relative) + self._suffix
                needed.append(
                    pipeline.extended("hardlink@openssh.com", self.blob(file.digest), temporary)
                )
                needed.append(
                    pipeline.extended("posix-rename@openssh.com", temporary, self.remote(relative))
                )
                # A rename onto another link of the same file leaves both names: drop ours.
                pipeline.request(CMD_REMOVE, temporary)
            # As the helper does, the executable bit is set on the (shared) cache entry; a
            # file that only loses it keeps it, since other paths may share that entry.
            if file.executable:
                needed.append(pipeline.request(CMD_SETSTAT, self.remote(relative), executable))
        replies = pipeline.replies()
        failed = [number for number in needed if not status_ok(replies[number])]
        if failed:
            for relative in place:  # leave no temporary link behind in the folder
                pipeline.request(CMD_REMOVE, self.remote(relative) + self._suffix)
            pipeline.replies()
            raise QuickSyncUnavailable("a link or rename in the remote folder failed")

    # -- clean-up on the way out -----------------------------------------------------------------
    def _close_all(self, handles: list[bytes]) -> None:
        for handle in handles:
            self.pipeline.request(CMD_CLOSE, handle)
        self.pipeline.replies()

    def _remove_staged(self, digests: list[str]) -> None:
        for digest in digests:
            self.pipeline.request(CMD_REMOVE, self._staging(digest))
        self.pipeline.replies()


def _read_chunks(path: str, size: int) -> Iterable[bytes]:
    with open(path, "rb") as handle:
        remaining = size
        while remaining > 0:
            chunk = handle.read(min(1 << 20, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def record_of(files: list[LocalFile], links: list[tuple[str, str]]) -> TreeRecord:
    """The record of a tree as a sync leaves it in the remote folder."""
    return TreeRecord(
        {f.relative: RecordedFile(f.digest, f.size, f.executable) for f in files},
        dict(links),
    )
