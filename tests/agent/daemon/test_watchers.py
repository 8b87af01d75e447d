"""The watchers: git changes, saves honouring .gitignore, data folders, lost roots, fallbacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon.watchers import GitIgnoreRules, WatchManager, filesystem_type
from tests.agent.daemon.conftest import REPO_ROOT, can_switch_user, git, make_repo
from tests.support import require, wait_for


class RecordingSink:
    """Collects what the watchers report."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.git: list[Path] = []
        self.saves: list[tuple[Path, str]] = []
        self.data: list[Path] = []
        self.missing: list[Path] = []
        self.back: list[Path] = []

    def git_changed(self, repo: Path) -> None:
        with self.lock:
            self.git.append(repo)

    def file_saved(self, repo: Path, relative_path: str, timestamp: float) -> None:
        with self.lock:
            self.saves.append((repo, relative_path))

    def data_changed(self, source: Path) -> None:
        with self.lock:
            self.data.append(source)

    def root_missing(self, root: Path, kind: str) -> None:
        with self.lock:
            self.missing.append(root)

    def root_back(self, root: Path, kind: str) -> None:
        with self.lock:
            self.back.append(root)

    def saved_paths(self) -> set[str]:
        with self.lock:
            return {path for _, path in self.saves}


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def manager(sink: RecordingSink) -> Iterator[WatchManager]:
    watches = WatchManager(sink, poll_interval=0.3, health_interval=0.2)
    watches.start()
    yield watches
    watches.stop()


def test_commits_and_saves_in_a_repo(
    tmp_path: Path, manager: WatchManager, sink: RecordingSink
) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {".gitignore": "build/\n*.log\n", "src/model.py": "x = 1\n", "sub/.gitignore": "*.tmp\n"},
    )
    root = manager.add(repo, "repo")
    assert root.mode == "inotify"
    (repo / "src" / "model.py").write_text("x = 2\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.bin").write_text("ignored")
    (repo / "run.log").write_text("ignored")
    (repo / "sub" / "scratch.tmp").write_text("ignored by the nested .gitignore")
    (repo / "sub" / "kept.py").write_text("kept")
    wait_for(lambda: {"src/model.py", "sub/kept.py"} <= sink.saved_paths())
    time.sleep(0.3)
    assert not any(
        path.startswith(("build/", ".git/")) or path.endswith((".log", ".tmp"))
        for path in sink.saved_paths()
    )
    assert not sink.git
    git(repo, "commit", "-qam", "change model")
    wait_for(lambda: sink.git)
    assert set(sink.git) == {repo}


def test_gitignore_rules_follow_git(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {".gitignore": "data/\n!keep.log\n*.log\n/top.txt\n"})
    (repo / ".git" / "info" / "exclude").write_text("secret.env\n")
    rules = GitIgnoreRules(repo)
    for path in ["data/a.csv", "x/y.log", "top.txt", "secret.env"]:
        assert rules.is_ignored(path), path
    for path in ["src/a.py", "x/top.txt", "notes.md"]:
        assert not rules.is_ignored(path), path
    # Agreement with git itself on the same paths.
    checked = subprocess.run(
        ["git", "-C", str(repo), "check-ignore", "--no-index", "--stdin"],
        input="data/a.csv\nx/y.log\ntop.txt\nsecret.env\nsrc/a.py\nx/top.txt\n",
        capture_output=True,
        text=True,
    ).stdout.split()
    assert set(checked) == {"data/a.csv", "x/y.log", "top.txt", "secret.env"}


def test_data_folder_and_single_data_file(
    tmp_path: Path, manager: WatchManager, sink: RecordingSink
) -> None:
    folder = tmp_path / "data"
    (folder / "nested").mkdir(parents=True)
    single = tmp_path / "other" / "train.csv"
    single.parent.mkdir()
    single.write_text("a\n1\n")
    (single.parent / "unrelated.txt").write_text("")
    manager.add(folder, "data")
    manager.add(single, "data")
    (folder / "nested" / "part-1.csv").write_text("a\n2\n")
    wait_for(lambda: folder in sink.data)
    (single.parent / "unrelated.txt").write_text("changed")
    time.sleep(0.3)
    assert single not in sink.data
    replacement = single.with_suffix(".tmp")
    replacement.write_text("a\n3\n")
    replacement.replace(single)  # an atomic save replaces the file: still seen
    wait_for(lambda: single in sink.data)


def test_data_inside_a_watched_repo_is_covered_not_watched_twice(
    tmp_path: Path, manager: WatchManager, sink: RecordingSink
) -> None:
    repo = make_repo(tmp_path / "repo", {".gitignore": "data/\n", "data/a.csv": "a\n1\n"})
    manager.add(repo, "repo")
    data = manager.add(repo / "data", "data")
    assert data.mode == "covered"
    (repo / "data" / "a.csv").write_text("a\n2\n")
    wait_for(lambda: repo / "data" in sink.data)
    assert "data/a.csv" not in sink.saved_paths()


def test_deleted_or_renamed_root_is_reported_and_watched_again(
    tmp_path: Path, manager: WatchManager, sink: RecordingSink
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.csv").write_text("1")
    manager.add(folder, "data")
    moved = tmp_path / "data-moved"
    folder.rename(moved)
    wait_for(lambda: folder in sink.missing)
    assert manager.roots[(folder, "data")].mode == "missing"
    (moved / "b.csv").write_text("events under the old name are not ours")
    moved.rename(folder)
    wait_for(lambda: folder in sink.back)
    assert manager.roots[(folder, "data")].mode == "inotify"
    sink.data.clear()
    (folder / "c.csv").write_text("3")
    wait_for(lambda: folder in sink.data)
    shutil.rmtree(folder)
    wait_for(lambda: sink.missing.count(folder) == 2)
    folder.mkdir()
    wait_for(lambda: sink.back.count(folder) == 2)
    sink.data.clear()
    (folder / "d.csv").write_text("4")
    wait_for(lambda: folder in sink.data)


def test_a_missing_path_is_watched_once_it_appears(
    tmp_path: Path, manager: WatchManager, sink: RecordingSink
) -> None:
    folder = tmp_path / "later"
    assert manager.add(folder, "data").mode == "missing"
    folder.mkdir()
    wait_for(lambda: folder in sink.back)
    (folder / "x.csv").write_text("1")
    wait_for(lambda: folder in sink.data)


def test_configured_polling_still_sees_changes(tmp_path: Path, sink: RecordingSink) -> None:
    folder = tmp_path / "share"
    folder.mkdir()
    watches = WatchManager(
        sink, poll_interval=0.2, health_interval=0.2, force_polling=lambda p: p == folder
    )
    watches.start()
    try:
        root = watches.add(folder, "data")
        assert root.mode == "polling"
        assert "configured" in root.reason
        (folder / "x.csv").write_text("1")
        wait_for(lambda: folder in sink.data)
    finally:
        watches.stop()


def test_filesystem_type_reads_mountinfo(tmp_path: Path) -> None:
    assert filesystem_type(Path("/proc")) == "proc"
    assert filesystem_type(tmp_path) != ""


CHILD_WATCHER = """
import json, logging, os, sys, time, threading, ctypes
from pathlib import Path
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
from agent.daemon.watchers import WatchManager

class Sink:
    def __init__(self): self.seen = []
    def git_changed(self, repo): pass
    def file_saved(self, repo, rel, ts): self.seen.append(rel)
    def data_changed(self, source): self.seen.append("data:" + str(source))
    def root_missing(self, root, kind): pass
    def root_back(self, root, kind): pass

mode = sys.argv[1]
root = Path(sys.argv[2])
held = []
if mode == "exhaust":
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    while True:
        fd = libc.inotify_init1(0)
        if fd < 0:
            break
        held.append(fd)
sink = Sink()
manager = WatchManager(sink, poll_interval=0.3, health_interval=0.3)
manager.start()
watched = manager.add(root, "data")
print(json.dumps({"ready": True, "mode": watched.mode, "reason": watched.reason,
                  "unreadable": watched.unreadable, "held": len(held)}), flush=True)
sys.stdin.readline()  # the parent writes files, then tells us to report
deadline = time.time() + 5
while time.time() < deadline and not sink.seen:
    time.sleep(0.05)
manager.check_roots()
print(json.dumps({"seen": sorted(set(sink.seen))}), flush=True)
manager.stop()
"""


def _spawn_child(prefix: list[str], mode: str, root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", CHILD_WATCHER, mode, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )


def test_permission_denied_inside_a_watched_folder(shared_tmp: Path) -> None:
    """Run as root without CAP_DAC_OVERRIDE/READ_SEARCH, so a 000 folder really is unreadable."""
    require(can_switch_user(), "root and setpriv", "run the tests as root with util-linux")
    root = shared_tmp / "data"
    for name in ("open", "secret", "also-open"):
        (root / name).mkdir(parents=True)
    (root / "secret" / "inner").mkdir()
    (root / "secret").chmod(0o000)
    child = _spawn_child(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"], "plain", root
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        ready = json.loads(child.stdout.readline())
        assert ready["mode"] == "inotify"
        assert ready["unreadable"] == [str(root / "secret")]
        (root / "open" / "a.csv").write_text("1")
        (root / "also-open" / "b.csv").write_text("2")
        child.stdin.write("go\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
        assert report["seen"] == [f"data:{root}"]
        child.stdin.close()
        stderr = child.stderr.read() if child.stderr else ""
        child.wait(10)
    finally:
        (root / "secret").chmod(0o755)
        child.kill()
    denied = [line for line in stderr.splitlines() if "permission denied" in line]
    assert len(denied) == 1, stderr
    assert str(root / "secret") in denied[0]


def test_inotify_exhausted_falls_back_to_polling_and_says_so_once(shared_tmp: Path) -> None:
    """As uid nobody, take every inotify instance the kernel allows that user, then watch."""
    require(can_switch_user(), "root and setpriv", "run the tests as root with util-linux")
    root = shared_tmp / "data"
    root.mkdir()
    root.chmod(0o777)
    child = _spawn_child(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], "exhaust", root
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else ""
        ready = json.loads(line)
        assert ready["held"] > 0
        assert ready["mode"] == "polling"
        assert "inotify" in ready["reason"]
        (root / "new.csv").write_text("1")
        child.stdin.write("go\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
        assert report["seen"] == [f"data:{root}"]
        child.stdin.close()
        stderr = child.stderr.read() if child.stderr else ""
        child.wait(10)
    finally:
        child.kill()
    said = [line for line in stderr.splitlines() if "by polling" in line]
    assert len(said) == 1, stderr
