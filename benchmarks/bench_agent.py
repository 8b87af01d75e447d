"""Agent benchmark: idle cost watching 100,000 files, write-to-alert latency, a 10,000-write burst.

The peer is a bare watchdog observer watching the same five repos (what any watcher costs);
the agent's idle CPU and memory are printed beside it with the ratio, and every figure is
checked against its budget:

- idle CPU at most 1% of one core over 60 s, resident memory at most 120 MB;
- p95 from a data-file write to the `alert` event on the socket at most 2 s;
- a burst of 10,000 writes: no change lost (the last snapshot equals a fresh full scan) and
  `status` answered within 200 ms throughout.

Run: .venv/bin/python benchmarks/bench_agent.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agent.client import AgentClient  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PYTHON = shlex.quote(sys.executable)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def make_repo(root: Path, n_files: int, files_per_dir: int = 50) -> Path:
    """A committed repo of `n_files` small source files spread over folders."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "bench@example.com")
    git(root, "config", "user.name", "Bench")
    for index in range(n_files):
        package = f"pkg{index // (files_per_dir * 20):03d}"
        folder = root / "src" / package / f"m{index // files_per_dir:05d}"
        if index % files_per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index}.py").write_text(f"value = {index}\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


TRAIN = textwrap.dedent(
    """\
    import json, pathlib
    n = len(list(pathlib.Path("data").rglob("*")))
    pathlib.Path("model.txt").write_text(str(n))
    json.dump({"files": n}, open("metrics.json", "w"))
    """
)


def add_model(repo: Path) -> None:
    """Give the first repo a model whose data dep is a gitignored folder."""
    (repo / "train.py").write_text(TRAIN)
    (repo / ".gitignore").write_text("data/\n")
    (repo / "watchkeeper.toml").write_text(
        textwrap.dedent(
            f"""\
            [models.ranker]
            train = "{PYTHON} train.py"
            deps = ["train.py", "data"]
            outs = ["model.txt"]
            metrics = "metrics.json"
            """
        )
    )
    (repo / "data").mkdir()
    (repo / "data" / "seed.bin").write_bytes(b"seed")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "model")


def cpu_seconds(pid: int) -> float:
    """User + system time of the process and of its children that have exited (the agent's
    short-lived staleness checks count as the agent's own work)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[index]) for index in (11, 12, 13, 14)) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle_usage(pid: int, seconds: float) -> tuple[float, float]:
    """Percent of one core used over `seconds`, and resident memory at the end."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - before) / seconds, rss_mb(pid)


BARE_WATCHER = """
import sys, time
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
observer = Observer()
for path in sys.argv[1:]:
    observer.schedule(FileSystemEventHandler(), path, recursive=True)
observer.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


class Events:
    """A subscription read on a thread."""

    def __init__(self, socket_path: Path) -> None:
        self.client = AgentClient.connect(socket_path, timeout=None)
        self.queue: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        stream = self.client.subscribe(["alert", "snapshot"])

        def read() -> None:
            try:
                for message in stream:
                    self.queue.put((time.perf_counter(), message))
            except Exception:
                pass

        threading.Thread(target=read, daemon=True).start()

    def wait_for(self, kind: str, timeout: float) -> tuple[float, dict[str, Any]] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                at, message = self.queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if message["event"] == kind:
                return at, message["data"]
        return None

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


def wait_idle(client: AgentClient, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        busy = client.call("status")["busy"]
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 2.0:
            return
        time.sleep(0.2)
    raise RuntimeError("the agent stayed busy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--files", type=int, help="files in the five repos together")
    parser.add_argument("--burst", type=int, help="writes in the burst")
    args = parser.parse_args()
    total_files = args.files or (10_000 if args.quick else 100_000)
    idle_seconds = 10.0 if args.quick else 60.0
    burst_writes = args.burst or (1_000 if args.quick else 10_000)
    alert_samples = 10 if args.quick else 40

    work = Path(tempfile.mkdtemp(prefix="wk-bench-agent-"))
    home = work / "home"
    env = {**os.environ, "WATCHKEEPER_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    os.environ["WATCHKEEPER_HOME"] = str(home)
    agent_process: subprocess.Popen[bytes] | None = None
    bare: subprocess.Popen[str] | None = None
    ok = True
    try:
        started = time.monotonic()
        repos = [make_repo(work / f"repo{n}", total_files // 5) for n in range(5)]
        add_model(repos[0])
        print(f"built 5 repos with {total_files:,} files in {time.monotonic() - started:.0f} s")

        from agent.config import UserConfig
        from agent.daemon.watchlist import add_watch
        from agent.ledger import open_ledger
        from agent.paths import WatchkeeperPaths
        from agent.runs.training import train

        paths = WatchkeeperPaths.from_environment().ensure()
        config = UserConfig.load(paths.config)
        for repo in repos:
            add_watch(repo, data=False, config=config)
        db = open_ledger(paths.ledger)
        result = train(repos[0], "ranker", db=db, paths=paths)
        db.close()
        assert result.status == "succeeded", result.log_tail

        # -- peer: a bare watchdog observer on the same repos -------------------------------
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_WATCHER, *map(str, repos)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert bare.stdout is not None
        bare.stdout.readline()
        time.sleep(2)
        bare_cpu, bare_rss = idle_usage(bare.pid, idle_seconds)
        bare.kill()
        bare.wait()
        bare = None

        # -- the agent ------------------------------------------------------------------------
        agent_process = subprocess.Popen(
            [sys.executable, "-m", "agent", "agent", "run", "--quiet"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        begun = time.monotonic()
        client = None
        while client is None and time.monotonic() - begun < 60:
            client = AgentClient.connect_or_none(paths.socket, timeout=10)
            time.sleep(0.1)
        assert client is not None, "the agent did not start"
        wait_idle(client)
        status = client.call("status")
        print(
            f"agent up and scanned in {time.monotonic() - begun:.1f} s; "
            f"{status['inotify_watches']} inotify watches; modes "
            f"{sorted({w['mode'] for w in status['watches']})}"
        )
        time.sleep(3)
        agent_cpu, agent_rss = idle_usage(agent_process.pid, idle_seconds)

        # -- write -> alert latency ----------------------------------------------------------
        events = Events(paths.socket)
        time.sleep(0.5)
        data = repos[0] / "data"
        latencies = []
        for n in range(alert_samples):
            events.drain()
            written = time.perf_counter()
            (data / f"sample-{n}.bin").write_bytes(os.urandom(256))
            got = events.wait_for("alert", timeout=10)
            if got is None:
                latencies.append(float("inf"))
            else:
                latencies.append(got[0] - written)
            time.sleep(0.3)
        latencies.sort()
        p50 = statistics.median(latencies)
        p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]

        # -- burst ---------------------------------------------------------------------------
        wait_idle(client)
        status_times: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            with AgentClient.connect(paths.socket, timeout=10) as prober:
                while not stop.is_set():
                    asked = time.perf_counter()
                    prober.call("status")
                    status_times.append(time.perf_counter() - asked)
                    time.sleep(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        burst_dir = data / "burst"
        burst_dir.mkdir()
        burst_started = time.perf_counter()
        for n in range(burst_writes):
            sub = burst_dir / f"d{n // 500:03d}"
            if n % 500 == 0:
                sub.mkdir()
            (sub / f"w{n}.bin").write_bytes(n.to_bytes(4, "little") * 8)
        for n in range(0, burst_writes, 7):  # rewrite some files in place, same size
            sub = burst_dir / f"d{n // 500:03d}"
            (sub / f"w{n}.bin").write_bytes((n + 1).to_bytes(4, "little") * 8)
        burst_seconds = time.perf_counter() - burst_started
        wait_idle(client)
        stop.set()
        prober.join(15)

        from agent.data.fingerprint import fingerprint

        fresh = fingerprint(data)
        db = open_ledger(paths.ledger, readonly=True)
        row = db.execute(
            "SELECT s.fingerprint, s.n_files FROM data_snapshots s "
            "JOIN data_sources d ON d.id = s.source_id WHERE d.path = ? "
            "ORDER BY s.taken_at DESC, s.id DESC LIMIT 1",
            [str(data)],
        ).fetchone()
        db.close()
        lost_nothing = row is not None and row[0] == fresh.digest
        worst_status = max(status_times) * 1000 if status_times else float("inf")
        final_rss = rss_mb(agent_process.pid)
        client.close()
        events.client.close()

        print(f"\nload average during the run: {os.getloadavg()[0]:.2f} (2 cores shared)")
        print(f"{'figure':<44}{'agent':>12}{'peer':>12}{'ratio':>8}{'budget':>12}")

        def line(name: str, ours: float, peer: float | None, budget: str, unit: str) -> None:
            peer_text = f"{peer:.2f}{unit}" if peer is not None else "-"
            ratio = f"{ours / peer:.2f}x" if peer else "-"
            print(f"{name:<44}{ours:>10.2f}{unit:>2}{peer_text:>12}{ratio:>8}{budget:>12}")

        idle_name = f"idle CPU over {idle_seconds:.0f} s (% of one core)"
        line(idle_name, agent_cpu, bare_cpu, "<= 1%", "%")
        line("resident memory, idle (MB)", agent_rss, bare_rss, "<= 120", "MB")
        line("resident memory after the burst (MB)", final_rss, None, "-", "MB")
        line(f"write -> alert p50 over {alert_samples} writes (s)", p50, None, "-", "s")
        line(f"write -> alert p95 over {alert_samples} writes (s)", p95, None, "<= 2", "s")
        line(f"burst of {burst_writes:,} writes took (s)", burst_seconds, None, "-", "s")
        line("slowest status during the burst (ms)", worst_status, None, "<= 200", "ms")
        print(
            f"burst: last snapshot {'equals' if lost_nothing else 'DIFFERS FROM'} a fresh full "
            f"scan ({fresh.n_files} files); {len(status_times)} status calls answered"
        )
        checks = {
            "idle CPU": agent_cpu <= 1.0,
            "memory": agent_rss <= 120.0,
            "alert p95": p95 <= 2.0,
            "status during burst": worst_status <= 200.0,
            "no change lost": lost_nothing,
        }
        for name, passed in checks.items():
            print(f"  {'ok  ' if passed else 'FAIL'} {name}")
        ok = all(checks.values())
    finally:
        if agent_process is not None:
            agent_process.terminate()
            try:
                agent_process.wait(10)
            except subprocess.TimeoutExpired:
                agent_process.kill()
        if bare is not None:
            bare.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
