"""Content-addressed upload of a folder into the remote cache, then a tree built from the cache.

One round trip tells which blobs the remote lacks; only those are sent, as framed streams on
several channels at once; the remote checks each blob before it enters the cache. What the
tree holds is `agent.remote.tree`; how it travels is `agent.remote.wire`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.data.stat_cache import StatCache
from agent.errors import WatchkeeperError
from agent.remote.connection import RemoteSession, SshConnection, exit_status
from agent.remote.tree import LocalFile, TreeHasher, hash_tree
from agent.remote.wire import FRAME_HEADER, BlobLane, ReplyLines

__all__ = ["FRAME_HEADER", "LocalFile", "SyncReport", "TreeHasher", "hash_tree", "sync_tree"]

DEFAULT_LANES = 3
LANE_FILES = 200  # a further lane opens per this many blobs to send ...
LANE_BYTES = 16 << 20  # ... or per this many bytes


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


class _Upload:
    """One attempt at a sync over one connection: check, send and link, chunk after chunk.

    The remote programs start first, so their start-up overlaps the local hashing; while the
    lanes send the missing blobs of one chunk, the next chunk is hashed and checked.
    """

    def __init__(
        self,
        connection: SshConnection,
        session: RemoteSession,
        hasher: TreeHasher,
        remote_dest: str,
        lanes: int,
    ) -> None:
        self.connection = connection
        self.hasher = hasher
        self.remote_dest = remote_dest
        cache = session.cache_dir
        self.receive_command = session.helper_command("receive", cache, remote_dest)
        self.remote_name = session.remote.name
        self.plan = connection.channel(session.helper_command("plan", cache))
        self.replies = ReplyLines(self.plan, self.remote_name)
        self.max_lanes = max(1, lanes)
        self.lanes: list[BlobLane] = []
        self._add_lane()  # one starts now; more when there is much to send
        self.dispatched: dict[str, LocalFile] = {}
        self.dispatched_bytes = 0
        self.wire = 0
        self.phases: dict[str, float] = {}

    def _send_line(self, obj: dict[str, Any]) -> None:
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
        while len(self.lanes) < self.max_lanes and self._worth_another_lane():
            self._add_lane()
        shares: list[list[tuple[LocalFile, list[LocalFile]]]] = [[] for _ in self.lanes]
        loads = [lane.load for lane in self.lanes]
        for paths in sorted(by_digest.values(), key=lambda group: -group[0].size):
            lightest = loads.index(min(loads))
            shares[lightest].append((paths[0], paths))
            loads[lightest] += paths[0].size + 256
        for lane, share in zip(self.lanes, shares, strict=True):
            if share:
                lane.put(share)

    def _add_lane(self) -> None:
        lane = BlobLane(self.connection.channel(self.receive_command), self.remote_name)
        lane.thread.start()
        self.lanes.append(lane)

    def _worth_another_lane(self) -> bool:
        """Another lane pays off once there are many files or many bytes to send."""
        per_lane = len(self.lanes)
        return (
            len(self.dispatched) > LANE_FILES * per_lane
            or self.dispatched_bytes > LANE_BYTES * per_lane
        )

    def run(self) -> tuple[list[LocalFile], list[LocalFile], int]:
        """Returns (all files, files to build from the cache at the end, files linked by lanes)."""
        started = time.perf_counter()
        files: list[LocalFile] = []
        later: list[LocalFile] = []
        waiting: list[LocalFile] | None = None
        for chunk in self.hasher.chunks():
            files.extend(chunk)
            self._send_line({"blobs": {f.digest: f.size for f in chunk}})
            if waiting is not None:
                self._dispatch(waiting, self._missing(), later)
            waiting = chunk
        if waiting is not None:
            self._dispatch(waiting, self._missing(), later)
        self.phases["hash+check"] = time.perf_counter() - started
        for lane in self.lanes:
            lane.close()
        for lane in self.lanes:
            lane.thread.join()
        self.phases["send"] = time.perf_counter() - started - self.phases["hash+check"]
        return files, later, sum(int(lane.result["linked"]) for lane in self.lanes if lane.result)

    def _missing(self) -> set[str]:
        return set(self.replies.next("cache check")["missing"])

    def finish(self, files: list[LocalFile], later: list[LocalFile]) -> SyncReport:
        """Resend rejected blobs, build the rest of the tree from the cache, and report."""
        rejected: set[str] = set()
        verified_with = "nothing sent"
        for lane in self.lanes:
            if lane.error is not None:
                raise lane.error
            assert lane.result is not None
            self.wire += lane.bytes_written
            rejected.update(lane.result["rejected"])
            if lane.result.get("refused"):
                raise WatchkeeperError(f"the remote refused: {lane.result['refused'][0]}")
            if lane.sent:
                verified_with = str(lane.result["verified_with"])
        sent = [blob for lane in self.lanes for blob in lane.sent]
        changed = [blob for lane in self.lanes for blob in lane.changed]
        if changed:
            raise WatchkeeperError(
                f"{changed[0].path} changed while it was being sent; nothing stale was kept. "
                "Sync (or train) again once it is written."
            )
        if rejected:
            retry = BlobLane(self.connection.channel(self.receive_command), self.remote_name)
            retry.thread.start()
            retry.put([(self.dispatched[digest], []) for digest in sorted(rejected)])
            retry.close()
            retry.thread.join()
            if retry.error is not None:
                raise retry.error
            assert retry.result is not None
            self.wire += retry.bytes_written
            sent.extend(retry.sent)
            if retry.result["rejected"]:
                raise WatchkeeperError(
                    f"the remote rejected {len(retry.result['rejected'])} blob(s) twice after "
                    "checking them; is its disk full? See `watchkeeper remote test`."
                )
            later.extend(f for f in files if f.digest in rejected)
        started = time.perf_counter()
        self._send_line(
            {
                "materialize": {
                    "dest": self.remote_dest,
                    "files": [[f.relative, f.digest, f.size, f.executable] for f in later],
                    "links": self.hasher.links,
                }
            }
        )
        linked = int(self.replies.next("build")["built"])
        self.phases["build"] = time.perf_counter() - started
        self.plan.shutdown_write()
        exit_status(self.plan)
        self.plan.close()
        return SyncReport(
            files=len(files),
            blobs=len({f.digest for f in files}),
            blobs_sent=len(sent),
            blob_bytes_sent=sum(blob.size for blob in sent),
            wire_bytes_sent=self.wire,
            seconds=0.0,
            verified_with=verified_with,
            files_linked=linked,
            phases=self.phases,
        )


def _upload(
    connection: SshConnection,
    session: RemoteSession,
    hasher: TreeHasher,
    remote_dest: str,
    lanes: int,
) -> SyncReport:
    upload = _Upload(connection, session, hasher, remote_dest, lanes)
    try:
        files, later, linked_by_lanes = upload.run()
        report = upload.finish(files, later)
    except BaseException:
        for lane in upload.lanes:
            lane.close()
            lane.channel.close()  # the remote receiver sees the end of its input and stops
        upload.plan.close()
        raise
    report.files_linked += linked_by_lanes
    return report


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
) -> SyncReport:
    """Make remote_dest hold local_root's files, sending only blobs the remote cache lacks.

    Safe to repeat after a broken upload: blobs already checked are kept, others re-sent.
    """
    started = time.perf_counter()
    hasher = TreeHasher(local_root, hash_cache, exclude, chunk_files=chunk_files)
    report = session.call(
        lambda connection: _upload(connection, session, hasher, remote_dest, lanes),
        what="uploading the run",
    )
    hasher.remember()
    report.seconds = time.perf_counter() - started
    if progress:
        progress(
            f"sent {report.blobs_sent} of {report.blobs} blobs "
            f"({report.blob_bytes_sent / 1e6:.1f} MB) in {report.seconds:.1f} s"
        )
    return report
