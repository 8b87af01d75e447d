"""The control socket's wire format: newline-delimited JSON requests, replies and events."""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE_BYTES = 1024 * 1024
"""Longest accepted request line; longer ones get an error reply and are discarded."""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
APPLICATION_ERROR = -32000
FORBIDDEN = -32001
MESSAGE_TOO_LARGE = -32002

EVENT_KINDS = ("alert", "verdicts", "run_state", "run_log", "snapshot", "coding_time")


class ProtocolError(Exception):
    """A request that cannot be served; `code` is one of the error codes above."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message as a JSON line.

    >>> encode({"id": 1, "result": True})
    b'{"id":1,"result":true}\\n'
    """
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def reply(request_id: Any, result: Any) -> bytes:
    return encode({"id": request_id, "result": result})


def error_reply(request_id: Any, code: int, message: str) -> bytes:
    return encode({"id": request_id, "error": {"code": code, "message": message}})


def event_message(kind: str, data: Any) -> bytes:
    return encode({"event": kind, "data": data})


def parse_request(line: bytes) -> tuple[Any, str, dict[str, Any]]:
    """Decode one request line into (id, method, params) or raise ProtocolError.

    >>> parse_request(b'{"id": 7, "method": "status"}')
    (7, 'status', {})
    """
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(PARSE_ERROR, f"malformed JSON: {error}") from error
    if not isinstance(message, dict):
        raise ProtocolError(INVALID_REQUEST, "a request must be a JSON object")
    method = message.get("method")
    if not isinstance(method, str):
        raise ProtocolError(INVALID_REQUEST, 'a request needs a string "method"')
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(INVALID_PARAMS, '"params" must be a JSON object')
    return message.get("id"), method, params


def request_id_of(line: bytes) -> Any:
    """Best-effort id of a request that failed to parse, so the error reply can carry it."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return message.get("id") if isinstance(message, dict) else None
