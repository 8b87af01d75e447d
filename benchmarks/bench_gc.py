"""`watchkeeper gc --dry-run` over a store of 100,000 blobs and a ledger of 100,000 versions.

The ledger comes from make_app_fixture (100,000 versions across 40 models); each version
lists one artifact blob in `version_blobs`, every tenth one a data blob too, and a third of
the versions are marked deleted. The store holds one file per listed digest (100,000 in all,
half of them older than the grace period). The figure is the wall time of the whole command,
process start included; the target is 5 s. `--scale 0.1` shrinks everything.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.make_app_fixture import build_fixture

TARGET_SECONDS = 5.0
ROUNDS = 3


def digest_hex(kind: str, index: int) -> str:
    return hashlib.sha256(f"{kind}-{index}".encode()).hexdigest()


def fill(home: Path, versions: int, blobs: int) -> None:
    """The fixture ledger, its version_blobs rows, deleted marks and the store's files."""
    ledger = build_fixture(home / "ledger.db", versions=versions)
    db = sqlite3.connect(ledger)
    ids = [row[0] for row in db.execute("SELECT id FROM model_versions ORDER BY id")]
    rows = []
    listed = 0
    for position, version_id in enumerate(ids):
        rows.append((version_id, "artifact", "model.pkl", "blake3:" + digest_hex("a", position)))
        listed += 1
        if position % 10 == 0 and listed < blobs:
            rows.append(
                (version_id, "data", "data/train.csv", "blake3:" + digest_hex("d", position))
            )
            listed += 1
    with db:
        db.executemany("INSERT OR REPLACE INTO version_blobs VALUES (?, ?, ?, ?)", rows)
        db.execute(
            "UPDATE model_versions SET deleted_at = ? WHERE id % 3 = 0 AND status != 'running'",
            [time.time()],
        )
    db.close()
    old = time.time() - 2 * 3600
    for written, (_, _, _, digest) in enumerate(rows[:blobs]):
        hexdigest = digest.removeprefix("blake3:")
        folder = home / "artifacts" / hexdigest[:2]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / hexdigest[2:]
        path.write_bytes(hexdigest.encode())
        if written % 2 == 0:
            os.utime(path, (old, old))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    versions = blobs = int(100_000 * args.scale)
    with tempfile.TemporaryDirectory(prefix="wk-bench-gc-") as folder:
        home = Path(folder) / "home"
        home.mkdir()
        started = time.perf_counter()
        fill(home, versions, blobs)
        print(
            f"fixture: {versions} versions, {blobs} blobs ({time.perf_counter() - started:.1f} s)"
        )
        env = {**os.environ, "WATCHKEEPER_HOME": str(home)}
        command = [sys.executable, "-m", "agent", "gc", "--dry-run"]
        times = []
        output = ""
        for _ in range(ROUNDS):
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=folder)
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"gc --dry-run failed: {done.stderr.strip()}")
            output = done.stdout
        best = min(times)
        print(output.rstrip())
        verdict = "ok" if best <= TARGET_SECONDS else "TOO SLOW"
        print(
            f"gc --dry-run: {best:.2f} s (best of {ROUNDS}); target {TARGET_SECONDS:g} s "
            f"(at --scale 1), ratio {best / TARGET_SECONDS:.2f} {verdict}"
        )


if __name__ == "__main__":
    main()
