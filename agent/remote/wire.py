"""The upload's wire format: framed blobs to the remote receivers, JSON lines from the planner.

A frame is a header (digest, size, length of the links that follow), the links (NUL-separated,
each an executable flag and a relative path), the content and a CRC-32 trailer; an all-zero
header ends the stream. The remote side is `agent.remote.remote_helper`.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import blake3
import paramiko

from agent.data.hashing import stat_key
from agent.errors import WatchkeeperError
from agent.remote.connection import RemoteUnreachableError, exit_status, read_stderr_tail
from agent.remote.replies import MAX_REPLY_BYTES, HelperReplyError, check_fields, decode_object
from agent.remote.tree import LocalFile

FRAME_HEADER = struct.Struct(">32sQI")  # digest, size, length of the links JSON that follows
CRC_TRAILER = struct.Struct(">I")
END_FRAME = FRAME_HEADER.pack(b"\0" * 32, 0, 0)
READ_CHUNK = 1 << 20
SEND_BUFFER = 1 << 20


class LocalFileError(WatchkeeperError):
    """A file to send cannot be read as it was hashed: no other transport would help."""


class LaneChannel(Protocol):
    """The remote receiver's stdin and stdout, over a paramiko channel or an `ssh` process."""

    transport: str  # "paramiko" or "openssh"

    def sendall(self, data: bytes | bytearray | memoryview) -> None: ...

    def recv(self, size: int) -> bytes: ...

    def shutdown_write(self) -> None: ...

    def ended(self) -> tuple[int | None, bytes, bool]:
        """(exit status or None, the tail of stderr, whether the connection was lost)."""
        ...

    def close(self) -> None: ...


class SessionChannel:
    """A paramiko session channel as a LaneChannel."""

    transport = "paramiko"

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.sendall = channel.sendall
        self.recv = channel.recv
        self.shutdown_write = channel.shutdown_write
        self.close = channel.close

    def ended(self) -> tuple[int | None, bytes, bool]:
        status = exit_status(self.channel)
        transport = self.channel.get_transport()
        lost = transport is None or not transport.is_active()
        return status, read_stderr_tail(self.channel), lost


BlobItems = list[tuple[LocalFile, list[LocalFile]]]  # blobs, each with the files holding it
BlobQueue = queue.SimpleQueue[BlobItems | None]  # None ends the stream of the lane taking it


class BlobLane:
    """One channel running the remote receiver; a thread feeds it framed blobs from a queue.

    Lanes may share one queue, so that a faster lane takes more. Each frame names the paths the
    blob has in the destination tree, so the receiver links it there as soon as it is stored.
    `taken` keeps what the lane took, to be sent again elsewhere should its transport fail.
    """

    def __init__(
        self,
        open_channel: Callable[[], LaneChannel],
        remote_name: str,
        transport: str,
        pending: BlobQueue | None = None,
    ) -> None:
        self.open_channel = open_channel  # called on the lane's thread, so start-up overlaps
        self._channel: LaneChannel | None = None
        self.remote_name = remote_name
        self.transport = transport
        self.taken: BlobItems = []
        self.local_error = False  # the error is about a local file, not the transport
        self.pending: BlobQueue = queue.SimpleQueue() if pending is None else pending
        self.closing_request: dict[str, Any] | None = None
        self.sent: list[LocalFile] = []
        self.changed: list[LocalFile] = []
        self.bytes_written = 0
        self.read_view = memoryview(bytearray(READ_CHUNK))
        self.error: BaseException | None = None
        self.result: dict[str, Any] | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def put(self, items: BlobItems) -> None:
        """Queue blobs, each with the files of the tree that hold it."""
        self.pending.put(items)

    def close(self, request: dict[str, Any] | None = None) -> None:
        """End the stream, with a JSON request (a build of the rest of the tree) after it.

        On a shared queue this ends one lane, whichever takes it: set every lane's request
        before closing them.
        """
        if request is not None:
            self.closing_request = request
        self.pending.put(None)

    @property
    def failed(self) -> bool:
        """The lane's thread ended with an error of its transport."""
        return not self.thread.is_alive() and self.error is not None and not self.local_error

    @property
    def channel(self) -> LaneChannel:
        assert self._channel is not None, "the lane's channel is opened by its thread"
        return self._channel

    def abort(self) -> None:
        """Close the channel: the remote receiver sees the end of its input and stops."""
        self.close()
        if self._channel is not None:
            self._channel.close()

    def run(self) -> None:
        try:
            self._channel = self.open_channel()
            self._send()
            self.result = self._read_reply()
        except LocalFileError as error:
            self.local_error = True
            self.error = error
        except BaseException as error:
            self.error = error

    def _flush(self, buffer: bytearray) -> None:
        if buffer:
            self.channel.sendall(buffer)
            self.bytes_written += len(buffer)
            buffer.clear()

    def _send(self) -> None:
        buffer = bytearray()
        while True:
            try:
                item = self.pending.get_nowait()
            except queue.Empty:
                self._flush(buffer)
                item = self.pending.get()
            if item is None:
                break
            self.taken.extend(item)
            for blob, paths in item:
                self._frame(blob, paths, buffer)
        buffer += END_FRAME
        if self.closing_request is not None:
            buffer += json.dumps(self.closing_request).encode() + b"\n"
        self._flush(buffer)
        self.channel.shutdown_write()

    def _frame(self, blob: LocalFile, paths: list[LocalFile], buffer: bytearray) -> None:
        links = b"\0".join(
            (b"1" if f.executable else b"0") + os.fsencode(f.relative) for f in paths
        )
        buffer += FRAME_HEADER.pack(bytes.fromhex(blob.digest), blob.size, len(links))
        buffer += links
        if blob.content is not None:
            buffer += blob.content
            buffer += CRC_TRAILER.pack(zlib.crc32(blob.content))
            self.sent.append(blob)
            if len(buffer) >= SEND_BUFFER:
                self._flush(buffer)
            return
        crc = 0
        sent = 0
        # A settled file is checked by its stamp after the read; any other is hashed again.
        hasher = None if blob.settled and blob.stamp is not None else blake3.blake3()
        try:
            handle = open(blob.path, "rb", buffering=0)  # noqa: SIM115 - closed below
        except OSError as error:
            raise LocalFileError(f"{blob.path}: cannot be read ({error.strerror}).") from error
        with handle:
            while sent < blob.size:
                # Into one buffer of the lane's: a fresh 1 MiB per read costs page faults.
                count = handle.readinto(self.read_view[: min(READ_CHUNK, blob.size - sent)])
                if not count:
                    break
                chunk = self.read_view[:count]
                sent += count
                crc = zlib.crc32(chunk, crc)
                if hasher is not None:
                    hasher.update(chunk)
                if count >= SEND_BUFFER // 2:
                    self._flush(buffer)
                    self.channel.sendall(chunk)
                    self.bytes_written += count
                    continue
                buffer += chunk
                if len(buffer) >= SEND_BUFFER:
                    self._flush(buffer)
            unchanged = (
                hasher.hexdigest() == blob.digest
                if hasher is not None
                else stat_key(os.fstat(handle.fileno())) == blob.stamp
            )
        if sent != blob.size:
            raise LocalFileError(f"{blob.path}: it shrank while being sent; sync again.")
        if not unchanged:
            # Changed since it was hashed: a wrong checksum makes the remote discard it.
            buffer += CRC_TRAILER.pack(crc ^ 0xFFFFFFFF)
            self.changed.append(blob)
            return
        buffer += CRC_TRAILER.pack(crc)
        self.sent.append(blob)

    def _read_reply(self) -> dict[str, Any]:
        """The receiver's one JSON line (at most MAX_REPLY_BYTES), checked."""
        output = bytearray()
        while True:
            data = self.channel.recv(65536)
            if not data:
                break
            output += data
            if len(output) > MAX_REPLY_BYTES:
                raise HelperReplyError(
                    f"remote {self.remote_name}: the helper's receive reply is longer than "
                    f"{MAX_REPLY_BYTES >> 20} MiB; expected one JSON line"
                )
        status, stderr, lost = self.channel.ended()
        if status != 0:
            errors = stderr.decode(errors="replace").strip()
            if lost:
                last = f": {errors.splitlines()[-1][-300:]}" if errors else ""
                raise RemoteUnreachableError(f"remote {self.remote_name}: connection lost{last}")
            last = errors.splitlines()[-1][-300:] if errors else "no message"
            raise WatchkeeperError(
                f"remote {self.remote_name}: the helper's receive failed (exit "
                f"{'unknown' if status is None else status}): {last}"
            )
        lines = bytes(output).strip().splitlines()
        reply = decode_object(
            self.remote_name, "the helper's receive reply", lines[-1] if lines else b""
        )
        return check_fields(self.remote_name, "receive", reply)


class ReplyLines:
    """Reads one JSON reply per line from a channel (several may arrive in one packet).

    Each line is at most MAX_REPLY_BYTES and must be a JSON object with the fields its mode
    promises (see `agent.remote.replies`).
    """

    def __init__(self, channel: paramiko.Channel, remote_name: str) -> None:
        self.channel = channel
        self.remote_name = remote_name
        self.buffer = bytearray()

    def next(self, mode: str) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_REPLY_BYTES:
                raise HelperReplyError(
                    f"remote {self.remote_name}: the helper's {mode} reply is longer than "
                    f"{MAX_REPLY_BYTES >> 20} MiB; expected one JSON line"
                )
            chunk = self.channel.recv(1 << 20)
            if not chunk:
                raise self._ended(mode)
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        reply = decode_object(self.remote_name, f"the helper's {mode} reply", line)
        if "error" in reply:
            raise WatchkeeperError(
                f"remote {self.remote_name}: the helper's {mode} failed: {reply['error']!s}"
            )
        return check_fields(self.remote_name, mode, reply)

    def _ended(self, mode: str) -> Exception:
        channel = self.channel
        name = self.remote_name
        transport = channel.get_transport()
        if transport is None or not transport.is_active():
            return RemoteUnreachableError(f"remote {name}: connection lost during the {mode}")
        status = exit_status(channel)
        if status == 127:
            return WatchkeeperError(
                f"remote {name}: {mode}: the remote python was not found (exit 127)."
            )
        errors = read_stderr_tail(channel).decode(errors="replace").strip().splitlines()
        return HelperReplyError(
            f"remote {name}: the helper's {mode} ended without a reply (exit "
            f"{'unknown' if status is None else status})"
            + (f": {errors[-1][-300:]}" if errors else "")
        )
