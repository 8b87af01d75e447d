"""Test parts for MLflow interop: a real `mlflow server`, a faulty HTTP proxy in front of it,
and ledger versions with metrics, step metrics, artifacts and aliases."""

from __future__ import annotations

import http.client
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.ledger import open_ledger, write_transaction
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.queries import ensure_model, insert_row, next_version, register_repo
from agent.runs.step_metrics import encode_floats
from tests.support import wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


class MlflowServer:
    """A real `mlflow server` (SQLite backend, local artifacts) on 127.0.0.1; it can be
    stopped and started again on the same port and store."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MlflowServer:
        log = self.folder / "server.log"
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'backend.db'}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=open(log, "ab"),  # noqa: SIM115 (closed with the process)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: healthy(self.uri), 120, lambda: log.read_text()[-2000:])
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        self.process = None


@dataclass
class FaultyProxy:
    """A real HTTP proxy to `upstream` that answers 500 to the requests `fails` picks
    (by their number, from 1, and path), either before forwarding them or after, delays
    the ones `delay` says, and answers 401 to requests without `required_authorization`."""

    upstream_port: int
    fails: Callable[[int, str], bool] = lambda number, path: False
    after_forwarding: bool = False
    delay: Callable[[int, str], float] = lambda number, path: 0.0
    required_authorization: str | None = None
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        proxy = self
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    proxy.seen.append((self.command, self.path, self.headers.get("Authorization")))
                    number = len(proxy.seen)
                failing = proxy.fails(number, self.path)
                time.sleep(proxy.delay(number, self.path))
                wanted = proxy.required_authorization
                if wanted is not None and self.headers.get("Authorization") != wanted:
                    return self._fail(401, b"credentials required")
                if failing and not proxy.after_forwarding:
                    return self._fail()
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                content = reply.read()
                upstream.close()
                if failing:
                    return self._fail()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def _fail(self, status: int = 500, message: bytes = b"injected failure") -> None:
                proxy.failed.append(self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def add_versions(
    home: Path,
    repo: Path,
    model: str,
    count: int,
    *,
    points: int = 5,
) -> list[str]:
    """`count` finished versions of `model`, each with params, a final metric, `points` step
    points of `loss`, a data fingerprint and an artifact really in the store; their global
    ids, oldest first."""
    store = ArtifactStore(home / "artifacts")
    db = open_ledger(home / "ledger.db")
    try:
        with write_transaction(db):
            model_id = ensure_model(db, register_repo(db, repo), model)
            first = next_version(db, model_id)
            ids: list[int] = []
            for offset in range(count):
                digest = store.put_bytes(f"weights of {model} {first + offset}".encode())
                started = time.time() - 3600 + offset
                version_id = insert_row(
                    db,
                    "model_versions",
                    {
                        "model_id": model_id,
                        "version": first + offset,
                        "status": "succeeded",
                        "commit_sha": "a" * 40,
                        "dirty": 1,
                        "diff_hash": "blake3:" + "d" * 64,
                        "train_command": "python train.py",
                        "params": {"lr": 0.01 * (offset + 1), "epochs": 5},
                        "metrics": {"auc": 0.5 + offset / 1000},
                        "data": {"data/train.csv": {"fingerprint": f"fp{offset}"}},
                        "code": {},
                        "artifacts": {"model/weights.bin": digest},
                        "executor": "local",
                        "host": "box",
                        "started_at": started,
                        "ended_at": started + 0.5,
                        "exit_code": 0,
                    },
                )
                ids.append(version_id)
                if points:
                    db.execute(
                        "INSERT INTO step_metrics (version_id, run_id, name, first_line, points, "
                        "steps_f8, values_f8) VALUES (?, ?, 'loss', 0, ?, ?, ?)",
                        [
                            version_id,
                            f"run-{version_id}",
                            points,
                            encode_floats(float(step) for step in range(points)),
                            encode_floats(1.0 / (step + 1) for step in range(points)),
                        ],
                    )
        return [
            str(row[0])
            for row in db.execute(
                f"SELECT global_id FROM model_versions WHERE id IN ({','.join('?' * len(ids))}) "
                "ORDER BY id",
                ids,
            ).fetchall()
        ]
    finally:
        db.close()
