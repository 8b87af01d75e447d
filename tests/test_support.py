"""The test helpers themselves: waits fail clearly and helper threads pass on their errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.agent.daemon.conftest import REPO_ROOT
from tests.agent.daemon.test_service import EventStream
from tests.support import BackgroundCall, wait_for


def test_wait_for_returns_the_value_that_came_true() -> None:
    values = iter([0, [], "ready"])
    assert wait_for(lambda: next(values), 5, "a value", 0.001) == "ready"


def test_wait_for_fails_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"timed out after 0\.2 s waiting for the moon"):
        wait_for(lambda: False, 0.2, "the moon")
    assert time.monotonic() - started < 5


def test_a_background_call_passes_on_its_exception_and_its_value() -> None:
    def fail() -> None:
        raise ValueError("inside the thread")

    with pytest.raises(ValueError, match="inside the thread"):
        BackgroundCall(fail).result(5)
    assert BackgroundCall(sum, [1, 2, 3]).result(5) == 6


def test_a_background_call_still_running_fails_the_wait() -> None:
    release = threading.Event()
    call = BackgroundCall(release.wait, 30, name="the waiter")
    with pytest.raises(pytest.fail.Exception, match=r"the waiter still running after 0\.1 s"):
        call.result(0.1)
    release.set()
    assert call.result(5) is True


def test_the_event_stream_reports_a_broken_stream_instead_of_timing_out(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve_a_broken_stream() -> None:
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as reader:
            request = json.loads(reader.readline())
            reply = {"id": request["id"], "result": {"subscribed": ["alert"]}}
            connection.sendall(json.dumps(reply).encode() + b"\n")
            connection.sendall(b"this is not JSON\n")
            reader.readline()  # hold the connection open until the client closes it

    server = BackgroundCall(serve_a_broken_stream, name="the broken server")
    stream = EventStream(path)
    started = time.monotonic()
    try:
        with pytest.raises(AssertionError, match="the event stream failed") as raised:
            stream.next("alert", timeout=30)
        assert isinstance(raised.value.__cause__, json.JSONDecodeError)
        assert time.monotonic() - started < 10
    finally:
        stream.close()
        server.result(10)
        listener.close()


def test_doctests_of_the_packages_run_with_a_private_home(tmp_path: Path) -> None:
    module = tmp_path / "home_doctest.py"
    module.write_text(
        '"""A doctest that reads its home.\n\n'
        ">>> import os\n"
        ">>> home = os.environ['WATCHKEEPER_HOME']\n"
        ">>> 'wk-home-doctest' in home and home != os.environ.get('OUTER_HOME')\n"
        "True\n"
        '"""\n'
    )
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO_ROOT / "pyproject.toml"), str(module)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OUTER_HOME": os.environ["WATCHKEEPER_HOME"]},
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "1 passed" in completed.stdout
