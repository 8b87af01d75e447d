"""Step metrics: loading 1,000,000 points of one version, and the cost of logging one line.

Load: `load_step_metrics` (float64 chunks) against a plain sqlite3 fetch of the same points
from a long table `(version_id, name, step, value)` turned into numpy arrays, in one ledger.
Logging: `agent.steplog.log_step` against the bare idioms a script would otherwise write
(`json.dumps` per line, buffered or line-buffered), each appending to a real file.
Each figure is the median of several rounds; the ratio is peer time / ours.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LOAD_TARGET_SECONDS = 1.0
LOG_TARGET_MICROSECONDS = 5.0


def median_seconds(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ledger_with_points(home: Path, points: int) -> tuple[Path, int]:
    """A real ledger holding one version whose run wrote `points` points (two metrics),
    stored the way a run stores them; also the same points in a plain long table."""
    os.environ["WATCHKEEPER_HOME"] = str(home)
    from agent.ledger import open_ledger, write_transaction
    from agent.runs.step_metrics import compact_steps, record_steps

    db = open_ledger()
    steps_per_metric = points // 2
    with write_transaction(db):
        db.execute("INSERT INTO repos (id, path, name) VALUES (1, '/repo', 'repo')")
        db.execute("INSERT INTO models (id, repo_id, name) VALUES (1, 1, 'churn')")
        db.execute("INSERT INTO runs (id, model_id, state) VALUES ('r1', 1, 'running')")
        db.execute(
            "INSERT INTO model_versions (id, model_id, version, status, run_id) "
            "VALUES (1, 1, 1, 'running', 'r1')"
        )
    lines = b"".join(
        b'{"step": %d, "loss": %r, "acc": %r}\n' % (step, 1 / (step + 1), step / steps_per_metric)
        for step in range(steps_per_metric)
    )
    started = time.perf_counter()
    block = 4 << 20  # what a live reader takes per round, about
    offset = 0
    while offset < len(lines):
        end = lines.rfind(b"\n", offset, offset + block) + 1 or len(lines)
        record_steps(db, "r1", 1, offset, lines[offset:end])
        offset = end
    compact_steps(db, "r1")
    ingest = time.perf_counter() - started
    print(
        f"ingest: {steps_per_metric:,} lines ({len(lines) / 1e6:.0f} MB) parsed and stored in "
        f"{ingest:.2f} s ({ingest / steps_per_metric * 1e6:.1f} us/line, off the training process)"
    )
    with write_transaction(db):
        db.execute(
            "CREATE TABLE plain_steps (version_id INTEGER, name TEXT, step REAL, value REAL)"
        )
        db.execute("CREATE INDEX plain_steps_version ON plain_steps(version_id, name)")
        db.conn.executemany(
            "INSERT INTO plain_steps VALUES (1, ?, ?, ?)",
            (
                (name, float(step), value)
                for name, value_of in (
                    ("acc", lambda s: s / steps_per_metric),
                    ("loss", lambda s: 1 / (s + 1)),
                )
                for step in range(steps_per_metric)
                for value in (value_of(step),)
            ),
        )
    db.close()
    return home / "ledger.db", 1


def bench_load(points: int, rounds: int) -> bool:
    import sqlite3

    import numpy as np

    from agent.runs.step_queries import load_step_metrics

    with tempfile.TemporaryDirectory() as folder:
        ledger, version_id = ledger_with_points(Path(folder), points)
        connection = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)

        def ours() -> int:
            series = load_step_metrics(connection, version_id)
            return sum(len(s) for s in series.values())

        def plain() -> int:
            rows = connection.execute(
                "SELECT name, step, value FROM plain_steps WHERE version_id = ? "
                "ORDER BY name, rowid",
                [version_id],
            ).fetchall()
            steps = np.fromiter((row[1] for row in rows), dtype="f8", count=len(rows))
            values = np.fromiter((row[2] for row in rows), dtype="f8", count=len(rows))
            return len(steps) + len(values) - len(rows)

        assert ours() == plain() == points, (ours(), plain())
        mine = median_seconds(ours, rounds)
        peer = median_seconds(plain, max(1, rounds // 2))
        connection.close()
    ok = mine <= LOAD_TARGET_SECONDS
    print(
        f"load {points:,} points of one version: load_step_metrics {mine * 1000:.1f} ms, "
        f"plain sqlite3 fetch into numpy {peer * 1000:.0f} ms: {peer / mine:.0f}x "
        f"(target <= {LOAD_TARGET_SECONDS:g} s: {'ok' if ok else 'MISSED'})"
    )
    return ok


def bench_logging(lines: int, rounds: int) -> bool:
    from agent.steplog import StepLog

    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "steps.jsonl")

        def with_steplog() -> None:
            steps = StepLog(path)
            for step in range(lines):
                steps.log(step, loss=0.31, acc=0.88)
            steps.close()

        def json_dumps_buffered() -> None:
            with open(path, "a") as handle:
                for step in range(lines):
                    handle.write(json.dumps({"step": step, "loss": 0.31, "acc": 0.88}) + "\n")

        def json_dumps_line_buffered() -> None:
            with open(path, "a", buffering=1) as handle:
                for step in range(lines):
                    handle.write(json.dumps({"step": step, "loss": 0.31, "acc": 0.88}) + "\n")

        results = {
            name: median_seconds(action, rounds) / lines * 1e6
            for name, action in (
                ("agent.steplog.log_step", with_steplog),
                ("json.dumps, buffered", json_dumps_buffered),
                ("json.dumps, line-buffered (flush per line)", json_dumps_line_buffered),
            )
        }
    ours = results["agent.steplog.log_step"]
    for name, micros in results.items():
        ratio = "" if name.startswith("agent") else f" ({micros / ours:.1f}x ours)"
        print(f"log one line, {name}: {micros:.2f} us{ratio}")
    ok = ours < LOG_TARGET_MICROSECONDS
    print(f"log_step target < {LOG_TARGET_MICROSECONDS:g} us/line: {'ok' if ok else 'MISSED'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--log-lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    load_ok = bench_load(args.points, args.rounds)
    log_ok = bench_logging(args.log_lines, args.rounds)
    return 0 if load_ok and log_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
