"""MLflow capture: recording a run that logged 100,000 metric values, once the run has ended.

Ours: `capture_run` reads the run folder's mlflow.db (plain sqlite3 on MLflow's schema) and
`store_capture` writes the points into the ledger as step metrics, in one transaction.
Peer: reading the same points back with MLflow's own client (`MlflowClient.get_metric_history`
for each metric), without writing them anywhere. The file is written by real MLflow
(`MlflowClient.log_batch`). Each figure is the median of several rounds; the target is 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_SECONDS = 1.0
METRICS = 10


def median_seconds(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def logged_run(run_dir: Path, values: int) -> tuple[str, str]:
    """A real mlflow.db in run_dir with one run that logged `values` metric values."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("churn")
    run = client.create_run(experiment, run_name="churn-v1")
    steps = values // METRICS
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, params=[Param("lr", "0.01")])
    batch: list[Metric] = []
    for step in range(steps):
        for index in range(METRICS):
            batch.append(Metric(f"m{index}", 1.0 / (step + 1 + index), now + step, step))
            if len(batch) == 1000:
                client.log_batch(run.info.run_id, metrics=batch)
                batch = []
    if batch:
        client.log_batch(run.info.run_id, metrics=batch)
    client.set_terminated(run.info.run_id)
    return uri, run.info.run_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--values", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(prefix="wk-bench-mlflow-") as scratch:
        home, run_dir = Path(scratch, "home"), Path(scratch, "run")
        run_dir.mkdir()
        os.environ["WATCHKEEPER_HOME"] = str(home)
        started = time.perf_counter()
        uri, mlflow_run_id = logged_run(run_dir, args.values)
        print(f"logged {args.values:,} values with MLflow in {time.perf_counter() - started:.1f} s")

        from agent.interop.mlflow_capture import capture_run, store_capture
        from agent.ledger import open_ledger, write_transaction

        db = open_ledger()
        with write_transaction(db):
            db.execute("INSERT INTO repos (id, path, name) VALUES (1, '/repo', 'repo')")
            db.execute("INSERT INTO models (id, repo_id, name) VALUES (1, 1, 'churn')")
        rounds = iter(range(args.rounds))

        def capture() -> None:
            number = next(rounds)
            run_id = f"r{number}"
            with write_transaction(db):
                db.execute(
                    "INSERT INTO runs (id, model_id, state) VALUES (?, 1, 'running')", [run_id]
                )
                db.execute(
                    "INSERT INTO model_versions (id, model_id, version, status, run_id) "
                    "VALUES (?, 1, ?, 'running', ?)",
                    [number + 1, number + 1, run_id],
                )
            captured = capture_run(run_dir, {"lr": 0.01})
            with write_transaction(db):
                store_capture(db, run_id, number + 1, captured)

        ours = median_seconds(capture, args.rounds)
        stored = db.execute("SELECT sum(points) FROM step_metrics WHERE run_id = 'r0'").fetchone()
        assert stored[0] == args.values, stored

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)

        def read_with_mlflow() -> None:
            for index in range(METRICS):
                client.get_metric_history(mlflow_run_id, f"m{index}")

        peer = median_seconds(read_with_mlflow, args.rounds)
    ok = ours <= TARGET_SECONDS
    print(
        f"capture of {args.values:,} values into the ledger: {ours:.3f} s "
        f"(target <= {TARGET_SECONDS:.1f} s) {'ok' if ok else 'TOO SLOW'}"
    )
    print(
        f"MlflowClient.get_metric_history of the same values (read only): {peer:.3f} s; "
        f"ratio {peer / ours:.1f}x"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
