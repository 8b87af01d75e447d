"""Checks of what a remote helper sends back (JSON replies, pack headers) before anything uses it.

A remote is not trusted: every reply is decoded strictly, must be one JSON object, and each field
is checked for its type and range. A bad reply becomes one `HelperReplyError` line that names the
remote, the reply and what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from agent.errors import WatchkeeperError

MAX_REPLY_BYTES = 16 << 20  # a helper reply is a JSON line; the largest lists a chunk's blobs
MAX_PROBE_BYTES = 1 << 20
MAX_HEADER_BYTES = 64 << 10
MAX_FILE_BYTES = 1 << 40  # 1 TiB: no single out is larger
MAX_COUNT = 1 << 53
POLL_STATES = ("running", "exited", "cancelled", "vanished")


class HelperReplyError(WatchkeeperError):
    """The remote helper answered something that is not what the protocol allows."""


def shown(value: Any, limit: int = 60) -> str:
    """A short repr of a value for an error message.

    >>> shown("a" * 100, limit=10)
    "'aaaaaaaa…"
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: str, limit: int = 300) -> str:
    """Text from a remote made safe for one log line: control characters escaped, cut short.

    >>> one_line("a\\nb\\x00c")
    'a\\\\nb\\\\x00c'
    """
    escaped = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type.

    >>> json_type([1]), json_type(True), json_type(None)
    ('a list', 'a boolean', 'null')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def decode_object(remote: str, what: str, line: bytes) -> dict[str, Any]:
    """One line of helper output as a JSON object; `what` reads like "the helper's poll reply".

    >>> decode_object("gpu1", "the helper's poll reply", b"[1]")
    Traceback (most recent call last):
    ...
    agent.remote.replies.HelperReplyError: remote gpu1: the helper's poll reply is a list; \
expected a JSON object
    """
    if not line.strip():
        raise HelperReplyError(f"remote {remote}: {what} is empty; expected a JSON object")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise HelperReplyError(
            f"remote {remote}: {what} is not UTF-8 text ({shown(line[:40])})"
        ) from None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise HelperReplyError(
            f"remote {remote}: {what} is not JSON ({shown(text[:40])}); expected a JSON object"
        ) from None
    if not isinstance(value, dict):
        raise HelperReplyError(
            f"remote {remote}: {what} is {json_type(value)}; expected a JSON object"
        )
    return value


def last_line_object(remote: str, mode: str, output: bytes) -> dict[str, Any]:
    """The last line of a helper's whole output as a JSON object."""
    lines = output.strip().splitlines()
    return decode_object(remote, f"the helper's {mode} reply", lines[-1] if lines else b"")


def is_count(value: Any, limit: int = MAX_COUNT) -> bool:
    """A non-negative integer (not a boolean) no larger than `limit`.

    >>> is_count(3), is_count(-5), is_count(True), is_count("12")
    (True, False, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def is_text(value: Any) -> bool:
    return isinstance(value, str) and "\0" not in value


def is_absolute_path(value: Any) -> bool:
    return is_text(value) and value.startswith("/")


def is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(is_text(item) for item in value)


def is_exit_code(value: Any) -> bool:
    return value is None or (
        isinstance(value, int) and not isinstance(value, bool) and -(1 << 31) <= value < 1 << 31
    )


def one_of(choices: Iterable[str]) -> tuple[Callable[[Any], bool], str]:
    options = tuple(choices)
    return (lambda value: value in options), "one of " + ", ".join(map(repr, options))


Check = tuple[Callable[[Any], bool], str]
COUNT: Check = (is_count, "a non-negative integer")
TEXT: Check = (is_text, "a string without NUL bytes")
PATH: Check = (is_absolute_path, "an absolute path without NUL bytes")
FLAG: Check = (lambda value: isinstance(value, bool), "true or false")
TEXT_LIST: Check = (is_text_list, "a list of strings without NUL bytes")
EXIT_CODE: Check = (is_exit_code, "an integer exit code or null")

# The fields each helper reply must have (optional ones may be absent), by mode.
REPLY_FIELDS: dict[str, dict[str, Check]] = {
    "probe": {
        "python": TEXT,
        "home": PATH,
        "blake3": FLAG,
        "free_bytes": COUNT,
        "measured_in": PATH,
    },
    "poll": {"state": one_of(POLL_STATES)},
    "cache check": {"missing": TEXT_LIST},
    "build": {"built": COUNT},
    "gc": {
        "busy": FLAG,
        "run_folders": COUNT,
        "run_folder_bytes": COUNT,
        "blobs": COUNT,
        "blob_bytes": COUNT,
    },
    "receive": {
        "stored": COUNT,
        "rejected": TEXT_LIST,
        "verified_with": TEXT,
        "linked": COUNT,
        "refused": TEXT_LIST,
    },
}
OPTIONAL_FIELDS: dict[str, dict[str, Check]] = {
    "probe": {"executable": TEXT},
    "poll": {"exit_code": EXIT_CODE, "tail": (lambda value: isinstance(value, str), "a string")},
    "build": {"missing": TEXT_LIST},
    "receive": {"built": COUNT, "missing": TEXT_LIST, "error": TEXT},
}


def check_fields(remote: str, mode: str, reply: dict[str, Any]) -> dict[str, Any]:
    """Check the fields of a decoded `mode` reply against REPLY_FIELDS; returns the reply."""
    what = f"the helper's {mode} reply"
    for key, (valid, expected) in REPLY_FIELDS.get(mode, {}).items():
        if key not in reply:
            raise HelperReplyError(f"remote {remote}: {what} has no {key}; expected {expected}")
        if not valid(reply[key]):
            raise HelperReplyError(
                f"remote {remote}: {what} has {key} {shown(reply[key])}; expected {expected}"
            )
    for key, (valid, expected) in OPTIONAL_FIELDS.get(mode, {}).items():
        if key in reply and not valid(reply[key]):
            raise HelperReplyError(
                f"remote {remote}: {what} has {key} {shown(reply[key])}; expected {expected}"
            )
    return reply


def helper_reply(remote: str, mode: str, output: bytes) -> dict[str, Any]:
    """A helper's whole output, whose last line is its reply, decoded and checked."""
    return check_fields(remote, mode, last_line_object(remote, mode, output))


def pack_header(remote: str, line: bytes) -> dict[str, Any]:
    """One header line of a `pack` stream, checked: an end marker, a refusal, a missing path or
    a file with a string path and a size from 0 to MAX_FILE_BYTES."""
    header = decode_object(remote, "the helper sent a pack header that", line)
    if "end" in header:
        if header["end"] is not True:
            raise _bad_header(remote, "end", header["end"], "true")
        return header
    for key in ("error", "missing"):
        if key in header:
            if not isinstance(header[key], str):
                raise _bad_header(remote, key, header[key], "a string")
            return header
    if not isinstance(header.get("path"), str):
        raise _bad_header(remote, "path", header.get("path"), "a string")
    size: Any = header.get("size")
    if not is_count(size):
        raise _bad_header(remote, "size", size, "a non-negative integer")
    if size > MAX_FILE_BYTES:
        raise _bad_header(remote, "size", size, "a non-negative integer up to 1 TiB")
    return header


def _bad_header(remote: str, key: str, value: Any, expected: str) -> HelperReplyError:
    return HelperReplyError(
        f"remote {remote}: the helper sent a pack header with {key} {shown(value)}; "
        f"expected {expected}"
    )
