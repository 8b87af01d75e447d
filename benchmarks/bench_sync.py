"""Watchkeeper's content-addressed upload against `rsync -a -e ssh`: same sshd, same run.

Cases: 1 GiB in 2,000 files (first sync), then one file changed, then 100,000 small files.
Both tools talk to one loopback OpenSSH sshd started here; `--scale 0.1` shrinks the data.
Both log in afresh for each sync and check the host key against a known_hosts file (rsync's
ssh with StrictHostKeyChecking=yes); each timed sync starts after sync(2), so that neither
pays for flushing the other's writes to disk. The big_first line shows which transport carried
the bulk of the upload (`openssh`: ssh processes; `paramiko`). The one-changed line shows which
way our sync went (`route sftp`: SFTP alone; `helper`: the remote program) and where its time
went.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.data.stat_cache import StatCache
from agent.remote.config import RemoteConfig
from agent.remote.connection import RemoteSession
from agent.remote.hostkeys import HostKeyStore
from agent.remote.sync import OPENSSH_FROM_BYTES, SyncReport, sync_tree
from tests.agent.remote.sshd_server import LoopbackSshd, sshd_available

TARGETS = {"big_first": 1.0, "one_changed": 0.5, "small_first": 1.5}


def make_big_tree(root: Path, total_bytes: int, files: int) -> None:
    size = total_bytes // files
    for index in range(files):
        folder = root / f"part{index % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"shard{index:05d}.bin").write_bytes(os.urandom(size))


def make_small_tree(root: Path, files: int) -> None:
    for index in range(files):
        folder = root / f"dir{index % 200:03d}"
        if index < 200:
            folder.mkdir(parents=True, exist_ok=True)
        payload = f"row {index}\n".encode() * (1 + index % 40)
        (folder / f"item{index:06d}.txt").write_bytes(payload)


def rsync(server: LoopbackSshd, known_hosts: Path, source: Path, dest: str) -> tuple[float, int]:
    """Run rsync -a over ssh to the same sshd; return (seconds, bytes rsync reports sent)."""
    ssh = ssh_command(server, known_hosts)
    os.sync()  # the other tool's writes are not flushed to disk on this one's time
    started = time.perf_counter()
    result = subprocess.run(
        ["rsync", "-a", "--stats", "-e", ssh, f"{source}/", f"root@127.0.0.1:{dest}/"],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    match = re.search(r"Total bytes sent: ([\d,]+)", result.stdout)
    return seconds, int(match.group(1).replace(",", "")) if match else -1


def ssh_command(server: LoopbackSshd, known_hosts: Path) -> str:
    return (
        f"ssh -p {server.port} -i {server.user_key} -o IdentitiesOnly=yes "
        f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o LogLevel=ERROR"
    )


def ssh_floor(server: LoopbackSshd, known_hosts: Path) -> float:
    """The time of `ssh HOST true`: login plus one remote command, which both tools pay."""
    started = time.perf_counter()
    subprocess.run(
        [*ssh_command(server, known_hosts).split(), f"{server.user}@127.0.0.1", "true"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def ours(
    remote: RemoteConfig,
    store: HostKeyStore,
    cache: StatCache,
    source: Path,
    dest: str,
    openssh_from: int = OPENSSH_FROM_BYTES,
) -> tuple[float, SyncReport]:
    """A fresh session (connect + login included, as for rsync), then one sync."""
    os.sync()
    started = time.perf_counter()
    with RemoteSession(remote, store=store) as session:
        report = sync_tree(session, source, dest, hash_cache=cache, openssh_from=openssh_from)
    return time.perf_counter() - started, report


def phase_text(report: SyncReport) -> str:
    return " ".join(f"{name} {seconds:.3f}s" for name, seconds in report.phases.items())


def fallback_note(report: SyncReport) -> str:
    return f", fell back: {report.fallback}" if report.fallback else ""


def same_tree(left: Path, right: Path) -> bool:
    return (
        subprocess.run(["diff", "-rq", str(left), str(right)], capture_output=True).returncode == 0
    )


def show(case: str, ours_seconds: float, rsync_seconds: float, detail: str) -> float:
    ratio = ours_seconds / rsync_seconds
    verdict = "ok" if ratio <= TARGETS[case] else "OVER TARGET"
    print(
        f"{case:12s} ours {ours_seconds:7.2f} s   rsync {rsync_seconds:7.2f} s   "
        f"ratio {ratio:5.2f} (target <= {TARGETS[case]}) {verdict}   {detail}"
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the data (e.g. 0.1)")
    parser.add_argument("--python", default="/usr/bin/python3", help="python on the remote")
    parser.add_argument("--only", choices=("big", "small"), help="run one half only")
    parser.add_argument(
        "--bulk",
        choices=("auto", "paramiko"),
        default="auto",
        help="paramiko: keep large uploads off the ssh client (to compare)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  log: %(name)s: %(message)s")
    logging.getLogger("agent.remote").setLevel(logging.INFO)  # reconnects, ssh lanes given up
    openssh_from = OPENSSH_FROM_BYTES if args.bulk == "auto" else 1 << 62
    if not sshd_available() or not shutil.which("rsync"):
        print("needs openssh-server and rsync: apt-get install -y openssh-server rsync")
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    os.environ["WATCHKEEPER_HOME"] = str(work / "home")
    server = LoopbackSshd.create(work / "sshd")
    server.start()
    known_hosts = work / "known_hosts"
    known_hosts.write_text(server.known_hosts_line())
    store = HostKeyStore(known_hosts, None)
    remote = RemoteConfig(
        name="bench",
        host="127.0.0.1",
        port=server.port,
        user=server.user,
        key=str(server.user_key),
        workdir=str(work / "remote-wk"),
        python=args.python,
    )
    cache = StatCache(work / "hash-cache.db")
    failures = 0

    def our_sync(source: Path, dest: str) -> tuple[float, SyncReport]:
        return ours(remote, store, cache, source, dest, openssh_from)

    def check(ratio: float, case: str) -> None:
        nonlocal failures
        failures += ratio > TARGETS[case]

    try:
        if args.only != "small":
            big = work / "big"
            big_files = max(20, int(2000 * args.scale))
            make_big_tree(big, int((1 << 30) * args.scale), big_files)
            time.sleep(2.1)  # let the files age past the racy window, as data at rest would be
            print(
                f"data: {big_files} files, {int((1 << 30) * args.scale) / 2**20:.0f} MiB; "
                f"load average {os.getloadavg()[0]:.1f}"
            )
            rsync_seconds, _ = rsync(server, known_hosts, big, str(work / "rsync-big"))
            ours_seconds, report = our_sync(big, str(work / "ours-big"))
            assert same_tree(big, work / "ours-big"), "our copy differs from the source"
            phases = " ".join(f"{k} {v:.2f}s" for k, v in report.phases.items())
            detail = (
                f"bulk over {report.bulk_transport or 'nothing'}"
                f"{f' ({report.openssh_note})' if report.openssh_note else ''}; "
                f"verified with {report.verified_with}; {phases}"
            )
            check(show("big_first", ours_seconds, rsync_seconds, detail), "big_first")

            changed = sorted(big.rglob("*.bin"))[len(list(big.rglob("*.bin"))) // 2]
            changed.write_bytes(os.urandom(changed.stat().st_size))
            rsync_seconds, rsync_bytes = rsync(server, known_hosts, big, str(work / "rsync-big"))
            ours_seconds, report = our_sync(big, str(work / "ours-big"))
            assert same_tree(big, work / "ours-big"), "our copy differs after one change"
            floor = ssh_floor(server, known_hosts)
            detail = (
                f"`ssh host true` alone {floor:.2f} s; route {report.route} "
                f"({report.remote_programs} remote programs{fallback_note(report)}); "
                f"phases {phase_text(report)}; cache checked: {report.cache_checked}; "
                f"file {changed.stat().st_size} B; ours sent {report.blobs_sent} blob(s), "
                f"{report.blob_bytes_sent} B of content, {report.wire_bytes_sent} B on our "
                f"channels (manifest included); rsync sent {rsync_bytes} B"
            )
            check(show("one_changed", ours_seconds, rsync_seconds, detail), "one_changed")
            assert report.blob_bytes_sent == changed.stat().st_size, (
                "sent more than the changed file"
            )

            racy = sorted(big.rglob("*.bin"))[3]
            before = racy.stat()
            racy.write_bytes(os.urandom(before.st_size))
            os.utime(racy, ns=(before.st_atime_ns, before.st_mtime_ns))
            rsync(server, known_hosts, big, str(work / "rsync-big"))
            _, report = our_sync(big, str(work / "ours-big"))
            rsync_right = same_tree(big, work / "rsync-big")
            ours_right = same_tree(big, work / "ours-big")
            print(
                f"same-size rewrite with the old mtime: rsync copy correct={rsync_right}, "
                f"ours correct={ours_right} (sent {report.blobs_sent} blob)"
            )
            failures += not ours_right
            shutil.rmtree(big)
            shutil.rmtree(work / "rsync-big")
            shutil.rmtree(work / "ours-big")

        if args.only != "big":
            small = work / "small"
            small_files = max(1000, int(100_000 * args.scale))
            make_small_tree(small, small_files)
            time.sleep(2.1)
            rsync_seconds, _ = rsync(server, known_hosts, small, str(work / "rsync-small"))
            ours_seconds, report = our_sync(small, str(work / "ours-small"))
            assert same_tree(small, work / "ours-small"), "our small-file copy differs"
            phases = " ".join(f"{k} {v:.2f}s" for k, v in report.phases.items())
            check(
                show("small_first", ours_seconds, rsync_seconds, f"{small_files} files; {phases}"),
                "small_first",
            )
    finally:
        server.stop()
        cache.close()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
