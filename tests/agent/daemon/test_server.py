"""The control socket: protocol, errors, subscriptions, permissions and stuck clients."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.client import AgentCallError, AgentClient
from agent.daemon import protocol
from agent.daemon.server import ControlServer, MethodParamsError
from agent.errors import WatchkeeperError
from tests.agent.daemon.conftest import can_switch_user, run_as_nobody
from tests.support import BackgroundCall, require, wait_for


def _handlers() -> dict[str, Any]:
    def echo(**params: Any) -> Any:
        return params

    def fail() -> None:
        raise RuntimeError("boom")

    def user_error() -> None:
        raise WatchkeeperError("you asked for something impossible")

    def needs_int(value: int) -> int:
        if not isinstance(value, int):
            raise MethodParamsError("needs_int: value must be an integer")
        return value + 1

    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    def first_rows(limit: int = 2) -> list[int]:
        ledger = sqlite3.connect(":memory:")
        try:
            query = "SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 LIMIT ?"
            return [row[0] for row in ledger.execute(query, [limit])]
        finally:
            ledger.close()

    return {
        "status": lambda: {"pid": os.getpid()},
        "echo": echo,
        "fail": fail,
        "user_error": user_error,
        "needs_int": needs_int,
        "slow": slow,
        "first_rows": first_rows,
    }


@pytest.fixture
def server(watchkeeper_home: Path) -> Iterator[ControlServer]:
    control = ControlServer(watchkeeper_home / "agent.sock", _handlers())
    control.start()
    yield control
    control.stop()


class _Raw:
    """A bare socket with a line reader, for sending malformed bytes."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _raw(path: Path) -> _Raw:
    return _Raw(path)


def _read_line(raw: _Raw) -> dict[str, Any]:
    line = raw.reader.readline()
    assert line.endswith(b"\n"), "connection closed before a full reply"
    return json.loads(line)


def test_socket_is_private_from_the_start(server: ControlServer) -> None:
    mode = stat.S_IMODE(server.path.stat().st_mode)
    assert stat.S_ISSOCK(server.path.stat().st_mode)
    assert mode == 0o600


def test_call_and_reply_carry_the_request_id(server: ControlServer) -> None:
    with AgentClient.connect(server.path) as client:
        assert client.call("status") == {"pid": os.getpid()}
        assert client.call("echo", a=1, b=[2]) == {"a": 1, "b": [2]}
    sock = _raw(server.path)
    sock.sendall(b'{"id": "abc", "method": "echo", "params": {"x": 1}}\n')
    assert _read_line(sock) == {"id": "abc", "result": {"x": 1}}
    sock.close()


def test_errors_get_replies_and_the_connection_survives(server: ControlServer) -> None:
    sock = _raw(server.path)
    sock.sendall(b"this is not json\n")
    reply = _read_line(sock)
    assert reply["error"]["code"] == protocol.PARSE_ERROR
    sock.sendall(b'{"id": 2, "method": "no_such_method"}\n')
    reply = _read_line(sock)
    assert reply["id"] == 2
    assert reply["error"]["code"] == protocol.METHOD_NOT_FOUND
    assert "status" in reply["error"]["message"]
    sock.sendall(b'[1, 2, 3]\n{"id": 3}\n{"id": 4, "method": "echo", "params": [1]}\n')
    codes = [_read_line(sock)["error"]["code"] for _ in range(3)]
    assert codes == [protocol.INVALID_REQUEST, protocol.INVALID_REQUEST, protocol.INVALID_PARAMS]
    sock.sendall(b'{"id": 5, "method": "fail"}\n')
    assert _read_line(sock)["error"]["code"] == protocol.INTERNAL_ERROR
    sock.sendall(b'{"id": 6, "method": "needs_int", "params": {"wrong": 1}}\n')
    assert _read_line(sock)["error"]["code"] == protocol.INVALID_PARAMS
    sock.sendall(b'{"id": 7, "method": "needs_int", "params": {"value": "x"}}\n')
    assert _read_line(sock)["error"]["code"] == protocol.INVALID_PARAMS
    sock.sendall(b'{"id": 8, "method": "user_error"}\n')
    reply = _read_line(sock)
    assert reply["error"] == {
        "code": protocol.APPLICATION_ERROR,
        "message": "you asked for something impossible",
    }
    sock.sendall(b'{"id": 9, "method": "status"}\n')
    assert _read_line(sock) == {"id": 9, "result": {"pid": os.getpid()}}
    sock.close()


def test_json_nested_too_deeply_gets_a_parse_error_reply(server: ControlServer) -> None:
    sock = _raw(server.path)
    for nested in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        sock.sendall(nested + b"\n")
        reply = _read_line(sock)
        assert reply == {
            "id": None,
            "error": {"code": protocol.PARSE_ERROR, "message": "malformed JSON: nested too deeply"},
        }
    sock.sendall(b'{"id": 1, "method": "first_rows", "params": {"limit": 99999' + b"9" * 5000)
    sock.sendall(b"}}\n")
    assert _read_line(sock)["error"]["code"] == protocol.PARSE_ERROR
    sock.sendall(b'{"id": 2, "method": "status"}\n')
    assert _read_line(sock) == {"id": 2, "result": {"pid": os.getpid()}}
    sock.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"18446744073709551616", '"limit" is out of range'),
        (b'"2"', '"limit" must be an integer, not a string'),
        (b"NaN", '"limit" must be an integer, not nan'),
        (b"1.5", '"limit" must be an integer, not a number'),
        (b"true", '"limit" must be an integer, not a boolean'),
    ],
)
def test_a_param_of_the_wrong_type_is_invalid_params_naming_the_field(
    server: ControlServer, value: bytes, message: str
) -> None:
    sock = _raw(server.path)
    sock.sendall(b'{"id": 1, "method": "first_rows", "params": {"limit": ' + value + b"}}\n")
    reply = _read_line(sock)
    assert reply["error"]["code"] == protocol.INVALID_PARAMS, reply
    assert reply["error"]["message"].startswith(f"first_rows: {message}")
    sock.sendall(b'{"id": 2, "method": "first_rows", "params": {"limit": 2}}\n')
    assert _read_line(sock) == {"id": 2, "result": [1, 2]}
    sock.close()


def test_client_raises_on_error_replies(server: ControlServer) -> None:
    with AgentClient.connect(server.path) as client:
        with pytest.raises(AgentCallError) as raised:
            client.call("no_such_method")
        assert raised.value.code == protocol.METHOD_NOT_FOUND
        assert client.call("needs_int", value=1) == 2


def test_oversized_message_is_refused_and_the_connection_keeps_working(
    server: ControlServer,
) -> None:
    sock = _raw(server.path)
    big = b'{"id": 1, "method": "echo", "params": {"blob": "' + b"x" * (3 * 1024 * 1024)
    sender = BackgroundCall(sock.sendall, big + b'"}}\n', name="the sender")
    reply = _read_line(sock)
    sender.result(10)
    assert reply["error"]["code"] == protocol.MESSAGE_TOO_LARGE
    sock.sendall(b'{"id": 2, "method": "status"}\n')
    assert _read_line(sock) == {"id": 2, "result": {"pid": os.getpid()}}
    sock.close()


def test_silent_and_half_line_clients_block_nobody(server: ControlServer) -> None:
    silent = [_raw(server.path) for _ in range(20)]
    half = _raw(server.path)
    half.sendall(b'{"id": 1, "method": "sta')
    slow_caller = AgentClient.connect(server.path)
    slow_call = BackgroundCall(lambda: slow_caller.call("slow", seconds=2.0), name="slow")
    try:
        for _ in range(20):
            started = time.perf_counter()
            with AgentClient.connect(server.path, timeout=2) as client:
                assert client.call("status")["pid"] == os.getpid()
            assert time.perf_counter() - started < 0.2
        assert slow_call.result(5) == "done"
    finally:
        slow_caller.close()
        for sock in [*silent, half]:
            sock.close()


def test_subscribers_get_events_of_their_kinds(server: ControlServer) -> None:
    everything = AgentClient.connect(server.path, timeout=5)
    alerts_only = AgentClient.connect(server.path, timeout=5)
    stream_all = everything.subscribe()
    stream_alerts = alerts_only.subscribe(["alert"])
    # Subscribing is acknowledged before the generator yields, so prime both streams.
    received_all: list[dict[str, Any]] = []
    received_alerts: list[dict[str, Any]] = []

    def drain(stream: Iterator[dict[str, Any]], into: list[dict[str, Any]], n: int) -> None:
        for message in stream:
            into.append(message)
            if len(into) == n:
                return

    reader_all = BackgroundCall(drain, stream_all, received_all, 2, name="reader of all")
    reader_alerts = BackgroundCall(drain, stream_alerts, received_alerts, 1, name="alert reader")
    wait_for(lambda: server.subscriber_count == 2, 5, "both subscribers")
    server.publish("snapshot", {"source": "/data", "snapshot_id": 3})
    server.publish("alert", {"id": 1, "message": "stale"})
    reader_all.result(5)
    reader_alerts.result(5)
    assert [m["event"] for m in received_all] == ["snapshot", "alert"]
    assert received_alerts == [{"event": "alert", "data": {"id": 1, "message": "stale"}}]
    everything.close()
    alerts_only.close()


def test_subscribe_rejects_unknown_event_kinds(server: ControlServer) -> None:
    with AgentClient.connect(server.path) as client:
        with pytest.raises(AgentCallError) as raised:
            client.call("subscribe", events=["weather"])
        assert raised.value.code == protocol.INVALID_PARAMS


def test_a_second_server_refuses_a_live_socket_and_replaces_a_stale_one(
    server: ControlServer, watchkeeper_home: Path
) -> None:
    with pytest.raises(WatchkeeperError, match="another agent"):
        ControlServer(server.path, _handlers()).start()
    stale_path = watchkeeper_home / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(stale_path))
    stale.close()  # the file stays, nobody listens: what a crash leaves behind
    assert stale_path.exists()
    replacement = ControlServer(stale_path, _handlers())
    replacement.start()
    try:
        with AgentClient.connect(stale_path) as client:
            assert client.call("status")["pid"] == os.getpid()
    finally:
        replacement.stop()
    assert not stale_path.exists()


CONNECT_AS_OTHER_USER = """
import json, os, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(5)
try:
    sock.connect(sys.argv[1] if len(sys.argv) > 1 else {path!r})
except PermissionError as error:
    print(json.dumps({{"uid": os.getuid(), "connect_error": error.errno}}))
    sys.exit(0)
sock.sendall(b'{{"id": 1, "method": "status"}}\\n')
data = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    data += chunk
print(json.dumps({{"uid": os.getuid(), "reply": data.decode()}}))
"""


def test_a_client_of_another_uid_is_refused(shared_tmp: Path) -> None:
    require(can_switch_user(), "root and setpriv", "run the tests as root with util-linux")
    path = shared_tmp / "agent.sock"
    control = ControlServer(path, _handlers())
    control.start()
    try:
        # With the socket's default mode 0600 the kernel already stops other users ...
        result = run_as_nobody(CONNECT_AS_OTHER_USER.format(path=str(path)))
        outcome = json.loads(result.stdout)
        assert outcome["uid"] == 65534
        assert "connect_error" in outcome
        # ... and when the file mode is opened up, the peer-uid check still refuses them.
        path.chmod(0o666)
        result = run_as_nobody(CONNECT_AS_OTHER_USER.format(path=str(path)))
        outcome = json.loads(result.stdout)
        assert outcome["uid"] == 65534, result.stderr
        reply = json.loads(outcome["reply"])
        assert reply["error"]["code"] == protocol.FORBIDDEN
        assert "uid 65534" in reply["error"]["message"]
        assert "result" not in reply
        with AgentClient.connect(path) as client:
            assert client.call("status")["pid"] == os.getpid()
    finally:
        control.stop()
