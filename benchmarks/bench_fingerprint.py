"""Data fingerprint speed against md5sum/sha256sum (cold hashing) and git status (re-checking).

Run: .venv/bin/python benchmarks/bench_fingerprint.py [--data-dir DIR] [--repeat N]

1. Cold hashing of 1 GiB in 2,000 files: Watchkeeper's fingerprint with an empty stat cache
   against `md5sum` (what DVC computes) and `sha256sum` over the same files.
   Target: at least 4x faster than md5sum.
2. Re-checking 100,000 small files with nothing changed: fingerprint with its stat cache against
   `git status --porcelain` on the same tree committed to git. Target: at most 1.5x git status.

Both sides run on the same files in the same run, with a warm page cache; each timing is the
median of several repetitions, alternating the tools.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import agent.data.fingerprint as fingerprint_module  # noqa: E402
from agent.data import scan as scan_module  # noqa: E402
from agent.data.fingerprint import StatCache, fingerprint  # noqa: E402

GIB = 1 << 30
COLD_FILES = 2000
SMALL_FILES = 100_000
SMALL_FOLDERS = 1000


def make_cold_tree(root: Path) -> list[Path]:
    """1 GiB of random bytes in 2,000 files of 512 KiB, in 20 folders (reused between runs)."""
    size = GIB // COLD_FILES
    marker = root.parent / f"{root.name}.complete"
    files = [root / f"part-{i // 100:02d}" / f"chunk-{i:04d}.bin" for i in range(COLD_FILES)]
    if marker.exists():
        return files
    shutil.rmtree(root, ignore_errors=True)
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    marker.write_text("")
    return files


def make_small_tree(root: Path) -> None:
    """100,000 small files in 1,000 folders, committed to a git repo (reused between runs)."""
    marker = root / ".git" / "wk-bench-complete"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    per_folder = SMALL_FILES // SMALL_FOLDERS
    for folder in range(SMALL_FOLDERS):
        directory = root / f"shard-{folder:04d}"
        directory.mkdir()
        for index in range(per_folder):
            (directory / f"sample-{index:03d}.json").write_text(
                f'{{"shard": {folder}, "sample": {index}}}\n'
            )
    git = ["git", "-C", str(root), "-c", "user.email=b@example.com", "-c", "user.name=Bench"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "samples"], check=True)
    marker.write_text("")


def warm(paths: list[Path]) -> None:
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(1 << 20):
                pass


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock seconds and CPU seconds (user + system, this process and its children)."""
    before = _cpu_seconds()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start, _cpu_seconds() - before


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_quietly(command: list[str], cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, check=True)


def medians(
    contenders: dict[str, Callable[[], object]], repeat: int
) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of each contender, run in turn `repeat` times."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, action in contenders.items():
            times[name].append(timed(action))
    return {
        name: (
            statistics.median(wall for wall, _ in values),
            statistics.median(cpu for _, cpu in values),
        )
        for name, values in times.items()
    }


def bench_cold(root: Path, repeat: int) -> dict[str, tuple[float, float]]:
    files = make_cold_tree(root)
    relative = [str(path.relative_to(root)) for path in files]
    warm(files)
    expected = fingerprint(root, cache=StatCache.in_memory()).digest

    def ours() -> None:
        cache = StatCache.in_memory()
        assert fingerprint(root, cache=cache).digest == expected
        assert cache.stats.files_hashed == COLD_FILES

    def ours_one_thread() -> None:
        workers = fingerprint_module._HASH_WORKERS
        fingerprint_module._HASH_WORKERS = 1
        try:
            ours()
        finally:
            fingerprint_module._HASH_WORKERS = workers

    return medians(
        {
            "watchkeeper": ours,
            "watchkeeper (1 thread)": ours_one_thread,
            "md5sum": lambda: run_quietly(["md5sum", *relative], root),
            "sha256sum": lambda: run_quietly(["sha256sum", *relative], root),
        },
        repeat,
    )


def bench_recheck(root: Path, cache_dir: Path, repeat: int) -> dict[str, tuple[float, float]]:
    make_small_tree(root)
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache_file = cache_dir / "hash-cache.db"
    expected = fingerprint(root, cache=StatCache(cache_file)).digest  # the first, cold check
    time.sleep(2.1)  # let recently written entries leave the racy window, as they would
    fingerprint(root, cache=StatCache(cache_file))
    run_quietly(["git", "status", "--porcelain"], root)  # git refreshes its index once too

    def ours() -> None:
        cache = StatCache(cache_file)  # loaded from disk each time, as a new check would
        assert fingerprint(root, cache=cache).digest == expected
        assert cache.stats.files_hashed == 0 and cache.stats.hits == SMALL_FILES

    return medians(
        {
            "watchkeeper": ours,
            "git status --porcelain": lambda: run_quietly(["git", "status", "--porcelain"], root),
        },
        repeat,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "bench-data" / "fingerprint")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data_dir: Path = args.data_dir.resolve()
    walker = "compiled" if scan_module.is_native() else "pure Python (build agent.data._scan)"
    print(f"cpus: {os.cpu_count()}, folder walker: {walker}, data: {data_dir}")
    print(f"load average before: {_load()}")

    cold = bench_cold(data_dir / "cold", args.repeat)
    md5_ratio = cold["md5sum"][0] / cold["watchkeeper"][0]
    print(f"\n1. cold hashing, 1 GiB in 2,000 files (median of {args.repeat})")
    for name, (wall, cpu) in cold.items():
        print(f"   {name:24} {wall:7.3f} s  {GIB / wall / 1e6:6.0f} MB/s   cpu {cpu:6.3f} s")
    print(f"   watchkeeper vs md5sum: {md5_ratio:.2f}x faster (target >= 4x)")
    sha_ratio = cold["sha256sum"][0] / cold["watchkeeper"][0]
    print(f"   watchkeeper vs sha256sum: {sha_ratio:.2f}x faster")

    recheck = bench_recheck(data_dir / "small", data_dir / "stat-cache", args.repeat * 2)
    git_ratio = recheck["watchkeeper"][0] / recheck["git status --porcelain"][0]
    print(f"\n2. re-checking 100,000 unchanged files (median of {args.repeat * 2})")
    for name, (wall, cpu) in recheck.items():
        print(f"   {name:24} {wall:7.3f} s   cpu {cpu:6.3f} s")
    print(f"   watchkeeper / git status: {git_ratio:.2f}x the time (target <= 1.5x)")
    print(f"\nload average after: {_load()} (other work on the machine slows both sides)")

    ok = md5_ratio >= 4.0 and git_ratio <= 1.5
    print("result:", "both targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
