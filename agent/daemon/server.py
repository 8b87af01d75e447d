"""The control socket server: a selector loop serving newline-delimited JSON to same-uid peers."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.daemon import protocol
from agent.errors import WatchkeeperError

log = logging.getLogger(__name__)

Handler = Callable[..., Any]

MAX_PENDING_OUTPUT_BYTES = 16 * 1024 * 1024
"""A subscriber that lets this much output pile up is too slow and gets disconnected."""

_PEERCRED = struct.Struct("3i")

_REPLY = "reply"
"""The event kind under which a request's reply is posted back to the loop."""
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FIRST_ACCEPT_PAUSE_SECONDS = 0.05
LONGEST_ACCEPT_PAUSE_SECONDS = 1.0
"""While accept() fails for lack of descriptors, new connections wait this long at most."""
SHEDDABLE_AFTER_IDLE_SECONDS = 2.0
"""Out of descriptors, a request connection quiet this long may be closed to make room."""


class MethodParamsError(Exception):
    """Raised by a handler when its params are wrong; becomes an INVALID_PARAMS reply."""


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    peer_pid: int
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    discarding_oversized: bool = False
    subscribed_to: frozenset[str] | None = None
    closing: bool = False
    requests_in_flight: int = 0
    last_active: float = field(default_factory=time.monotonic)

    def is_idle(self, now: float) -> bool:
        """True for a request connection quiet for a while with nothing in flight.

        A subscriber never is; nor is a connection just accepted, whose first line may not
        have been read yet.
        """
        return (
            now - self.last_active >= SHEDDABLE_AFTER_IDLE_SECONDS
            and self.subscribed_to is None
            and self.requests_in_flight == 0
            and not self.outbox
            and not self.inbox
        )


def peer_uid(sock: socket.socket) -> tuple[int, int]:
    """Return (pid, uid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, _gid = _PEERCRED.unpack(raw)
    return pid, uid


def bind_private_socket(path: Path) -> socket.socket:
    """Bind a listening Unix socket that is mode 0600 from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(previous_umask)
    os.chmod(path, 0o600)
    listener.listen(64)
    listener.setblocking(False)
    return listener


def remove_stale_socket(path: Path) -> bool:
    """Delete a socket file nobody answers on; raise if a live agent still serves it."""
    if not path.exists() and not path.is_symlink():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return True
    finally:
        probe.close()
    raise WatchkeeperError(f"{path}: another agent is answering on this socket; stop it first.")


def _refuse(sock: socket.socket, message: str) -> None:
    """Tell a refused peer why, then close once it has stopped talking (or after 1 s).

    Closing a Unix socket with unread input resets it and the peer would lose the reply, so
    whatever the peer sent is read and dropped first.
    """
    try:
        sock.settimeout(1.0)
        sock.sendall(protocol.error_reply(None, protocol.FORBIDDEN, message))
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        sock.close()


class ControlServer:
    """Serves requests on the control socket and streams events to subscribers.

    Requests run on a small thread pool, so a slow method never holds up the loop, and the
    loop itself never blocks on a client: a peer that connects and says nothing costs nothing.
    """

    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler],
        *,
        allowed_uid: int | None = None,
        workers: int = 4,
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._lock = threading.Lock()
        self._posted: list[tuple[_Connection | None, bytes, str | None]] = []
        self._connections: set[_Connection] = set()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wk-request")
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._accept_paused_until: float | None = None
        self._accept_pause = FIRST_ACCEPT_PAUSE_SECONDS
        self.requests_served = 0
        self.connections_shed = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the socket (removing a stale one) and start serving in a background thread."""
        if remove_stale_socket(self.path):
            log.warning("removed a stale control socket left by a previous agent: %s", self.path)
        self._listener = bind_private_socket(self.path)
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_reader, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name="wk-control-socket", daemon=True)
        self._thread.start()
        log.info("control socket listening on %s", self.path)

    def stop(self) -> None:
        """Close every connection and remove the socket file."""
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=3)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            self.path.unlink()

    # -- cross-thread entry points ---------------------------------------------------------
    def publish(self, kind: str, data: Any) -> None:
        """Send an event to every subscriber of `kind` (callable from any thread)."""
        self._post(None, protocol.event_message(kind, data), kind)

    @property
    def subscriber_count(self) -> int:
        return sum(1 for conn in list(self._connections) if conn.subscribed_to is not None)

    def _post(self, conn: _Connection | None, payload: bytes, event_kind: str | None) -> None:
        with self._lock:
            self._posted.append((conn, payload, event_kind))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_writer.send(b"\0")

    # -- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                ready = self._selector.select(timeout=self._select_timeout())
            except OSError as error:  # pragma: no cover - only on a closed selector
                log.error("control socket loop stopped: %s", error)
                break
            self._resume_accepting_when_due()
            for key, mask in ready:
                try:
                    self._dispatch_ready(key, mask)
                except Exception:
                    log.exception("control socket: unexpected error; the connection is dropped")
                    if isinstance(key.data, _Connection):
                        self._close(key.data)
        for conn in list(self._connections):
            self._close(conn)
        if self._listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._listener)
            self._listener.close()
        self._selector.close()

    def _dispatch_ready(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data == "accept":
            self._accept()
        elif key.data == "wake":
            self._drain_posted()
        else:
            conn: _Connection = key.data
            if mask & selectors.EVENT_READ:
                self._read(conn)
            if mask & selectors.EVENT_WRITE and conn in self._connections:
                self._flush(conn)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno not in _OUT_OF_DESCRIPTORS:
                    raise
                self._pause_accepting(error)
                return
            self._accept_pause = FIRST_ACCEPT_PAUSE_SECONDS
            pid, uid = peer_uid(sock)
            if uid != self.allowed_uid:
                log.warning(
                    "refused a control socket client of uid %d (pid %d); only uid %d may connect",
                    uid,
                    pid,
                    self.allowed_uid,
                )
                threading.Thread(
                    target=_refuse,
                    args=(sock, f"permission denied: uid {uid} may not use this agent"),
                    name="wk-refuse",
                    daemon=True,
                ).start()
                continue
            sock.setblocking(False)
            conn = _Connection(sock=sock, peer_pid=pid)
            self._connections.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _pause_accepting(self, error: OSError) -> None:
        """Out of descriptors: shed idle connections and stop accepting for a while.

        The pending connection stays in the listen backlog, so the listener keeps polling as
        readable; taking it out of the selector for the pause is what keeps the loop from
        spinning. Each pause in a row is twice as long, up to LONGEST_ACCEPT_PAUSE_SECONDS.
        """
        assert self._listener is not None
        shed = self._shed_idle_connections()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._accept_paused_until = time.monotonic() + self._accept_pause
        self._accept_pause = min(2 * self._accept_pause, LONGEST_ACCEPT_PAUSE_SECONDS)
        log.warning(
            "control socket: cannot accept connections (%s: %s); closing idle connections and "
            "pausing new ones for up to %.0f s",
            errno.errorcode.get(error.errno or 0, "?"),
            (error.strerror or str(error)).lower(),
            LONGEST_ACCEPT_PAUSE_SECONDS,
        )
        if shed:
            log.debug("control socket: closed %d idle connections", shed)

    def _shed_idle_connections(self) -> int:
        """Close the longest-idle quarter (at least one) of the idle request connections."""
        now = time.monotonic()
        idle = sorted(
            (conn for conn in self._connections if conn.is_idle(now)),
            key=lambda conn: conn.last_active,
        )
        victims = idle[: max(1, len(idle) // 4)] if idle else []
        for conn in victims:
            self._close(conn)
        self.connections_shed += len(victims)
        return len(victims)

    def _select_timeout(self) -> float:
        if self._accept_paused_until is None:
            return 5.0
        return max(0.0, min(5.0, self._accept_paused_until - time.monotonic()))

    def _resume_accepting_when_due(self) -> None:
        if self._accept_paused_until is None or time.monotonic() < self._accept_paused_until:
            return
        self._accept_paused_until = None
        if self._listener is not None:
            self._selector.register(self._listener, selectors.EVENT_READ, "accept")

    def _drain_posted(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_reader.recv(4096):
                pass
        with self._lock:
            posted, self._posted = self._posted, []
        touched: set[_Connection] = set()
        for conn, payload, event_kind in posted:
            if conn is not None and event_kind is _REPLY:
                conn.requests_in_flight -= 1
                conn.last_active = time.monotonic()
            if conn is None:
                for subscriber in self._connections:
                    wanted = subscriber.subscribed_to
                    if wanted is not None and (not wanted or event_kind in wanted):
                        subscriber.outbox += payload
                        touched.add(subscriber)
            elif conn in self._connections:
                conn.outbox += payload
                touched.add(conn)
        for conn in touched:
            if len(conn.outbox) > MAX_PENDING_OUTPUT_BYTES:
                log.warning("dropping a subscriber (pid %d) that reads too slowly", conn.peer_pid)
                self._close(conn)
            else:
                self._flush(conn)

    def _read(self, conn: _Connection) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)
            return
        conn.last_active = time.monotonic()
        conn.inbox += chunk
        while True:
            newline = conn.inbox.find(b"\n")
            if newline < 0:
                if len(conn.inbox) > protocol.MAX_MESSAGE_BYTES:
                    if not conn.discarding_oversized:
                        self._queue(
                            conn,
                            protocol.error_reply(
                                None,
                                protocol.MESSAGE_TOO_LARGE,
                                f"message longer than {protocol.MAX_MESSAGE_BYTES} bytes; "
                                "it was discarded",
                            ),
                        )
                    conn.discarding_oversized = True
                    conn.inbox.clear()
                return
            line = bytes(conn.inbox[:newline])
            del conn.inbox[: newline + 1]
            if conn.discarding_oversized:
                conn.discarding_oversized = False
                continue
            if len(line) > protocol.MAX_MESSAGE_BYTES:
                self._queue(
                    conn,
                    protocol.error_reply(
                        None,
                        protocol.MESSAGE_TOO_LARGE,
                        f"message longer than {protocol.MAX_MESSAGE_BYTES} bytes; it was discarded",
                    ),
                )
                continue
            if line.strip():
                self._handle_line(conn, line)

    def _handle_line(self, conn: _Connection, line: bytes) -> None:
        try:
            request_id, method, params = protocol.parse_request(line)
        except protocol.ProtocolError as error:
            self._queue(
                conn, protocol.error_reply(protocol.request_id_of(line), error.code, error.message)
            )
            return
        if method == "subscribe":
            self._subscribe(conn, request_id, params)
            return
        handler = self.handlers.get(method)
        if handler is None:
            known = ", ".join(sorted([*self.handlers, "subscribe"]))
            self._queue(
                conn,
                protocol.error_reply(
                    request_id,
                    protocol.METHOD_NOT_FOUND,
                    f"unknown method {method!r}; known methods: {known}",
                ),
            )
            return
        conn.requests_in_flight += 1
        self._pool.submit(self._run_handler, conn, request_id, method, handler, params)

    def _subscribe(self, conn: _Connection, request_id: Any, params: dict[str, Any]) -> None:
        events = params.get("events")
        if events is None:
            wanted: frozenset[str] = frozenset()
        elif isinstance(events, list) and all(kind in protocol.EVENT_KINDS for kind in events):
            wanted = frozenset(events)
        else:
            self._queue(
                conn,
                protocol.error_reply(
                    request_id,
                    protocol.INVALID_PARAMS,
                    f'"events" must be a list drawn from {", ".join(protocol.EVENT_KINDS)}',
                ),
            )
            return
        conn.subscribed_to = wanted
        self._queue(
            conn,
            protocol.reply(request_id, {"subscribed": sorted(wanted or protocol.EVENT_KINDS)}),
        )

    def _run_handler(
        self, conn: _Connection, request_id: Any, method: str, handler: Handler, params: Any
    ) -> None:
        try:
            protocol.check_params(method, handler, params)
        except protocol.ProtocolError as error:
            self._post(conn, protocol.error_reply(request_id, error.code, error.message), _REPLY)
            return
        try:
            result = handler(**params)
            payload = protocol.reply(request_id, result)
        except MethodParamsError as error:
            payload = protocol.error_reply(request_id, protocol.INVALID_PARAMS, str(error))
        except WatchkeeperError as error:
            payload = protocol.error_reply(request_id, protocol.APPLICATION_ERROR, str(error))
        except Exception as error:
            log.exception("control socket method %s failed", method)
            payload = protocol.error_reply(
                request_id, protocol.INTERNAL_ERROR, f"{method} failed: {error}"
            )
        self.requests_served += 1
        self._post(conn, payload, _REPLY)

    def _queue(self, conn: _Connection, payload: bytes) -> None:
        conn.outbox += payload
        self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        while conn.outbox:
            try:
                sent = conn.sock.send(conn.outbox)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if error.errno not in (errno.EPIPE, errno.ECONNRESET):
                    log.debug("control socket send failed: %s", error)
                self._close(conn)
                return
            del conn.outbox[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbox else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(conn.sock, events, conn)

    def _close(self, conn: _Connection) -> None:
        if conn not in self._connections:
            return
        self._connections.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()
