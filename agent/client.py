"""A plain-socket client of the agent's control socket, used by the CLI and by tests."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths


class AgentCallError(WatchkeeperError):
    """The agent answered a request with an error reply."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(message)
        self.method = method
        self.code = code


class AgentClient:
    """One connection to the agent.

    >>> client = AgentClient.connect_or_none()
    >>> client is None or "pid" in client.call("status")
    True
    """

    def __init__(self, sock: socket.socket, *, timeout: float | None = 30.0) -> None:
        self._sock = sock
        self._sock.settimeout(timeout)
        self._reader = sock.makefile("rb")
        self._ids = itertools.count(1)

    @classmethod
    def connect(cls, path: Path | None = None, *, timeout: float | None = 30.0) -> AgentClient:
        """Connect to the agent's socket or raise WatchkeeperError when no agent answers."""
        path = path or WatchkeeperPaths.from_environment().socket
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        try:
            sock.connect(str(path))
        except OSError as error:
            sock.close()
            raise WatchkeeperError(
                f"{path}: no agent answers ({error.strerror or error}); "
                "start it with `watchkeeper agent start`."
            ) from error
        return cls(sock, timeout=timeout)

    @classmethod
    def connect_or_none(
        cls, path: Path | None = None, *, timeout: float | None = 30.0
    ) -> AgentClient | None:
        """Connect when an agent runs; return None when none does."""
        try:
            return cls.connect(path, timeout=timeout)
        except WatchkeeperError:
            return None

    def call(self, method: str, **params: Any) -> Any:
        """Send one request and return its result; error replies raise AgentCallError."""
        request_id = next(self._ids)
        self._send({"id": request_id, "method": method, "params": params})
        while True:
            message = self._receive()
            if message.get("id") != request_id and "event" in message:
                continue
            if "error" in message:
                error = message["error"]
                raise AgentCallError(method, int(error.get("code", 0)), str(error.get("message")))
            return message.get("result")

    def subscribe(self, events: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Turn this connection into an event stream; yields {"event": kind, "data": ...}."""
        params: dict[str, Any] = {} if events is None else {"events": events}
        self.call("subscribe", **params)
        while True:
            message = self._receive()
            if "event" in message:
                yield message

    def close(self) -> None:
        """Close the connection (a thread blocked reading the event stream wakes up and ends)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(OSError, ValueError):
            self._reader.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def _send(self, message: dict[str, Any]) -> None:
        self._sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def _receive(self) -> dict[str, Any]:
        line = self._reader.readline()
        if not line:
            raise WatchkeeperError("the agent closed the connection")
        message: dict[str, Any] = json.loads(line)
        return message
