"""Speed of reading a large git history and of estimating coding time on it.

Builds (once, cached under bench-data/) a repository of 1,000,000 commits by 2,000 authors
over five years with `git fast-import`, then in one run measures:

- reading every commit with agent.activity.git_log.read_commits against a raw `git log` with
  the same format (goal: at most 1.3x);
- one author's estimate over the five years, reading excluded (goal: under 1 s);
- the team view for all 2,000 authors (goal: under 60 s on 2 cores).

    .venv/bin/python benchmarks/bench_git_history.py [--commits N] [--authors N]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.activity.coding_time import estimate_coding_time, estimate_team  # noqa: E402
from agent.activity.git_log import _git_log_command, read_commits  # noqa: E402

START = 1609459200  # 2021-01-01T00:00:00Z
YEARS = 5
DAY = 86400
OFFSETS_MINUTES = np.array([-480, -420, -300, -240, 0, 60, 60, 120, 180, 330, 480, 540, 600])


def draw_history(n_commits: int, n_authors: int, seed: int = 7) -> tuple[np.ndarray, ...]:
    """Author, UTC time and UTC offset of every commit, sorted by time.

    Authors have log-normal activity, their own time zone and working hours, and mostly
    commit on weekdays, a few commits per active day.
    """
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, n_authors)
    per_author = rng.multinomial(n_commits, weights / weights.sum())
    author = np.repeat(np.arange(n_authors), per_author)
    n_days = YEARS * 365
    offset = rng.choice(OFFSETS_MINUTES, n_authors)[author]
    start_hour = rng.uniform(7.0, 12.0, n_authors)[author]
    # active days: each author commits ~3 times per active day
    active_days = np.maximum(1, np.minimum(n_days, per_author // 3))
    day_slot = (rng.random(n_commits) * active_days[author]).astype(np.int64)
    day = (day_slot * 7 // 5 + (author * 13) % 7) % n_days  # spread slots over weekdays
    weekday = (day + 4) % 7  # 2021-01-01 was a Friday
    day = np.where(weekday >= 5, (day + 2) % n_days, day)
    seconds = (start_hour + rng.uniform(0.0, 9.0, n_commits)) * 3600
    utc = START + day * DAY + seconds.astype(np.int64) - offset * 60
    order = np.argsort(utc, kind="stable")
    return author[order], utc[order], offset[order]


def fast_import_stream(author: np.ndarray, utc: np.ndarray, offset: np.ndarray):  # type: ignore[no-untyped-def]
    """Yield the fast-import stream in chunks of bytes: one linear history on main."""
    sign = np.where(offset < 0, "-", "+")
    absolute = np.abs(offset)
    tz = [f"{s}{h:02d}{m:02d}" for s, h, m in zip(sign, absolute // 60, absolute % 60, strict=True)]
    chunk: list[str] = []
    for index in range(author.shape[0]):
        a = int(author[index])
        ident = f"Dev {a} <dev{a}@example.com> {int(utc[index])} {tz[index]}"
        chunk.append(
            f"commit refs/heads/main\nauthor {ident}\ncommitter {ident}\ndata 7\nchange\n\n"
        )
        if len(chunk) == 20000:
            yield "".join(chunk).encode()
            chunk = []
    chunk.append("reset refs/heads/release\nfrom refs/heads/main\n\n")
    yield "".join(chunk).encode()


def build_repository(path: Path, n_commits: int, n_authors: int) -> None:
    """Create the bare repository with git fast-import unless it is already there."""
    marker = path / "watchkeeper-bench-complete"
    if marker.exists():
        if not (path / "objects" / "info" / "commit-graph").exists():
            subprocess.run(
                ["git", "-C", str(path), "commit-graph", "write", "--reachable"], check=True
            )
        return
    subprocess.run(["rm", "-rf", str(path)], check=True)
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    began = time.perf_counter()
    author, utc, offset = draw_history(n_commits, n_authors)
    process = subprocess.Popen(
        ["git", "-C", str(path), "fast-import", "--quiet"], stdin=subprocess.PIPE
    )
    assert process.stdin is not None
    for chunk in fast_import_stream(author, utc, offset):
        process.stdin.write(chunk)
    process.stdin.close()
    if process.wait() != 0:
        raise SystemExit("git fast-import failed")
    # as `git gc` would on a real clone (gc.writeCommitGraph is on by default)
    subprocess.run(["git", "-C", str(path), "commit-graph", "write", "--reachable"], check=True)
    marker.write_text(f"{n_commits} {n_authors}\n")
    print(f"built {path} in {time.perf_counter() - began:.1f} s")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (git)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_raw_git_log(repo: Path) -> tuple[float, int]:
    """Seconds for `git log` with the reader's format, its output read into memory."""
    began = time.perf_counter()
    process = subprocess.Popen(_git_log_command(repo, False), stdout=subprocess.PIPE)
    assert process.stdout is not None
    size = 0
    while True:
        block = process.stdout.read1(8 << 20)  # type: ignore[attr-defined]
        if not block:
            break
        size += len(block)
    process.wait()
    return time.perf_counter() - began, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1_000_000)
    parser.add_argument("--authors", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-team", action="store_true", help="skip the all-authors run")
    arguments = parser.parse_args()
    repo = ROOT / "bench-data" / f"history-{arguments.commits}-{arguments.authors}.git"
    repo.parent.mkdir(exist_ok=True)
    build_repository(repo, arguments.commits, arguments.authors)

    raw_times, ours_times, raw_cpu, ours_cpu = [], [], [], []
    table = None
    for _ in range(arguments.repeat):  # interleaved, so both see the same machine load
        cpu = _cpu_seconds()
        raw_seconds, size = time_raw_git_log(repo)
        raw_times.append(raw_seconds)
        raw_cpu.append(_cpu_seconds() - cpu)
        cpu = _cpu_seconds()
        began = time.perf_counter()
        table = read_commits([repo])
        ours_times.append(time.perf_counter() - began)
        ours_cpu.append(_cpu_seconds() - cpu)
    assert table is not None
    raw, ours = min(raw_times), min(ours_times)
    print(f"read {len(table):,} commits by {len(table.emails):,} authors ({size / 1e6:.0f} MB)")
    print(
        f"reading:  raw git log {raw:.2f} s ({len(table) / raw:,.0f}/s)   read_commits "
        f"{ours:.2f} s   ratio {ours / raw:.2f} (goal <= 1.30; best of {arguments.repeat})"
    )
    print(
        f"          CPU time (git + reader): raw {min(raw_cpu):.2f} s   read_commits "
        f"{min(ours_cpu):.2f} s   ratio {min(ours_cpu) / min(raw_cpu):.2f} "
        "(steadier than wall time on a busy machine)"
    )

    counts = table.commit_counts()
    top = int(np.argmax(counts))
    local = table.author_time + table.author_tz_minutes.astype(np.int64) * 60
    mask = table.author_code == top
    began = time.perf_counter()
    estimate = estimate_coding_time(local[mask], np.zeros(int(mask.sum()), dtype=np.int64))
    one = time.perf_counter() - began
    iterations = estimate.fit.n_iter if estimate.fit else 0
    print(
        f"one author: {table.emails[top]} with {int(counts[top]):,} commits over "
        f"{estimate.n_days} days: {one:.2f} s (goal < 1 s), {iterations} "
        f"EM iterations, {estimate.coding_minutes.sum() / 60:.0f} h coding, "
        f"{estimate.git_hours_minutes.sum() / 60:.0f} h git-hours"
    )

    if arguments.skip_team:
        return
    order = np.argsort(table.author_code, kind="stable")
    bounds = np.searchsorted(table.author_code[order], np.arange(len(table.emails) + 1))
    members = [
        (local[order[bounds[i] : bounds[i + 1]]], np.zeros(bounds[i + 1] - bounds[i], np.int64))
        for i in range(len(table.emails))
    ]
    began = time.perf_counter()
    team = estimate_team(members, n_jobs=arguments.jobs)
    seconds = time.perf_counter() - began
    refined = sum(m.refined for m in team.members)
    total = sum(m.coding_minutes for m in team.members) / 60
    print(
        f"all authors: {len(members):,} in {seconds:.1f} s with {arguments.jobs} jobs "
        f"(goal < 60 s; {refined} refined), {total:,.0f} h coding in all"
    )


if __name__ == "__main__":
    main()
