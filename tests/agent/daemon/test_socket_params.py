"""The real agent's socket methods refuse params of the wrong type with INVALID_PARAMS."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from agent.config import UserConfig
from agent.daemon import protocol
from agent.daemon.service import AgentService, AgentSettings
from agent.paths import WatchkeeperPaths


@pytest.fixture
def agent(paths: WatchkeeperPaths) -> Iterator[AgentService]:
    service = AgentService(paths, config=UserConfig.load(paths.config), settings=AgentSettings())
    service.start()
    try:
        yield service
    finally:
        service.stop()


def call_raw(path: Any, request: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(request + b"\n")
        with sock.makefile("rb") as reader:
            line = reader.readline()
    assert line.endswith(b"\n"), "the agent closed the connection without a reply"
    return dict(json.loads(line))


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("runs", b'{"limit": 18446744073709551616}', "limit"),
        ("runs", b'{"limit": "ten"}', "limit"),
        ("runs", b'{"limit": NaN}', "limit"),
        ("alerts", b'{"limit": "5"}', "limit"),
        ("coding_time", b'{"days": Infinity}', "days"),
        ("ack_alert", b'{"id": 1e400}', "id"),
    ],
)
def test_bad_params_are_refused_naming_the_field(
    agent: AgentService, method: str, params: bytes, field: str
) -> None:
    request = b'{"id": 1, "method": "' + method.encode() + b'", "params": ' + params + b"}"
    reply = call_raw(agent.paths.socket, request)
    assert reply["error"]["code"] == protocol.INVALID_PARAMS, reply
    assert reply["error"]["message"].startswith(f'{method}: "{field}"'), reply


def test_a_deeply_nested_request_gets_a_parse_error(agent: AgentService) -> None:
    reply = call_raw(agent.paths.socket, b"[" * 100_000 + b"]" * 100_000)
    assert reply["error"]["code"] == protocol.PARSE_ERROR
    assert call_raw(agent.paths.socket, b'{"id": 2, "method": "runs"}') == {"id": 2, "result": []}
