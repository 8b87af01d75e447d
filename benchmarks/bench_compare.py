"""`models compare MODEL --last 1000` on a 100,000-version ledger, as a user runs it.

Usage: .venv/bin/python benchmarks/bench_compare.py [--versions 100000] [--last 1000] [--repeat 5]

Each timing is a fresh `watchkeeper` process (interpreter start, imports, ledger open, query,
rendering), output to a pipe, median of --repeat runs. The peer is the floor: a bare
`python -c` that opens the same ledger with sqlite3, reads the same rows and decodes their
JSON columns, with no rendering. Target: <= 0.5 s for the table, --json and --csv.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

PEER = """
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute(
    "SELECT v.version, v.params, v.metrics FROM model_versions v JOIN models m"
    " ON m.id = v.model_id WHERE m.name = ? ORDER BY v.version DESC LIMIT ?",
    [sys.argv[2], int(sys.argv[3])],
).fetchall()
decoded = [(version, json.loads(p), json.loads(m)) for version, p, m in rows]
print(len(decoded))
"""


def timed(command: list[str], env: dict[str, str], repeat: int) -> dict[str, float]:
    """Median wall time and median CPU time (user + system) of `command`, in seconds.

    The CPU time is what the command itself costs; on a machine whose cores are shared, the
    wall time also holds the time spent waiting for a core.
    """
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        completed = subprocess.run(command, env=env, capture_output=True, check=False)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if completed.returncode != 0:
            raise SystemExit(f"{command} failed: {completed.stderr.decode()}")
    return {"wall": round(statistics.median(walls), 3), "cpu": round(statistics.median(cpus), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--last", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model", default="churn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        env = {**os.environ, "WATCHKEEPER_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
        os.environ["WATCHKEEPER_HOME"] = str(home)
        from benchmarks.make_app_fixture import build_fixture

        started = time.perf_counter()
        build_fixture(home / "ledger.db", versions=args.versions, days=30)
        built = time.perf_counter() - started
        base = [sys.executable, "-m", "agent", "models", "compare", args.model]
        last = ["--last", str(args.last)]
        results = {
            "versions_in_ledger": args.versions,
            "compared": args.last,
            "fixture_seconds": round(built, 2),
            "table": timed([*base, *last], env, args.repeat),
            "json": timed([*base, *last, "--json"], env, args.repeat),
            "csv": timed([*base, *last, "--csv"], env, args.repeat),
            "sorted_table": timed([*base, *last, "--sort", "-accuracy"], env, args.repeat),
            "peer_bare_sqlite": timed(
                [sys.executable, "-c", PEER, str(home / "ledger.db"), args.model, str(args.last)],
                env,
                args.repeat,
            ),
            "load_average": round(os.getloadavg()[0], 2),
        }
    print(json.dumps(results, indent=2))
    ours = [results[key] for key in ("table", "json", "csv", "sorted_table")]
    floor = results["peer_bare_sqlite"]
    worst_wall = max(entry["wall"] for entry in ours)
    worst_cpu = max(entry["cpu"] for entry in ours)
    print(
        f"slowest compare: {worst_wall:.3f} s wall, {worst_cpu:.3f} s CPU (target <= 0.5 s); "
        f"bare sqlite3 floor {floor['wall']:.3f} s wall, {floor['cpu']:.3f} s CPU"
    )


if __name__ == "__main__":
    main()
