"""Watching repos and data folders with watchdog (inotify), falling back to polling per path."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pathspec
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

# Reads (open, close-without-write, access) are left out: the agent's own hashing must not
# wake it up again.
EVENT_TYPES: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]

# Filesystems whose changes made elsewhere (another host, the hypervisor) raise no inotify event.
NO_EVENT_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "fuse.sshfs",
        "fuse.rclone",
        "afs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "lustre",
        "vboxsf",
        "fuse.s3fs",
        "davfs",
        "fuse.gcsfuse",
    }
)

GIT_REF_PREFIXES = ("refs", "logs", "HEAD", "packed-refs", "FETCH_HEAD", "ORIG_HEAD")


class WatchSink(Protocol):
    """Where the watchers report what they saw (called on watchdog's dispatch thread)."""

    def git_changed(self, repo: Path) -> None: ...

    def file_saved(self, repo: Path, relative_path: str, timestamp: float) -> None: ...

    def data_changed(self, source: Path) -> None: ...

    def root_missing(self, root: Path, kind: str) -> None: ...

    def root_back(self, root: Path, kind: str) -> None: ...


@dataclass(eq=False)
class WatchedRoot:
    """One watched repo or data source and how it is being watched right now."""

    path: Path
    kind: str  # "repo" or "data"
    mode: str = "pending"  # "inotify", "polling", "covered", "missing"
    reason: str = ""
    why: str = "added by hand"
    identity: tuple[int, int] | None = None
    watch: ObservedWatch | None = None
    observer: BaseObserver | None = None
    unreadable: list[str] = field(default_factory=list)
    ignore: GitIgnoreRules | None = None

    @property
    def is_file(self) -> bool:
        return self.kind == "data" and self.path.is_file()

    @property
    def watch_dir(self) -> Path:
        return self.path.parent if self.is_file else self.path


class GitIgnoreRules:
    """A repo's ignore rules: the root and nested .gitignore files plus .git/info/exclude."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._by_dir: dict[str, pathspec.PathSpec | None] = {}
        self._lock = threading.Lock()
        exclude = repo / ".git" / "info" / "exclude"
        self._exclude = self._load(exclude)

    @staticmethod
    def _load(file: Path) -> pathspec.PathSpec | None:
        try:
            lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return None
        spec = pathspec.GitIgnoreSpec.from_lines(lines)
        return spec if len(spec) else None

    def forget(self, directory: str) -> None:
        """Drop the cached rules of one directory (its .gitignore changed)."""
        with self._lock:
            self._by_dir.pop(directory, None)

    def _spec_for(self, directory: str) -> pathspec.PathSpec | None:
        with self._lock:
            if directory not in self._by_dir:
                self._by_dir[directory] = self._load(self.repo / directory / ".gitignore")
            return self._by_dir[directory]

    def is_ignored(self, relative_path: str) -> bool:
        """True when git would ignore this working-tree path."""
        if self._exclude is not None and self._exclude.match_file(relative_path):
            return True
        parts = relative_path.split("/")
        for depth in range(len(parts)):
            directory = "/".join(parts[:depth])
            spec = self._spec_for(directory)
            if spec is None:
                continue
            below = "/".join(parts[depth:])
            if spec.match_file(below):
                return True
            # A directory pattern such as "build/" matches the folder's files too.
            for inner in range(depth + 1, len(parts)):
                if spec.match_file("/".join(parts[depth:inner]) + "/"):
                    return True
        return False


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path`, from /proc/self/mountinfo ('' if unknown)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return ""
    target = str(path.resolve())
    best, best_type = "", ""
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount_point = fields[4].replace("\\040", " ")
        fs_type = line.split(" - ", 1)[1].split()[0]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fs_type
    return best_type


def inotify_watch_count() -> int:
    """How many inotify watches this process holds (kernel truth, from /proc/self/fdinfo)."""
    total = 0
    fd_dir = Path("/proc/self/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return -1
    for fd in fds:
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            info = Path(f"/proc/self/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        total += info.count("inotify wd:")
    return total


def walk_directories(root: Path) -> tuple[int, list[str]]:
    """Count the directories below root that can be watched; list the unreadable ones."""
    unreadable: list[str] = []

    def note(error: OSError) -> None:
        if isinstance(error, PermissionError):
            unreadable.append(str(error.filename))

    count = 0
    for _dirpath, _dirnames, _filenames in os.walk(root, onerror=note):
        count += 1
    return count, unreadable


class _Router(FileSystemEventHandler):
    def __init__(self, manager: WatchManager) -> None:
        self.manager = manager

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.manager.route(event)


class WatchManager:
    """Owns the observers, decides inotify or polling per root, and routes events to a sink."""

    def __init__(
        self,
        sink: WatchSink,
        *,
        poll_interval: float = 5.0,
        health_interval: float = 2.0,
        force_polling: Callable[[Path], bool] | None = None,
    ) -> None:
        self.sink = sink
        self.poll_interval = poll_interval
        self.health_interval = health_interval
        self.force_polling = force_polling or (lambda path: False)
        self.roots: dict[tuple[Path, str], WatchedRoot] = {}
        self._lock = threading.RLock()
        self._router = _Router(self)
        self._native: BaseObserver | None = None
        self._polling: BaseObserver | None = None
        self._stopping = threading.Event()
        self._health_thread = threading.Thread(
            target=self._health_loop, name="wk-watch-health", daemon=True
        )
        self._route_table: list[tuple[str, WatchedRoot]] = []
        self.inotify_watches = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._health_thread.start()

    def _native_observer(self) -> BaseObserver:
        """The inotify observer, created on first use; raises OSError when inotify is out."""
        if self._native is None:
            observer = Observer()  # opens the inotify instance: EMFILE when none are left
            observer.start()
            self._native = observer
        return self._native

    def stop(self) -> None:
        self._stopping.set()
        observers = [o for o in (self._native, self._polling) if o is not None]
        for observer in observers:
            observer.stop()
        for observer in observers:
            with contextlib.suppress(RuntimeError):
                observer.join(timeout=2)

    # -- public API ------------------------------------------------------------------------
    def add(self, path: Path, kind: str, why: str = "added by hand") -> WatchedRoot:
        """Start watching a repo or data source (idempotent); `why` says what asked for it."""
        path = Path(os.path.abspath(path))
        with self._lock:
            root = self.roots.get((path, kind))
            if root is None:
                root = WatchedRoot(path=path, kind=kind, why=why)
                if kind == "repo":
                    root.ignore = GitIgnoreRules(path)
                self.roots[(path, kind)] = root
                self._schedule(root)
                self._rebuild_route_table()
            return root

    def remove(self, path: Path, kind: str) -> bool:
        path = Path(os.path.abspath(path))
        with self._lock:
            root = self.roots.pop((path, kind), None)
            if root is None:
                return False
            self._unschedule(root)
            self._rebuild_route_table()
            for other in self.roots.values():
                if other.mode == "covered":
                    self._unschedule(other)
                    self._schedule(other)
            return True

    def describe(self) -> list[dict[str, object]]:
        with self._lock:
            return [
                {
                    "path": str(root.path),
                    "kind": root.kind,
                    "mode": root.mode,
                    "reason": root.reason,
                    "why": root.why,
                    "unreadable": list(root.unreadable),
                }
                for root in self.roots.values()
            ]

    # -- scheduling ------------------------------------------------------------------------
    def _covering_root(self, root: WatchedRoot) -> WatchedRoot | None:
        for other in self.roots.values():
            if other is root or other.mode != "inotify":
                continue
            if root.watch_dir == other.path or root.watch_dir.is_relative_to(other.path):
                return other
        return None

    def _schedule(self, root: WatchedRoot) -> None:
        try:
            stat = os.stat(root.path)
        except OSError as error:
            root.mode, root.reason, root.identity = "missing", error.strerror or str(error), None
            log.warning(
                "watched %s %s is missing (%s); waiting for it", root.kind, root.path, root.reason
            )
            return
        root.identity = (stat.st_dev, stat.st_ino)
        recursive = not root.is_file
        covering = self._covering_root(root)
        if covering is not None:
            root.mode, root.reason = "covered", f"inside watched {covering.path}"
            return
        if recursive:
            directories, unreadable = walk_directories(root.path)
            root.unreadable = unreadable
            for denied in unreadable:
                log.warning(
                    "cannot read %s (permission denied); it is not watched, the rest of %s is",
                    denied,
                    root.path,
                )
        else:
            directories = 1
        fs_type = filesystem_type(root.watch_dir)
        if fs_type in NO_EVENT_FILESYSTEMS:
            self._schedule_polling(root, f"{fs_type} filesystems report no change events")
            return
        if self.force_polling(root.path):
            self._schedule_polling(root, "polling is configured for this path")
            return
        before = inotify_watch_count()
        try:
            native = self._native_observer()
            root.watch = native.schedule(
                self._router,
                str(root.watch_dir),
                recursive=recursive,
                event_filter=EVENT_TYPES,
            )
        except OSError as error:
            root.watch = None
            self._schedule_polling(root, f"inotify refused it: {error}")
            return
        root.observer, root.mode, root.reason = native, "inotify", ""
        after = inotify_watch_count()
        added = after - before
        expected = directories - len(root.unreadable)
        if before >= 0 and recursive and added < expected and not self._shares_watches(root):
            self._unschedule(root)
            self._schedule_polling(
                root,
                f"inotify watched only {added} of {expected} folders "
                "(fs.inotify.max_user_watches exhausted?)",
            )

    def _shares_watches(self, root: WatchedRoot) -> bool:
        """True when another scheduled root overlaps this one (its watches were reused)."""
        for other in self.roots.values():
            if other is root or other.watch is None or other.observer is not self._native:
                continue
            if other.watch_dir.is_relative_to(root.watch_dir) or root.watch_dir.is_relative_to(
                other.watch_dir
            ):
                return True
        return False

    def _schedule_polling(self, root: WatchedRoot, reason: str) -> None:
        if self._polling is None:
            self._polling = PollingObserver(timeout=self.poll_interval)
            self._polling.start()
        try:
            root.watch = self._polling.schedule(
                self._router,
                str(root.watch_dir),
                recursive=not root.is_file,
                event_filter=EVENT_TYPES,
            )
        except OSError as error:
            root.mode, root.reason = "missing", f"cannot poll it either: {error}"
            log.error("cannot watch %s at all: %s", root.path, error)
            return
        root.observer, root.mode, root.reason = self._polling, "polling", reason
        log.warning(
            "watching %s by polling every %.0f s: %s", root.path, self.poll_interval, reason
        )

    def _unschedule(self, root: WatchedRoot) -> None:
        if root.watch is not None and root.observer is not None:
            with contextlib.suppress(KeyError, OSError, RuntimeError):
                root.observer.unschedule(root.watch)
        root.watch, root.observer = None, None

    def _rebuild_route_table(self) -> None:
        table = [(str(root.watch_dir), root) for root in self.roots.values()]
        self._route_table = table

    # -- event routing (watchdog dispatch thread) -------------------------------------------
    def route(self, event: FileSystemEvent) -> None:
        paths = [os.fsdecode(event.src_path)]
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        now = time.time()
        for path in paths:
            for prefix, root in self._route_table:
                if root.mode == "missing":
                    continue
                if root.is_file:
                    if path == str(root.path):
                        self.sink.data_changed(root.path)
                    continue
                if path == prefix:
                    continue
                if not path.startswith(prefix) or path[len(prefix)] != "/":
                    continue
                relative = path[len(prefix) + 1 :]
                if root.kind == "data":
                    self.sink.data_changed(root.path)
                else:
                    self._route_repo_event(root, relative, event, now)

    def _route_repo_event(
        self, root: WatchedRoot, relative: str, event: FileSystemEvent, now: float
    ) -> None:
        if relative == ".git" or relative.startswith(".git/"):
            inside = relative[5:]
            if inside.startswith(GIT_REF_PREFIXES):
                self.sink.git_changed(root.path)
            elif inside == "info/exclude" and root.ignore is not None:
                root.ignore = GitIgnoreRules(root.path)
            return
        if event.is_directory or isinstance(event, FileDeletedEvent):
            return
        if relative.endswith(".gitignore") and root.ignore is not None:
            root.ignore.forget(relative.rpartition("/")[0])
        if root.ignore is not None and root.ignore.is_ignored(relative):
            return
        self.sink.file_saved(root.path, relative, now)

    # -- health: deleted or renamed roots, and their return ---------------------------------
    def check_roots(self) -> None:
        """Notice roots that vanished or were replaced, and roots that came back."""
        with self._lock:
            for root in list(self.roots.values()):
                try:
                    stat = os.stat(root.path)
                    identity: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
                except OSError:
                    identity = None
                if root.mode == "missing":
                    if identity is not None:
                        self._schedule(root)
                        self._rebuild_route_table()
                        if root.mode != "missing":
                            log.info("watching %s again (%s)", root.path, root.mode)
                            self.sink.root_back(root.path, root.kind)
                    continue
                if identity is None or identity != root.identity:
                    self._unschedule(root)
                    root.mode = "missing"
                    root.reason = "deleted or renamed" if identity is None else "replaced"
                    if identity is not None:
                        # Replaced by a new folder of the same name: watch the new one.
                        self._schedule(root)
                        self._rebuild_route_table()
                        self.sink.root_missing(root.path, root.kind)
                        self.sink.root_back(root.path, root.kind)
                        continue
                    log.warning("watched %s %s was deleted or renamed", root.kind, root.path)
                    self.sink.root_missing(root.path, root.kind)

    def _health_loop(self) -> None:
        while not self._stopping.wait(self.health_interval):
            try:
                self.check_roots()
                self.inotify_watches = inotify_watch_count()
            except Exception:
                log.exception("checking watched folders failed")
