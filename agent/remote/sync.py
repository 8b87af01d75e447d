"""Content-addressed upload of a folder into the remote cache, then a tree built from the cache.

One round trip tells which blobs the remote lacks; only those are sent, as framed streams on
several channels at once; the remote checks each blob before it enters the cache. What the
tree holds is `agent.remote.tree`; how it travels is `agent.remote.wire`. A folder synced before,
whose record and cache record vouch for it, is updated over SFTP alone
(`agent.remote.sftp_update`), with the helper program as the fallback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from agent.data.stat_cache import StatCache
from agent.errors import WatchkeeperError
from agent.remote.connection import (
    WINDOW_SIZE,
    RemoteSession,
    RemoteUnreachableError,
    SshConnection,
    exit_status,
)
from agent.remote.openssh_lane import OpenSshLauncher, unavailable_reason
from agent.remote.sftp_update import QuickSync, QuickSyncUnavailable, record_of
from agent.remote.tree import LocalFile, TreeHasher, hash_tree
from agent.remote.tree_record import TreeRecord, TreeRecords
from agent.remote.wire import (
    FRAME_HEADER,
    BlobItems,
    BlobLane,
    BlobQueue,
    ReplyLines,
    SessionChannel,
)

log = logging.getLogger(__name__)

__all__ = ["FRAME_HEADER", "LocalFile", "SyncReport", "TreeHasher", "hash_tree", "sync_tree"]

DEFAULT_LANES = 3
LANE_FILES = 200  # a further lane opens per this many blobs to send ...
LANE_BYTES = 16 << 20  # ... or per this many bytes
SFTP_PACKET_SIZE = 32768
# Lanes through the `ssh` client open once this much is queued to send: at paramiko's ~350 MB/s
# that is ~0.2 s of sending, about what starting ssh (a process, a login, the remote python)
# costs, so below it they would not pay; above it their cheaper bytes win.
OPENSSH_FROM_BYTES = 64 << 20
OPENSSH_LANES = 2  # one keeps a core busy encrypting; two overlap each one's waits
GROUP_BYTES = 4 << 20  # blobs are queued in groups of about this many bytes (or one large blob)
GROUP_FILES = 500  # ... or of this many blobs, so that small files too spread over the lanes


@dataclass
class SyncReport:
    """What a sync did: files in the tree, blobs sent and bytes on the wire."""

    files: int
    blobs: int
    blobs_sent: int
    blob_bytes_sent: int
    wire_bytes_sent: int
    seconds: float
    verified_with: str
    files_linked: int
    phases: dict[str, float] = field(default_factory=dict)
    cache_checked: bool = True  # the remote was asked which blobs it lacks (no local record)
    record_wrong: bool = False  # the local record listed blobs the remote cache did not hold
    route: str = "helper"  # "sftp": updated over SFTP alone; "helper": by the remote program
    remote_programs: int = 0  # remote commands started (each pays the remote shell's start-up)
    fallback: str = ""  # why an SFTP-only update was tried and given up, if it was
    bulk_transport: str = ""  # what carried most blob bytes: "openssh" (ssh processes), "paramiko"
    openssh_note: str = ""  # why ssh lanes were not used or were given up, when there was much


class _Upload:
    """One attempt at a sync over one connection: send and link, chunk after chunk.

    With a record of what the remote cache holds (`held`), blobs outside the record are sent
    straight away and the rest of the tree is built by the receiver at the end of its stream:
    one remote program, no cache check. Without one, a planner answers for each chunk which
    blobs the cache lacks. Either way the build checks every cache entry it links; an entry
    found missing there (the record was wrong) is sent again. The remote programs start first,
    so their start-up overlaps the local hashing; while the lanes send the blobs of one chunk,
    the next chunk is hashed (and checked).
    """

    def __init__(
        self,
        connection: SshConnection,
        session: RemoteSession,
        hasher: TreeHasher,
        remote_dest: str,
        lanes: int,
        held: set[bytes] | None,
        recorded: TreeRecord | None = None,
        openssh_from: int = OPENSSH_FROM_BYTES,
    ) -> None:
        self.connection = connection
        self.session = session
        self.openssh_from = openssh_from
        self.openssh: OpenSshLauncher | None = None
        self.openssh_note = ""
        self.retired: list[BlobLane] = []  # ssh lanes that failed, their blobs sent again
        self.recorded = recorded
        self.programs = 0
        self.hasher = hasher
        self.remote_dest = remote_dest
        self.held = held
        cache = session.cache_dir
        self.receive_command = session.helper_command("receive", cache, remote_dest)
        self.remote_name = session.remote.name
        self.plan: paramiko.Channel | None = None
        self.replies: ReplyLines | None = None
        if held is None:
            self.plan = connection.channel(session.helper_command("plan", cache))
            self.programs += 1
            self.replies = ReplyLines(self.plan, self.remote_name)
        self.max_lanes = max(1, lanes)
        self.queue = BlobQueue()  # shared by the lanes: a faster lane takes more
        self.queued_bytes = 0
        self.bulk_queue = self.queue  # where new blobs go: the ssh lanes' queue once they run
        self.lanes: list[BlobLane] = []
        self._add_lane()  # one starts now; more when there is much to send
        self.dispatched: dict[str, LocalFile] = {}
        self.dispatched_bytes = 0
        self.wire = 0
        self.phases: dict[str, float] = {}
        self.sent: list[LocalFile] = []
        self.record_wrong = False

    def _send_line(self, obj: dict[str, Any]) -> None:
        assert self.plan is not None
        payload = json.dumps(obj).encode() + b"\n"
        self.plan.sendall(payload)
        self.wire += len(payload)

    def _dispatch(self, chunk: list[LocalFile], missing: set[str], later: list[LocalFile]) -> None:
        by_digest: dict[str, list[LocalFile]] = {}
        for file in chunk:
            if file.digest in missing and file.digest not in self.dispatched:
                by_digest.setdefault(file.digest, []).append(file)
            else:
                later.append(file)  # already in the cache, or on its way there
        for digest, paths in by_digest.items():
            self.dispatched[digest] = paths[0]
            self.dispatched_bytes += paths[0].size
        if self._openssh_failed():
            self._give_up_openssh(self.queue)
        items = [(paths[0], paths) for paths in by_digest.values()]
        self.queued_bytes += sum(blob.size for blob, _ in items)
        self._open_openssh_lanes(self.queued_bytes - sum(lane.bytes_written for lane in self.lanes))
        while (
            self.bulk_queue is self.queue  # no ssh lanes carry the blobs
            and len(self.lanes) < self.max_lanes
            and self._worth_another_lane()
        ):
            self._add_lane()
        # Small groups, largest first: whichever lane is free takes the next.
        items.sort(key=lambda item: -item[0].size)
        group: BlobItems = []
        group_bytes = 0
        for item in items:
            group.append(item)
            group_bytes += item[0].size + 256
            if group_bytes >= GROUP_BYTES or len(group) >= GROUP_FILES:
                self.bulk_queue.put(group)
                group, group_bytes = [], 0
        if group:
            self.bulk_queue.put(group)

    def _add_lane(self) -> None:
        self.lanes.append(self._start_lane(self.queue))

    def _start_lane(self, pending: BlobQueue | None = None) -> BlobLane:
        """A lane over paramiko, on the shared queue or (None) on a queue of its own."""
        self.programs += 1
        connection, command = self.connection, self.receive_command
        lane = BlobLane(
            lambda: SessionChannel(connection.channel(command)),
            self.remote_name,
            "paramiko",
            pending,
        )
        lane.thread.start()
        return lane

    def _open_openssh_lanes(self, queued: int) -> None:
        """With much to send, add lanes whose encryption runs in `ssh` processes."""
        if self.openssh is not None or queued < self.openssh_from or self.openssh_note:
            return
        reason = self.session.openssh_refused or unavailable_reason(self.connection)
        if reason:
            self.openssh_note = reason
            log.info("remote %s: bulk upload stays on paramiko: %s", self.remote_name, reason)
            return
        self.openssh = OpenSshLauncher(self.connection, self.remote_name)
        # From now on the blobs go to the ssh lanes only: a byte through them costs this
        # machine about two thirds of the CPU it costs through paramiko, and a large upload
        # keeps every core busy.
        self.bulk_queue = BlobQueue()
        launcher, command = self.openssh, self.receive_command
        for _ in range(OPENSSH_LANES):
            self.programs += 1
            lane = BlobLane(
                lambda: launcher.open(command), self.remote_name, "openssh", self.bulk_queue
            )
            lane.thread.start()
            self.lanes.append(lane)

    def _give_up_openssh(self, into: BlobQueue) -> None:
        """After an ssh lane failed: stop them all, and queue what they had on `into`.

        Blobs an ssh lane took may or may not have reached the cache; they are sent again (a
        blob stored twice is the same blob). Later blobs go to the paramiko lanes, and this
        session uses ssh lanes no more.
        """
        ssh_lanes = [lane for lane in self.lanes if lane.transport == "openssh"]
        failed = next(lane for lane in ssh_lanes if _transport_failed(lane))
        reason = str(failed.error) or type(failed.error).__name__
        for lane in ssh_lanes:
            lane.abort()  # kills its ssh, if still running
        for lane in ssh_lanes:
            lane.thread.join()
            self.lanes.remove(lane)
            self.retired.append(lane)
            if lane.taken:
                into.put(lane.taken)
        while True:
            try:
                item = self.bulk_queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                into.put(item)
        self.bulk_queue = self.queue
        self.openssh_note = f"ssh lanes given up: {reason}"
        if not self.session.openssh_refused:
            self.session.openssh_refused = self.openssh_note
            log.warning(
                "remote %s: an ssh upload lane failed (%s); the upload goes on over paramiko",
                self.remote_name,
                reason,
            )

    def _openssh_failed(self) -> bool:
        return any(_transport_failed(lane) for lane in self.lanes)

    def _worth_another_lane(self) -> bool:
        """Another lane pays off once there are many files or many bytes to send."""
        per_lane = len(self.lanes)
        return (
            len(self.dispatched) > LANE_FILES * per_lane
            or self.dispatched_bytes > LANE_BYTES * per_lane
        )

    def run(self) -> tuple[list[LocalFile], list[LocalFile]]:
        """Hash, check and send; returns (all files, files to build from the cache)."""
        started = time.perf_counter()
        files: list[LocalFile] = []
        later: list[LocalFile] = []
        waiting: list[LocalFile] | None = None
        for chunk in self.hasher.chunks():
            files.extend(chunk)
            if self.held is not None:
                held = self.held
                unknown = {f.digest for f in chunk if bytes.fromhex(f.digest) not in held}
                self._dispatch(chunk, unknown, later)
                continue
            self._send_line({"blobs": {f.digest: f.size for f in chunk}})
            if waiting is not None:
                self._dispatch(waiting, self._missing(), later)
            waiting = chunk
        if waiting is not None:
            self._dispatch(waiting, self._missing(), later)
        self.phases["hash+check"] = time.perf_counter() - started
        return files, later

    def _missing(self) -> set[str]:
        assert self.replies is not None
        return set(self.replies.next("cache check")["missing"])

    def _materialize_request(self, later: list[LocalFile]) -> dict[str, Any]:
        request: dict[str, Any] = {
            "dest": self.remote_dest,
            "files": [[f.relative, f.digest, f.size, f.executable] for f in later],
            "links": self.hasher.links,
        }
        if self.recorded is not None:  # paths the last sync placed that the tree no longer has
            now = {f.relative for f in self.hasher.all_files()} | dict(self.hasher.links).keys()
            request["remove"] = sorted({*self.recorded.files, *self.recorded.links} - now)
        return {"materialize": request}

    def finish(self, files: list[LocalFile], later: list[LocalFile]) -> SyncReport:
        """Let the lanes end, resend what was rejected or found missing, build, and report."""
        started = time.perf_counter()
        build_on_lane = self.plan is None and len(self.lanes) == 1
        for index, lane in enumerate(self.lanes):
            lane.close(self._materialize_request(later) if build_on_lane and index == 0 else None)
        for lane in self.lanes:
            lane.thread.join()
        for lane in self.lanes:
            log.debug(
                "remote %s: a %s lane sent %d blobs, %d bytes",
                self.remote_name,
                lane.transport,
                len(lane.sent),
                lane.bytes_written,
            )
        if self._openssh_failed():
            self.queue = BlobQueue()  # the old queues hold only the ends of finished lanes
            self._give_up_openssh(self.queue)
            replacement = self._start_lane(self.queue)
            replacement.close()
            self.lanes.append(replacement)
            replacement.thread.join()
        results = [self._lane_result(lane) for lane in self.lanes]
        self.phases["send"] = time.perf_counter() - started
        verified_with = next(
            (
                str(result["verified_with"])
                for lane, result in zip(self.lanes, results, strict=True)
                if lane.sent
            ),
            "nothing sent",
        )
        linked = sum(int(result["linked"]) for result in results)
        rejected = sorted({digest for result in results for digest in result["rejected"]})
        if rejected:
            linked += self._resend(rejected, files, "rejected")
        started = time.perf_counter()
        if build_on_lane:
            built = results[0]
        elif self.plan is not None:
            self._send_line(self._materialize_request(later))
            assert self.replies is not None
            built = self.replies.next("build")
        else:
            builder = self._start_lane()
            builder.close(self._materialize_request(later))
            builder.thread.join()
            built = self._lane_result(builder)
        if "error" in built:
            raise WatchkeeperError(
                f"remote {self.remote_name}: building {self.remote_dest} failed: {built['error']}"
            )
        linked += int(built.get("built", 0))
        missing = sorted(set(built.get("missing", [])))
        if missing:  # the record (or a concurrent clean-up) was wrong: send those blobs now
            self.record_wrong = True
            linked += self._resend(missing, later, "missing")
        self.phases["build"] = time.perf_counter() - started
        if self.plan is not None:
            self.plan.shutdown_write()
            exit_status(self.plan)
            self.plan.close()
        self.wire += sum(lane.bytes_written for lane in self.retired)
        return SyncReport(
            files=len(files),
            blobs=len({f.digest for f in files}),
            blobs_sent=len(self.sent),
            blob_bytes_sent=sum(blob.size for blob in self.sent),
            wire_bytes_sent=self.wire,
            seconds=0.0,
            verified_with=verified_with,
            files_linked=linked,
            phases=self.phases,
            cache_checked=self.held is None,
            record_wrong=self.record_wrong,
            remote_programs=self.programs,
            bulk_transport=self._bulk_transport(),
            openssh_note=self.openssh_note,
        )

    def _bulk_transport(self) -> str:
        """The transport whose lanes carried the most blob bytes ("" when none were sent)."""
        carried: dict[str, int] = {}
        for lane in self.lanes:
            carried[lane.transport] = carried.get(lane.transport, 0) + sum(
                blob.size for blob in lane.sent
            )
        if not any(carried.values()):
            return ""
        return max(carried, key=lambda transport: carried[transport])

    def _lane_result(self, lane: BlobLane) -> dict[str, Any]:
        """A finished lane's reply, after the checks every lane must pass."""
        if lane.error is not None:
            raise lane.error
        assert lane.result is not None
        self.wire += lane.bytes_written
        self.sent.extend(lane.sent)
        if lane.changed:
            raise WatchkeeperError(
                f"{lane.changed[0].path} changed while it was being sent; nothing stale was "
                "kept. Sync (or train) again once it is written."
            )
        if lane.result.get("refused"):
            raise WatchkeeperError(f"the remote refused: {lane.result['refused'][0]}")
        return lane.result

    def _resend(self, digests: list[str], files: list[LocalFile], why: str) -> int:
        """Send these blobs once more on a lane of their own, linked at all their paths."""
        paths: dict[str, list[LocalFile]] = {}
        for file in files:
            if file.digest in digests:
                paths.setdefault(file.digest, []).append(file)
        retry = self._start_lane()
        retry.put([(group[0], group) for group in paths.values()])
        retry.close()
        retry.thread.join()
        result = self._lane_result(retry)
        if result["rejected"]:
            raise WatchkeeperError(
                f"the remote rejected {len(result['rejected'])} {why} blob(s) after checking "
                "them; is its disk full? See `watchkeeper remote test`."
            )
        return int(result["linked"])


def _transport_failed(lane: BlobLane) -> bool:
    """An ssh lane ended by its transport (ssh gone, refused, stalled), not by the receiver."""
    return (
        lane.transport == "openssh"
        and lane.failed
        and isinstance(lane.error, (OSError, EOFError, RemoteUnreachableError))
    )


def _upload(
    connection: SshConnection,
    session: RemoteSession,
    hasher: TreeHasher,
    remote_dest: str,
    lanes: int,
    held: set[bytes] | None,
    recorded: TreeRecord | None,
    openssh_from: int,
) -> SyncReport:
    upload = _Upload(connection, session, hasher, remote_dest, lanes, held, recorded, openssh_from)
    try:
        files, later = upload.run()
        return upload.finish(files, later)
    except BaseException:
        for lane in upload.lanes:
            lane.abort()
        if upload.plan is not None:
            upload.plan.close()
        raise
    finally:
        if upload.openssh is not None:
            upload.openssh.close()  # kills any ssh still running, removes its private folder


def cache_record_key(session: RemoteSession) -> str:
    """How the local record names a remote's upload cache: login, host, port and folder."""
    target = session.target
    return f"{target.user}@{target.hostname}:{target.port}:{session.cache_dir}"


def sync_tree(
    session: RemoteSession,
    local_root: Path,
    remote_dest: str,
    *,
    lanes: int = DEFAULT_LANES,
    hash_cache: StatCache | None = None,
    progress: Callable[[str], None] | None = None,
    exclude: frozenset[str] = frozenset(),
    chunk_files: int = 4000,
    openssh_from: int = OPENSSH_FROM_BYTES,
) -> SyncReport:
    """Make remote_dest hold local_root's files, sending only blobs the remote cache lacks.

    With a `hash_cache`, digests come from it and it keeps a record of what the remote cache
    holds, so that the next sync needs no cache check; without a record (or after the remote
    showed it wrong) the remote is asked. A folder synced before from this machine is updated
    over SFTP alone when it is as the last sync left it (`SyncReport.route` says "sftp").
    Paths the last sync placed that the tree no longer has are removed. Safe to repeat after a
    broken upload: blobs already checked are kept, others re-sent. Once `openssh_from` bytes
    are queued to send, lanes through the system `ssh` client join in (`agent.remote.
    openssh_lane`); `SyncReport.bulk_transport` says which transport carried most bytes.
    """
    started = time.perf_counter()
    hasher = TreeHasher(local_root, hash_cache, exclude, chunk_files=chunk_files)
    record_key = cache_record_key(session) if hash_cache is not None else ""
    held = hash_cache.held_digests(record_key) if hash_cache is not None else set()
    records = TreeRecords(hash_cache) if hash_cache is not None else None
    recorded, trusted = records.load(record_key, remote_dest) if records else (None, False)
    report: SyncReport | None = None
    fallback = ""
    if recorded is not None and trusted and held:
        assert records is not None
        distrust = lambda: records.distrust(record_key, remote_dest)  # noqa: E731
        report, fallback = _update_over_sftp(session, hasher, remote_dest, recorded, held, distrust)
    if report is None:
        if records is not None and recorded is not None:
            records.distrust(record_key, remote_dest)  # not to be trusted until this sync ends
        report = session.call(
            lambda connection: _upload(
                connection,
                session,
                hasher,
                remote_dest,
                lanes,
                held if held else None,
                recorded,
                openssh_from,
            ),
            what="uploading the run",
        )
        report.fallback = fallback
    hasher.remember()
    if hash_cache is not None:
        if report.record_wrong:
            hash_cache.forget_held_digests(record_key)
            held = set()
        tree = {bytes.fromhex(file.digest) for file in hasher.all_files()}
        hash_cache.add_held_digests(record_key, tree, held)
    if records is not None:
        records.save(record_key, remote_dest, record_of(hasher.all_files(), hasher.links))
    report.seconds = time.perf_counter() - started
    if progress:
        progress(
            f"sent {report.blobs_sent} of {report.blobs} blobs "
            f"({report.blob_bytes_sent / 1e6:.1f} MB) in {report.seconds:.1f} s"
            + (" through ssh" if report.bulk_transport == "openssh" else "")
        )
    return report


class _SftpOpener:
    """Logs in and opens an SFTP channel of the sync's own on a thread, while the tree is hashed.

    The channel is not the connection's shared one: its requests go back to back and their
    replies are read in bulk, which must not meet another user's requests (a log being read).
    """

    def __init__(self, session: RemoteSession) -> None:
        self.sftp: paramiko.SFTPClient | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._open, args=(session,), daemon=True)
        self.thread.start()

    def _open(self, session: RemoteSession) -> None:
        started = time.perf_counter()
        try:
            connection = session.connection()
            self.sftp = paramiko.SFTPClient.from_transport(
                connection.transport, window_size=WINDOW_SIZE, max_packet_size=SFTP_PACKET_SIZE
            )
            if self.sftp is None:
                raise RemoteUnreachableError("no SFTP subsystem")
            self.sftp.get_channel().settimeout(connection.read_timeout)
        except BaseException as error:
            self.error = error
        self.seconds = time.perf_counter() - started

    def result(self) -> paramiko.SFTPClient:
        """The SFTP client, or the error of logging in (a host key or login error included)."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.sftp is not None
        return self.sftp

    def close(self) -> None:
        self.thread.join()
        if self.sftp is not None:
            with contextlib.suppress(Exception):
                self.sftp.close()


def _update_over_sftp(
    session: RemoteSession,
    hasher: TreeHasher,
    remote_dest: str,
    recorded: TreeRecord,
    held: set[bytes],
    distrust_record: Callable[[], None],
) -> tuple[SyncReport | None, str]:
    """Update a recorded folder over SFTP alone; (None, why) when the helper must do it."""
    phases: dict[str, float] = {}
    opener = _SftpOpener(session)  # logs in while the tree is hashed
    try:
        started = time.perf_counter()
        files = hasher.all_files()
        phases["hash"] = time.perf_counter() - started
        update = QuickSync(session.cache_dir, remote_dest, recorded, held, files, hasher.links)
        plan = update.plan()
        started = time.perf_counter()
        sftp = opener.result()
        phases["connect"] = opener.seconds
        phases["connect wait"] = time.perf_counter() - started
        distrust_record()  # a sync broken from here on leaves no record to trust
        result = update.run(sftp, plan)
    except QuickSyncUnavailable as reason:
        log.info("remote %s: SFTP-only update not possible (%s)", session.remote.name, reason)
        return None, str(reason)
    except (RemoteUnreachableError, OSError, EOFError, paramiko.SSHException) as reason:
        if isinstance(reason, paramiko.AuthenticationException):
            raise
        session.drop()  # the helper starts on a new connection
        log.info("remote %s: SFTP-only update broke off (%s)", session.remote.name, reason)
        return None, str(reason) or type(reason).__name__
    finally:
        opener.close()
    phases.update(result.phases)
    return (
        SyncReport(
            files=len(files),
            blobs=len({f.digest for f in files}),
            blobs_sent=len(result.blobs_sent),
            blob_bytes_sent=sum(blob.size for blob in result.blobs_sent),
            wire_bytes_sent=result.bytes_on_wire,
            seconds=0.0,
            verified_with="blake3 here, ssh's integrity on the way"
            if result.blobs_sent
            else "nothing sent",
            files_linked=result.paths_placed,
            phases=phases,
            cache_checked=False,
            route="sftp",
            remote_programs=0,
        ),
        "",
    )
