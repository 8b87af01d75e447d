"""`watchkeeper data diff` rows of a 1,000,000-row CSV between two kept snapshots, against `diff`.

The old file has 1,000,000 rows (id, score, city, age); the new one changes 1,000 of them,
removes 10 and adds 20. Both are kept as snapshots; the folder then moves on, so the rows come
from the blob store. Timed: the whole CLI (`watchkeeper data diff A B`, Python start-up
included), matching rows by the id column and as whole lines, against GNU `diff` of the two
files in the same run, alternated (`--rounds`, 3 by default). Best times and the load average
are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = 1_000_000
ROUNDS = 3


def load() -> str:
    return "load average " + ", ".join(f"{value:.1f}" for value in os.getloadavg())


def write_tables(folder: Path, rows: int) -> tuple[list[str], list[str]]:
    rng = random.Random(7)
    cities = ["oslo", "bergen", "roma", "lima", "pune"]
    old = [
        f"{i},{rng.random():.6f},{rng.choice(cities)},{rng.randint(18, 90)}" for i in range(rows)
    ]
    new = old[:]
    for index in range(0, rows, rows // 1000):
        new[index] = new[index].rsplit(",", 1)[0] + ",100"
    del new[rows // 2 : rows // 2 + 10]
    new += [f"{rows + i},0.5,oslo,30" for i in range(20)]
    return old, new


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    arguments = parser.parse_args()
    wk = str(Path(sys.executable).with_name("watchkeeper"))
    with tempfile.TemporaryDirectory(prefix="wk-bench-data-diff-", dir="/var/tmp") as scratch:
        work = Path(scratch)
        env = {**os.environ, "WATCHKEEPER_HOME": str(work / "home")}
        data = work / "data"
        data.mkdir()
        old, new = write_tables(work, arguments.rows)
        header = "id,score,city,age\n"
        ids = []
        for rows in (old, new):
            (data / "table.csv").write_text(header + "\n".join(rows) + "\n")
            taken = subprocess.run(
                [wk, "data", "snapshot", str(data), "--keep-data", "always", "--json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            ids.append(str(json.loads(taken.stdout)["snapshot_id"]))
        (work / "old.csv").write_text(header + "\n".join(old) + "\n")
        (work / "new.csv").write_text(header + "\n".join(new) + "\n")
        (data / "table.csv").write_text(header)  # the folder moves on: rows come from the store
        keyed, lines, peer = [], [], []
        for _ in range(arguments.rounds):
            seconds, keyed_out = timed([wk, "data", "diff", *ids, "--rows", "5"], env)
            keyed.append(seconds)
            seconds, _ = timed([wk, "data", "diff", *ids, "--rows", "5", "--key", ""], env)
            lines.append(seconds)
            seconds, _ = timed(["diff", str(work / "old.csv"), str(work / "new.csv")], env)
            peer.append(seconds)
        summary = [line for line in keyed_out.splitlines() if line.startswith("  rows")]
        print(f"{arguments.rows} rows; {summary[0].strip() if summary else keyed_out}")
        print(
            f"data diff by id {min(keyed):.2f}s, as whole lines {min(lines):.2f}s, GNU diff "
            f"{min(peer):.2f}s (ratios {min(keyed) / min(peer):.2f}, "
            f"{min(lines) / min(peer):.2f}); {load()}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
