"""Write a populated ledger for the app's benchmark, tests and screenshots.

Usage: .venv/bin/python benchmarks/make_app_fixture.py LEDGER.db [--versions 100000] [--days 365]

The rows go straight into the ledger's tables (schema from `open_ledger`): repos, models, one
run per model version, activity events and coding-time days for a year of work, data sources
with snapshot histories, open alerts (stale, drift with per-column statistics, failed run),
experiment versions, promotions, aliases with history, tags, notes, and step metrics (learning
curves) for the newest versions; `--step-points N` gives one version a curve of N points.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.ledger import open_ledger

MODEL_NAMES = ("churn", "fraud", "ranker", "forecast", "vision", "intent", "pricing", "ner")


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def build_fixture(
    ledger: Path,
    *,
    versions: int = 100_000,
    days: int = 365,
    now: float | None = None,
    seed: int = 7,
    runs_dir: Path | None = None,
    model_count: int | None = None,
    step_points: int = 0,
) -> Path:
    """Fill `ledger` (created if needed) and return its path.

    With `runs_dir`, the newest runs get real log files there (for the Runs page's log view).
    `model_count` models share the versions (by default one per ten versions, at most 40);
    with `step_points`, the newest succeeded version of the first model has a learning curve
    of that many points per metric, stored in chunks as the agent stores a long run.
    """
    rng = random.Random(seed)
    now = now or time.time()
    db = open_ledger(ledger)
    connection = db.conn
    with connection:
        repos = [
            (i + 1, f"/home/dev/src/project-{i + 1}", f"project-{i + 1}", now - 400 * 86400)
            for i in range(3)
        ]
        connection.executemany("INSERT INTO repos VALUES (?, ?, ?, ?)", repos)
        models = [
            (
                i + 1,
                i % 3 + 1,
                f"{MODEL_NAMES[i % len(MODEL_NAMES)]}-{i // len(MODEL_NAMES)}"
                if i >= len(MODEL_NAMES)
                else MODEL_NAMES[i],
            )
            for i in range(model_count or max(1, min(40, versions // 10 or 1)))
        ]
        connection.executemany("INSERT INTO models VALUES (?, ?, ?)", models)
        _insert_data(connection, rng, now)
        _insert_versions(connection, rng, models, versions, now, runs_dir)
        _insert_activity(connection, rng, days, now)
        _insert_alerts(connection, models, now)
        _insert_verdicts(connection, repos, models, now)
        _insert_names(connection, rng, models, now)
        _insert_steps(connection, models, step_points)
    connection.close()
    return ledger


def _insert_data(connection, rng: random.Random, now: float) -> None:  # type: ignore[no-untyped-def]
    sources = [
        (1, "/home/dev/data/churn", "folder", now - 300 * 86400),
        (2, "/home/dev/data/transactions.csv", "file", now - 200 * 86400),
    ]
    connection.executemany("INSERT INTO data_sources VALUES (?, ?, ?, ?)", sources)
    snapshot_id = 0
    for source_id, _, kind, added in sources:
        files = {f"part-{i:03d}.csv": _sha(f"{source_id}-{i}-0") for i in range(24)}
        if kind == "file":
            files = {"transactions.csv": _sha("tx-0")}
        taken = added
        for step in range(30):
            snapshot_id += 1
            if step:
                for name in rng.sample(sorted(files), k=min(len(files), rng.randint(1, 3))):
                    files[name] = _sha(f"{name}-{step}")
                if kind == "folder" and step % 5 == 0:
                    files[f"part-{100 + step:03d}.csv"] = _sha(f"new-{step}")
            taken += rng.uniform(3, 12) * 86400
            sizes = {
                name: 40_000 + (int(digest[:6], 16) % 900_000) for name, digest in files.items()
            }
            fingerprint = _sha(json.dumps(sorted(files.items())))
            connection.execute(
                "INSERT INTO data_snapshots (id, source_id, fingerprint, n_files, total_bytes,"
                " taken_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    snapshot_id,
                    source_id,
                    fingerprint,
                    len(files),
                    sum(sizes.values()),
                    min(taken, now - 3600),
                ),
            )
            connection.executemany(
                "INSERT INTO data_snapshot_files VALUES (?, ?, ?, ?, ?)",
                [
                    (snapshot_id, name, sizes[name], int(taken * 1e9), digest)
                    for name, digest in files.items()
                ],
            )


def _insert_versions(  # type: ignore[no-untyped-def]
    connection, rng: random.Random, models, versions: int, now: float, runs_dir: Path | None
) -> None:
    statuses = ["succeeded"] * 17 + ["failed", "cancelled", "interrupted"]
    executors = [("local", "workstation"), ("ssh", "gpu-box"), ("slurm", "cluster-login")]
    start = now - 365 * 86400
    step = 365 * 86400 / max(versions, 1)
    version_numbers = dict.fromkeys((model[0] for model in models), 0)
    run_rows = []
    version_rows = []
    for index in range(versions):
        model_id = models[index % len(models)][0]
        version_numbers[model_id] += 1
        started = start + index * step
        latest = index >= versions - 3
        status = "running" if latest and index == versions - 1 else rng.choice(statuses)
        ended = None if status == "running" else started + rng.uniform(30, 5400)
        executor, host = rng.choice(executors)
        run_id = f"r{index:06d}"
        accuracy = 0.7 + 0.25 * (1 - math.exp(-index / 20000)) + rng.uniform(-0.02, 0.02)
        metrics = json.dumps({"accuracy": round(accuracy, 4), "loss": round(1 - accuracy, 4)})
        experiment = int(rng.random() < 0.2)  # trained with --param values of its own
        learning_rate = rng.choice([0.1, 0.001]) if experiment else 0.01
        params = json.dumps(
            {"lr": learning_rate, "epochs": rng.randint(3, 30) if experiment else 10}
        )
        commit = _sha(f"commit-{index // 7}")
        run_dir = (runs_dir or Path("/home/dev/.local/share/watchkeeper/runs")) / run_id
        if runs_dir is not None and index >= versions - 5:
            _write_log(run_dir, rng, accuracy, finished=status != "running")
        run_rows.append(
            (
                run_id,
                model_id,
                "running" if status == "running" else status,
                executor,
                None if executor == "local" else host,
                host,
                None,
                None,
                str(run_dir),
                str(run_dir / "log"),
                0,
                None if ended is None else (0 if status == "succeeded" else 1),
                started - 5,
                started,
                ended,
                None,
            )
        )
        version_rows.append(
            (
                index + 1,
                model_id,
                version_numbers[model_id],
                status,
                commit,
                int(rng.random() < 0.15),
                None,
                "python train.py --data data/train.csv",
                params,
                metrics if status == "succeeded" else "{}",
                json.dumps(
                    {
                        "data/churn": {
                            "snapshot_id": 1 + index % 30,
                            "fingerprint": _sha(str(index % 30)),
                        }
                    }
                ),
                json.dumps({"train.py": _sha(f"code-{index // 11}")}),
                json.dumps({"model.pkl": _sha(f"artifact-{index}")})
                if status == "succeeded"
                else "{}",
                executor,
                host,
                None,
                run_id,
                started,
                ended,
                None if ended is None else (0 if status == "succeeded" else 1),
                experiment,
            )
        )
    connection.executemany(
        f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({','.join('?' * len(RUN_COLUMNS))})",
        run_rows,
    )
    connection.executemany(
        f"INSERT INTO model_versions ({', '.join(VERSION_COLUMNS)}) "
        f"VALUES ({','.join('?' * len(VERSION_COLUMNS))})",
        version_rows,
    )


RUN_COLUMNS = (
    "id",
    "model_id",
    "state",
    "executor",
    "remote",
    "host",
    "remote_job_id",
    "pid",
    "run_dir",
    "log_path",
    "log_offset",
    "exit_code",
    "created_at",
    "started_at",
    "ended_at",
    "detail",
)
# The columns the fixture fills, in order (later migrations add columns it leaves NULL).
VERSION_COLUMNS = (
    "id",
    "model_id",
    "version",
    "status",
    "commit_sha",
    "dirty",
    "diff_hash",
    "train_command",
    "params",
    "metrics",
    "data",
    "code",
    "artifacts",
    "executor",
    "host",
    "remote_job_id",
    "run_id",
    "started_at",
    "ended_at",
    "exit_code",
    "experiment",
)


def _write_log(run_dir: Path, rng: random.Random, accuracy: float, *, finished: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = ["loading data/train.csv: 48,210 rows, 14 columns"]
    epochs = 12 if finished else 7
    for epoch in range(1, epochs + 1):
        loss = 1.2 * math.exp(-epoch / 4) + rng.uniform(0, 0.02)
        lines.append(
            f"epoch {epoch:2d}/12  loss {loss:.4f}  val_accuracy {accuracy - 0.1 / epoch:.4f}"
        )
    if finished:
        lines += ["saving model.pkl", f"metrics: accuracy={accuracy:.4f}"]
    (run_dir / "log").write_text("\n".join(lines) + "\n")


def _insert_activity(connection, rng: random.Random, days: int, now: float) -> None:  # type: ignore[no-untyped-def]
    today = date.fromtimestamp(now)
    events = []
    day_rows = []
    for offset in range(days, -1, -1):
        day = today - timedelta(days=offset)
        if day.weekday() >= 5 and rng.random() < 0.8:
            continue
        midnight = datetime(day.year, day.month, day.day).timestamp()
        minutes = 0.0
        for session_start_hour in (
            rng.uniform(8.5, 10.5),
            rng.uniform(13.5, 15.0),
            rng.uniform(20, 22) if rng.random() < 0.2 else None,
        ):
            if session_start_hour is None:
                continue
            length = rng.uniform(0.5, 3.0)
            minutes += length * 60
            t = midnight + session_start_hour * 3600
            end = t + length * 3600
            while t < end and t < now:
                events.append((t, "save", 1 + int(t) % 3, f"src/module_{int(t) % 17}.py"))
                t += rng.expovariate(1 / 75)
            if end < now:
                events.append((end, "commit", 1 + int(end) % 3, None))
        timeout = minutes * rng.uniform(0.8, 1.0)
        day_rows.append(
            (
                day.isoformat(),
                "dev@example.com",
                minutes * rng.uniform(0.85, 1.05),
                minutes * rng.uniform(0.9, 1.4),
                timeout,
                None,
            )
        )
    connection.executemany(
        "INSERT OR IGNORE INTO activity_events (ts, kind, repo_id, path) VALUES (?, ?, ?, ?)",
        events,
    )
    connection.executemany("INSERT INTO coding_time_days VALUES (?, ?, ?, ?, ?, ?)", day_rows)


def _insert_alerts(connection, models, now: float) -> None:  # type: ignore[no-untyped-def]
    drift = [
        {
            "path": "data/churn/part-003.csv",
            "drifted_share": 0.4,
            "columns": [
                {
                    "column": "age",
                    "kind": "numeric",
                    "test": "KS",
                    "statistic": 0.21,
                    "threshold": 0.1,
                    "drifted": True,
                },
                {
                    "column": "tenure",
                    "kind": "numeric",
                    "test": "KS",
                    "statistic": 0.04,
                    "threshold": 0.1,
                    "drifted": False,
                },
                {
                    "column": "city",
                    "kind": "categorical",
                    "test": "JS",
                    "statistic": 0.18,
                    "threshold": 0.1,
                    "drifted": True,
                },
                {
                    "column": "plan",
                    "kind": "categorical",
                    "test": "chi2",
                    "statistic": 0.02,
                    "threshold": 0.05,
                    "drifted": False,
                },
                {
                    "column": "spend",
                    "kind": "numeric",
                    "test": "Wasserstein",
                    "statistic": 0.06,
                    "threshold": 0.1,
                    "drifted": False,
                },
            ],
        }
    ]
    first = models[0][0]
    rows = [
        (
            1,
            now - 7200,
            first,
            "stale",
            "churn is stale: data/churn changed",
            json.dumps(
                [
                    "data files modified: data/churn/part-003.csv",
                    "2/5 columns drifted: age (KS 0.21), city (JS 0.18)",
                ]
            ),
            json.dumps([1]),
            json.dumps(drift),
            "stale-churn-1",
            None,
        ),
        (
            2,
            now - 3600,
            models[min(1, len(models) - 1)][0],
            "stale",
            "fraud is stale: params changed",
            json.dumps(["params changed: lr 0.01 -> 0.001"]),
            json.dumps([2]),
            None,
            "stale-fraud-2",
            None,
        ),
        (
            3,
            now - 1800,
            first,
            "drift",
            "2/5 columns drifted: age (KS 0.21), city (JS 0.18)",
            json.dumps(["data/churn/part-003.csv"]),
            json.dumps([1]),
            json.dumps(drift),
            "drift-churn-1",
            None,
        ),
    ]
    columns = (
        "id, created_at, model_id, kind, message, reasons, versions, drift, dedupe_key,"
        " acknowledged_at"
    )
    connection.executemany(f"INSERT INTO alerts ({columns}) VALUES ({','.join('?' * 10)})", rows)


def _insert_verdicts(connection, repos, models, now: float) -> None:  # type: ignore[no-untyped-def]
    """The verdict on each model as the agent stores it: the first two stale, the rest fresh."""
    paths = {repo_id: path for repo_id, path, _name, _added in repos}
    rows = []
    for index, (model_id, repo_id, name) in enumerate(models):
        version_id, version = connection.execute(
            "SELECT id, version FROM model_versions WHERE model_id = ? AND status = 'succeeded'"
            " ORDER BY version DESC LIMIT 1",
            (model_id,),
        ).fetchone() or (None, None)
        stale = index < 2 and version_id is not None
        reasons = (
            [
                {
                    "kind": "data",
                    "message": "data changed in data/churn: 1 modified (part-003.csv)",
                    "paths": ["data/churn/part-003.csv"],
                    "drift": [],
                }
            ]
            if stale
            else []
        )
        verdict = "stale" if stale else "fresh" if version_id is not None else "never trained"
        rows.append(
            (
                paths[repo_id],
                name,
                verdict,
                version,
                version_id,
                "succeeded",
                json.dumps(reasons),
                None,
                now,
            )
        )
    connection.executemany(
        "INSERT INTO model_verdicts (repo, model, verdict, version, version_id, latest_status,"
        " reasons, error, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _insert_names(connection, rng: random.Random, models, now: float) -> None:  # type: ignore[no-untyped-def]
    """Per model: a promoted version, `champion` (moved once, so it has history) and
    `candidate` aliases, tags on a few versions and a note."""
    for model_id, _repo_id, _name in models:
        succeeded = [
            row[0]
            for row in connection.execute(
                "SELECT id FROM model_versions WHERE model_id = ? AND status = 'succeeded'"
                " AND experiment = 0 ORDER BY version",
                (model_id,),
            )
        ]
        if len(succeeded) < 3:
            continue
        first, promoted, newest = succeeded[len(succeeded) // 3], succeeded[-2], succeeded[-1]
        connection.execute(
            "INSERT INTO model_promotions (model_id, version_id, at) VALUES (?, ?, ?)",
            (model_id, promoted, now - 3600),
        )
        connection.executemany(
            "INSERT INTO version_aliases (model_id, alias, version_id, set_at, moved_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (model_id, "champion", first, now - 30 * 86400, now - 3600),
                (model_id, "champion", promoted, now - 3600, None),
                (model_id, "candidate", newest, now - 600, None),
            ],
        )
        for version_id in rng.sample(succeeded, min(5, len(succeeded))):
            connection.execute(
                "INSERT INTO version_tags (version_id, key, value, set_at) VALUES (?, ?, ?, ?)",
                (version_id, "dataset", rng.choice(["v1", "v2"]), now - 7200),
            )
        connection.execute(
            "INSERT INTO version_notes (version_id, at, text) VALUES (?, ?, ?)",
            (promoted, now - 3500, "promoted after the Q3 review"),
        )


STEP_CHUNK_POINTS = 65_536  # points per stored chunk of a long run


def _insert_steps(connection, models, big_points: int) -> None:  # type: ignore[no-untyped-def]
    """Learning curves (loss and accuracy per step) for each model's newest versions; the
    newest succeeded version of the first model gets `big_points` points when asked."""
    import numpy as np

    rows = []
    given = False
    for model_id, _repo_id, _name in models:
        newest = connection.execute(
            "SELECT id, run_id, status FROM model_versions WHERE model_id = ?"
            " AND status IN ('succeeded', 'running') ORDER BY version DESC LIMIT 4",
            (model_id,),
        ).fetchall()
        for rank, (version_id, run_id, status) in enumerate(newest):
            big = big_points and model_id == models[0][0] and status == "succeeded" and not given
            given = given or bool(big)
            wanted = big_points if big else 300
            if status == "running":
                wanted = 120  # part of the way through
            steps = np.arange(1, wanted + 1, dtype="<f8")
            rate = 0.004 * (1 + rank) * 300 / max(wanted, 300)
            noise = np.random.default_rng(version_id).normal(0, 0.01, wanted)
            loss = 0.1 + 0.9 * np.exp(-rate * steps) + noise
            for name, values in (("loss", loss), ("accuracy", 1 - loss * 0.8)):
                for start in range(0, wanted, STEP_CHUNK_POINTS):
                    end = min(start + STEP_CHUNK_POINTS, wanted)
                    rows.append(
                        (
                            version_id,
                            run_id,
                            name,
                            start + 1,
                            end - start,
                            steps[start:end].astype("<f8").tobytes(),
                            np.asarray(values[start:end], dtype="<f8").tobytes(),
                        )
                    )
            connection.execute(
                "INSERT INTO step_metric_reads (run_id, version_id, lines, file_lines)"
                " VALUES (?, ?, ?, ?)",
                (run_id, version_id, wanted, wanted),
            )
    connection.executemany(
        "INSERT INTO step_metrics (version_id, run_id, name, first_line, points, steps_f8,"
        " values_f8) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ledger", type=Path)
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--models", type=int, help="how many models share the versions")
    parser.add_argument("--step-points", type=int, default=0, help="points of one long curve")
    arguments = parser.parse_args()
    if arguments.ledger.exists():
        sys.exit(f"{arguments.ledger} exists; choose a new file")
    started = time.perf_counter()
    build_fixture(
        arguments.ledger,
        versions=arguments.versions,
        days=arguments.days,
        model_count=arguments.models,
        step_points=arguments.step_points,
    )
    print(f"wrote {arguments.ledger} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
