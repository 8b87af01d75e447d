"""MLflow export: 1,000 versions with 100 metric values each to a local `mlflow server`.

Ours: `export_versions` (what `watchkeeper export mlflow` runs) from a real ledger whose
versions each have 2 params, 100 step-metric points, a final metric, lineage and one small
artifact in the store; once without the model registry and once with it (a registered model
version per version and an alias).
Peer: the same logging done directly with MLflow's client in the same process against the same
server: per version `create_run`, one `log_batch` (params, the 100 points, tags),
`log_artifact` of the same file and `set_terminated`; the peer registers nothing.
Both use a fresh experiment on one `mlflow server` (SQLite backend, local artifacts). The
target is ours ≤ 1.5× the peer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_RATIO = 1.5
POINTS = 100


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(folder: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'backend.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        stdout=open(folder / "server.log", "wb"),  # noqa: SIM115 (closed with the process)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return server, port
        except OSError:
            time.sleep(0.2)
    os.killpg(server.pid, signal.SIGTERM)
    raise SystemExit("mlflow server did not start: " + (folder / "server.log").read_text()[-800:])


def make_ledger(home: Path, versions: int) -> None:
    """`versions` finished versions of model `churn`, as training would have left them."""
    from agent.ledger import open_ledger, write_transaction
    from agent.ledger.artifacts import ArtifactStore
    from agent.ledger.queries import ensure_model, insert_row, register_repo
    from agent.runs.step_metrics import encode_floats

    store = ArtifactStore(home / "artifacts")
    db = open_ledger(home / "ledger.db")
    with write_transaction(db):
        model_id = ensure_model(db, register_repo(db, home), "churn")
        started = time.time() - versions
        for number in range(1, versions + 1):
            digest = store.put_bytes(f"weights {number}".encode() * 100)
            version_id = insert_row(
                db,
                "model_versions",
                {
                    "model_id": model_id,
                    "version": number,
                    "status": "succeeded",
                    "commit_sha": "a" * 40,
                    "dirty": 0,
                    "train_command": "python train.py",
                    "params": {"lr": 0.001 * number, "epochs": 5},
                    "metrics": {"auc": 0.5 + number / 10_000},
                    "data": {"data/train.csv": {"fingerprint": f"fp{number}"}},
                    "code": {},
                    "artifacts": {"model.pkl": digest},
                    "executor": "local",
                    "host": "box",
                    "started_at": started + number,
                    "ended_at": started + number + 0.5,
                    "exit_code": 0,
                },
            )
            db.execute(
                "INSERT INTO step_metrics (version_id, run_id, name, first_line, points, "
                "steps_f8, values_f8) VALUES (?, ?, 'loss', 0, ?, ?, ?)",
                [
                    version_id,
                    f"run-{number}",
                    POINTS - 1,
                    encode_floats(float(step) for step in range(POINTS - 1)),
                    encode_floats(1.0 / (step + 1) for step in range(POINTS - 1)),
                ],
            )
        db.execute(
            "INSERT INTO version_aliases (model_id, alias, version_id, set_at) "
            "VALUES (?, 'champion', ?, ?)",
            [model_id, version_id, time.time()],
        )
    db.close()


def peer(uri: str, versions: int, artifact: Path) -> float:
    """The same runs logged straight with MlflowClient.log_batch, one after another."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    started = time.perf_counter()
    experiment = client.create_experiment("peer")
    now = int(time.time() * 1000)
    for number in range(1, versions + 1):
        run = client.create_run(experiment, run_name=f"churn-v{number}")
        run_id = run.info.run_id
        metrics = [Metric("loss", 1.0 / (s + 1), now, s) for s in range(POINTS - 1)]
        metrics.append(Metric("auc", 0.5 + number / 10_000, now, 0))
        params = [Param("lr", str(0.001 * number)), Param("epochs", "5")]
        tags = [
            RunTag("git_commit", "a" * 40),
            RunTag("data/train.csv", f"fp{number}"),
            RunTag("executor", "local"),
            RunTag("host", "box"),
        ]
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        client.log_artifact(run_id, str(artifact))
        client.set_terminated(run_id, "FINISHED", now)
    return time.perf_counter() - started


def ours(uri: str, home: Path, experiment: str, register: bool, workers: int) -> float:
    from agent.interop.mlflow_export import MlflowExporter, export_versions, mlflow_client
    from agent.ledger import open_ledger
    from agent.ledger.artifacts import ArtifactStore

    db = open_ledger(home / "ledger.db")
    exporter = MlflowExporter(mlflow_client(uri), uri, register=register)
    started = time.perf_counter()
    report = export_versions(
        db,
        exporter,
        uri,
        ArtifactStore(home / "artifacts"),
        experiment=experiment,
        workers=workers,
    )
    seconds = time.perf_counter() - started
    db.close()
    assert report.interrupted is None, report.interrupted
    assert report.exported == report.pending, report
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="runs our export sends at once")
    parser.add_argument("--server-workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    with tempfile.TemporaryDirectory(prefix="wk-bench-mlflow-export-") as scratch:
        folder = Path(scratch)
        home = folder / "home"
        home.mkdir()
        os.environ["WATCHKEEPER_HOME"] = str(home)
        make_ledger(home, args.versions)
        artifact = folder / "model.pkl"
        artifact.write_bytes(b"weights 1" * 100)
        server, port = start_server(folder, args.server_workers)
        try:
            print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus (start)")
            peer_seconds = peer(f"http://127.0.0.1:{port}", args.versions, artifact)
            print(f"peer (create_run, log_batch, log_artifact, end): {peer_seconds:.1f} s")
            # The same server under two spellings, so that the two exports are recorded apart.
            plain = ours(f"http://127.0.0.1:{port}", home, "wk-plain", False, args.workers)
            print(f"ours without the registry: {plain:.1f} s, ratio {plain / peer_seconds:.2f}x")
            full = ours(f"http://localhost:{port}", home, "wk-full", True, args.workers)
            print(
                f"ours with registered versions and aliases: {full:.1f} s, "
                f"ratio {full / peer_seconds:.2f}x"
            )
            print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus (end)")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
            shutil.rmtree(folder / "artifacts", ignore_errors=True)
    ok = plain / peer_seconds <= TARGET_RATIO
    print(
        f"{args.versions:,} versions x {POINTS} values: ratio without the registry "
        f"{plain / peer_seconds:.2f}x (target <= {TARGET_RATIO}x) {'ok' if ok else 'TOO SLOW'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
