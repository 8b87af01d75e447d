"""Watchkeeper's home is private: existing homes are tightened, artifacts keep owner-only modes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.ledger.artifacts import ArtifactStore
from agent.paths import WatchkeeperPaths
from tests.agent.runs.gitrepo import PYTHON, make_repo, run_cli
from tests.faults.agent_process import kill_agent
from tests.faults.tmpfs import mounted_tmpfs
from tests.support import require

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"

KEY_SPEC = textwrap.dedent(
    f"""\
    [models.signer]
    train = "{PYTHON} make_outs.py"
    deps = ["make_outs.py"]
    outs = ["key.pem", "tool.sh", "notes.txt"]
    """
)
MAKE_OUTS = textwrap.dedent(
    """\
    import os, pathlib
    for name, mode in (("key.pem", 0o600), ("tool.sh", 0o755), ("notes.txt", 0o644)):
        path = pathlib.Path(name)
        path.write_text("secret " + name)
        os.chmod(path, mode)
    """
)


def _as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a system command as uid/gid nobody, from `/`, with nothing of the checkout."""
    return subprocess.run(
        [*NOBODY, *command],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
        check=False,
    )


def _modes(root: Path) -> dict[str, int]:
    """The permission bits of `root` and of everything below it (links excluded)."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for folder, folders, files in os.walk(root):
        for name in (*folders, *files):
            path = Path(folder) / name
            info = path.lstat()
            if not stat.S_ISLNK(info.st_mode):
                found[str(path.relative_to(root))] = stat.S_IMODE(info.st_mode)
    return found


def _make_loose_home(home: Path) -> None:
    """A home as an older version or a careless hand leaves it: everything readable by all."""
    home.chmod(0o755)
    ledger = sqlite3.connect(home / "ledger.db")
    ledger.execute("PRAGMA journal_mode = wal")
    ledger.close()
    (home / "config.toml").write_text("[watch]\n")
    for folder in ("artifacts/ab", "runs/old-run/code", "logs"):
        (home / folder).mkdir(parents=True)
    (home / "artifacts" / "ab" / ("c" * 62)).write_text("old artifact")
    (home / "runs" / "old-run" / "log").write_text("old log")
    (home / "runs" / "old-run" / "run.sh").write_text("#!/bin/sh\n")
    (home / "runs" / "old-run" / "run.sh").chmod(0o755)
    (home / "logs" / "agent.log").write_text("old log\n")
    for path in home.rglob("*"):
        path.chmod(0o755 if path.is_dir() or path.name == "run.sh" else 0o644)


@pytest.fixture(params=["folder-0755", "tmpfs-root-1777"])
def open_home(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """WATCHKEEPER_HOME that already exists and is open to others, in a folder they can reach."""
    require(
        os.geteuid() == 0 and shutil.which("setpriv") is not None,
        "root and setpriv",
        "run the tests as root on a system with util-linux's setpriv",
    )
    parent = Path(tempfile.mkdtemp(prefix="wk-perm-", dir="/tmp"))
    parent.chmod(0o755)
    (parent / "public.txt").write_text("anyone may read this\n")
    (parent / "public.txt").chmod(0o644)
    try:
        if request.param == "folder-0755":
            home = parent / "home"
            home.mkdir()
            monkeypatch.setenv("WATCHKEEPER_HOME", str(home))
            yield home, parent / "public.txt"
        else:
            with mounted_tmpfs("16m") as home:
                assert stat.S_IMODE(home.stat().st_mode) == 0o1777
                monkeypatch.setenv("WATCHKEEPER_HOME", str(home))
                yield home, parent / "public.txt"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_an_open_home_is_made_private_and_other_users_can_read_nothing(
    tmp_path: Path, open_home: tuple[Path, Path]
) -> None:
    home, public_file = open_home
    _make_loose_home(home)

    listed = run_cli(tmp_path, "runs", "list")
    assert listed.returncode == 0, listed.stderr
    loose = {name: oct(mode) for name, mode in _modes(home).items() if mode & 0o077}
    assert not loose, f"still open to others: {loose}"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "ledger.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "runs" / "old-run" / "run.sh").stat().st_mode) == 0o700

    root = make_repo(tmp_path, files={"make_outs.py": MAKE_OUTS}, spec=KEY_SPEC)
    trained = run_cli(root, "train", "signer")
    assert trained.returncode == 0, trained.stderr
    started = run_cli(root, "agent", "start")
    assert started.returncode == 0, started.stderr
    try:
        store = ArtifactStore(home / "artifacts")
        artifacts = {
            name: store.path(digest)
            for name, digest in _artifacts_of(home / "ledger.db", "signer").items()
        }
        assert {
            name: oct(stat.S_IMODE(path.stat().st_mode)) for name, path in artifacts.items()
        } == {
            "key.pem": "0o600",
            "tool.sh": "0o700",
            "notes.txt": "0o600",
        }
        for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "agent.sock"):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name

        # The control: nobody can reach this folder, so a refusal below is about our modes.
        assert _as_nobody("cat", str(public_file)).returncode == 0
        for command in (
            ["cat", str(home / "ledger.db")],
            ["cat", str(home / "ledger.db-wal")],
            ["cat", str(artifacts["key.pem"])],
            ["ls", str(home / "runs")],
            ["ls", str(home / "artifacts")],
        ):
            refused = _as_nobody(*command)
            assert refused.returncode != 0, f"nobody could run {command}"
            assert "Permission denied" in refused.stderr
        connect = (
            "import socket, sys\n"
            "sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "sock.connect(sys.argv[1])\n"
        )
        refused = _as_nobody(SYSTEM_PYTHON, "-c", connect, str(home / "agent.sock"))
        assert refused.returncode != 0 and "PermissionError" in refused.stderr
    finally:
        run_cli(root, "agent", "stop")
        kill_agent(WatchkeeperPaths.from_environment())


def _artifacts_of(ledger: Path, model: str) -> dict[str, str]:
    connection = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        row = connection.execute(
            "SELECT v.artifacts FROM model_versions v JOIN models m ON m.id = v.model_id "
            "WHERE m.name = ? ORDER BY v.id DESC LIMIT 1",
            [model],
        ).fetchone()
    finally:
        connection.close()
    return dict(json.loads(row[0]))


def test_artifacts_keep_at_most_their_owner_permissions(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    modes = {}
    for name, mode in (("key", 0o600), ("tool", 0o755), ("open", 0o666), ("mine", 0o400)):
        source = tmp_path / name
        source.write_text(f"content of {name}")
        source.chmod(mode)
        modes[name] = stat.S_IMODE(store.path(store.put(source)).stat().st_mode)
    assert modes == {"key": 0o600, "tool": 0o700, "open": 0o600, "mine": 0o600}
    assert stat.S_IMODE((tmp_path / "artifacts").stat().st_mode) == 0o700
