"""The app's one client of the agent: newline-delimited JSON over QLocalSocket, never blocking."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot
from PySide6.QtNetwork import QLocalSocket

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 * 1024 * 1024
ResultCallback = Callable[[Any], None]
ErrorCallback = Callable[[str], None]


class _LineSocket(QObject):
    """A QLocalSocket that hands complete JSON lines to a callback."""

    def __init__(
        self,
        path: Path,
        on_message: Callable[[dict[str, Any]], None],
        on_state: Callable[[bool], None],
        parent: QObject,
    ) -> None:
        super().__init__(parent)
        self.path = path
        self.on_message = on_message
        self.on_state = on_state
        self.socket = QLocalSocket(self)
        self.buffer = bytearray()
        self.socket.connected.connect(self._connected)
        self.socket.disconnected.connect(self._disconnected)
        self.socket.errorOccurred.connect(self._error)
        self.socket.readyRead.connect(self._read)

    @property
    def is_connected(self) -> bool:
        return self.socket.state() == QLocalSocket.LocalSocketState.ConnectedState

    def connect_now(self) -> None:
        if self.socket.state() == QLocalSocket.LocalSocketState.UnconnectedState:
            self.buffer.clear()
            self.socket.connectToServer(str(self.path))

    def send(self, message: dict[str, Any]) -> bool:
        if not self.is_connected:
            return False
        self.socket.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        return True

    def close(self) -> None:
        self.socket.abort()

    @Slot()
    def _connected(self) -> None:
        self.on_state(True)

    @Slot()
    def _disconnected(self) -> None:
        self.on_state(False)

    @Slot(QLocalSocket.LocalSocketError)
    def _error(self, error: QLocalSocket.LocalSocketError) -> None:
        if self.socket.state() != QLocalSocket.LocalSocketState.ConnectedState:
            self.socket.abort()
            self.on_state(False)

    @Slot()
    def _read(self) -> None:
        self.buffer += bytes(self.socket.readAll().data())
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE_BYTES:
                    log.warning("dropping an oversized message from the agent")
                    self.socket.abort()
                break
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("the agent sent a line that is not JSON: %.80r", line)
                continue
            if isinstance(message, dict):
                self.on_message(message)


class AgentLink(QObject):
    """Requests and events to and from the agent, reconnecting whenever the agent restarts.

    One connection carries requests and replies; a second one is turned into the event stream
    with `subscribe`. Everything is asynchronous: `call` returns at once and the callbacks run
    later on the Qt thread.

    Example::

        link = AgentLink(paths.socket); link.start()
        link.call("train", {"model": "churn"}, on_result=print)
    """

    connection_changed = Signal(bool)
    event_received = Signal(str, object)

    def __init__(self, socket_path: Path, parent: QObject | None = None, retry_ms: int = 1000):
        super().__init__(parent)
        self.socket_path = socket_path
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, ResultCallback | None, ErrorCallback | None]] = {}
        self._requests = _LineSocket(socket_path, self._reply, self._request_state, self)
        self._events = _LineSocket(socket_path, self._event, self._event_state, self)
        self._retry = QTimer(self)
        self._retry.setInterval(retry_ms)
        self._retry.timeout.connect(self._reconnect)
        self._connected = False
        self.events_seen = 0

    @property
    def connected(self) -> bool:
        """True while the agent answers requests."""
        return self._connected

    def start(self) -> None:
        """Connect now and keep trying every second while the agent is away."""
        self._reconnect()
        self._retry.start()

    def stop(self) -> None:
        self._retry.stop()
        self._requests.close()
        self._events.close()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        on_result: ResultCallback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> int:
        """Send a request; on_result(result) or on_error(message) runs when the reply comes."""
        request_id = next(self._ids)
        message = {"id": request_id, "method": method, "params": params or {}}
        if not self._requests.send(message):
            if on_error is not None:
                QTimer.singleShot(0, self, lambda: on_error("the agent is not running"))
            return request_id
        self._pending[request_id] = (method, on_result, on_error)
        return request_id

    # ---------------------------------------------------------------- connection state

    def _reconnect(self) -> None:
        self._requests.connect_now()
        self._events.connect_now()

    def _request_state(self, is_connected: bool) -> None:
        if not is_connected:
            self._fail_pending("the agent closed the connection")
        if is_connected != self._connected:
            self._connected = is_connected
            log.info("agent %s", "connected" if is_connected else "disconnected")
            self.connection_changed.emit(is_connected)

    def _event_state(self, is_connected: bool) -> None:
        if is_connected:
            self._events.send({"id": 0, "method": "subscribe", "params": {}})

    def _fail_pending(self, message: str) -> None:
        pending, self._pending = self._pending, {}
        for _method, _on_result, on_error in pending.values():
            if on_error is not None:
                on_error(message)

    # ---------------------------------------------------------------- messages

    def _reply(self, message: dict[str, Any]) -> None:
        if "event" in message:
            self._event(message)
            return
        entry = self._pending.pop(message.get("id", -1), None)
        if entry is None:
            return
        method, on_result, on_error = entry
        if "error" in message:
            error = message["error"]
            text = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            log.info("agent %s failed: %s", method, text)
            if on_error is not None:
                on_error(str(text))
        elif on_result is not None:
            on_result(message.get("result"))

    def _event(self, message: dict[str, Any]) -> None:
        kind = message.get("event")
        if not isinstance(kind, str):
            return  # the reply to `subscribe`
        self.events_seen += 1
        self.event_received.emit(kind, message.get("data"))
