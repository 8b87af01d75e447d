"""The control socket's wire format: newline-delimited JSON requests, replies and events."""

from __future__ import annotations

import inspect
import json
import math
import types
import typing
from collections.abc import Callable
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

EVENT_KINDS = (
    "alert",
    "verdicts",
    "run_state",
    "run_log",
    "run_steps",
    "snapshot",
    "coding_time",
    "pulled",
)

# Integers a method accepts: what SQLite can store (a signed 64-bit integer).
MIN_INTEGER = -(2**63)
MAX_INTEGER = 2**63 - 1


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
    message = _decode(line)
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
        message = _decode(line)
    except ProtocolError:
        return None
    return message.get("id") if isinstance(message, dict) else None


def _decode(line: bytes) -> Any:
    """The JSON value of a line, or a PARSE_ERROR for anything the decoder cannot take.

    >>> _decode(b"[" * 100_000)
    Traceback (most recent call last):
    ...
    agent.daemon.protocol.ProtocolError: malformed JSON: nested too deeply
    """
    try:
        return json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(PARSE_ERROR, f"malformed JSON: {error}") from error
    except RecursionError as error:
        raise ProtocolError(PARSE_ERROR, "malformed JSON: nested too deeply") from error
    except ValueError as error:  # an integer literal of thousands of digits
        raise ProtocolError(PARSE_ERROR, f"malformed JSON: {error}") from error


def check_params(method: str, handler: Callable[..., Any], params: dict[str, Any]) -> None:
    """Check `params` against the handler's signature and its simple type annotations.

    Names must fit the signature; a parameter annotated `int`, `float`, `bool` or `str` (or
    `X | None`, `list`, `dict`) must hold a JSON value of that type; integers must fit in 64
    bits and numbers must be finite. Raises ProtocolError(INVALID_PARAMS) naming the field.

    >>> def runs(limit: int = 50) -> None: ...
    >>> check_params("runs", runs, {"limit": "5"})
    Traceback (most recent call last):
    ...
    agent.daemon.protocol.ProtocolError: runs: "limit" must be an integer, not a string
    """
    try:
        inspect.signature(handler).bind(**params)
    except TypeError as error:
        raise ProtocolError(INVALID_PARAMS, f"{method}: invalid params: {error}") from error
    try:
        hints = typing.get_type_hints(handler)
    except Exception:  # annotations that do not resolve are not checked
        hints = {}
    for name, value in params.items():
        if name in hints:
            problem = _type_problem(value, hints[name])
            if problem:
                raise ProtocolError(INVALID_PARAMS, f'{method}: "{name}" {problem}')


_JSON_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _type_problem(value: Any, annotation: Any) -> str | None:
    """Why `value` does not fit `annotation`, or None (also for annotations not checked)."""
    if annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
    else:
        options = (origin or annotation,)
    if not all(option in _JSON_NAMES for option in options):
        return None
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return None
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            if MIN_INTEGER <= value <= MAX_INTEGER:
                return None
            return f"is out of range (from {MIN_INTEGER} to {MAX_INTEGER})"
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return None if math.isfinite(value) else "must be a finite number"
        if option in (str, list, dict) and isinstance(value, option):
            return None
    wanted = " or ".join(_JSON_NAMES[option] for option in options)
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be {wanted}, not {value}"
    return f"must be {wanted}, not {_JSON_NAMES.get(type(value), type(value).__name__)}"
