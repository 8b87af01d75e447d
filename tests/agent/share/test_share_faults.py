"""Sharing when things go wrong: no remote, a refusing remote, bad records, kill -9, ssh."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.share import gitref
from agent.share.records import canonical, record_path
from tests.agent.remote.conftest import shared_sshd  # noqa: F401 - the real sshd fixture
from tests.agent.remote.sshd_server import LoopbackSshd
from tests.agent.runs.gitrepo import git, make_repo
from tests.agent.share.people import Person, make_remote, person, remote_records
from tests.support import require, wait_for

NOBODY_UID = 65534


def test_push_without_a_git_remote_says_how_to_add_one(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    alone = Person("Ada", make_repo(tmp_path / "w"), tmp_path / "home")
    alone.add_versions(1)
    for command in ("push", "pull"):
        done = alone.run(command)
        assert done.returncode == 2
        assert "has no git remote" in done.stderr and "git remote add origin" in done.stderr
        assert "Traceback" not in done.stderr
    named = alone.run("push", "--remote-name", "team")
    assert named.returncode == 2 and "git remote add" in named.stderr


@pytest.fixture
def nobody_folder() -> Iterator[Path]:
    require(
        os.geteuid() == 0 and shutil.which("setpriv") is not None,
        "root and setpriv",
        "run the tests as root on a system with util-linux's setpriv",
    )
    folder = Path(tempfile.mkdtemp(prefix="wk-share-perm-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_remote_that_refuses_the_ref_says_you_may_not_write(nobody_folder: Path) -> None:
    """The team's bare repo belongs to root; user nobody may read it but not write to it."""
    remote = make_remote(nobody_folder)
    owner = person(nobody_folder, "Ada", remote, first=True)
    owner.add_versions(1)
    owner.ok("push")
    visitor_folder = nobody_folder / "visitor"
    visitor_folder.mkdir()
    clone = visitor_folder / "checkout"
    git(nobody_folder, "clone", "-q", str(remote), str(clone))
    (visitor_folder / "home").mkdir()
    gitconfig = visitor_folder / "gitconfig"
    gitconfig.write_text(
        f"[user]\n\tname = Nobody\n\temail = nobody@example.org\n"
        f"[safe]\n\tdirectory = {remote}\n\tdirectory = {clone}\n"
    )
    subprocess.run(["chown", "-R", f"{NOBODY_UID}:{NOBODY_UID}", str(visitor_folder)], check=True)
    visitor = Person(
        "Nobody",
        clone,
        visitor_folder / "home",
        env={"HOME": str(visitor_folder), "GIT_CONFIG_GLOBAL": str(gitconfig)},
    )
    as_nobody = ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_nobody, sys.executable, "-m", "agent", *args],
            cwd=clone,
            env=visitor.environment(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    pulled = run("pull", "--json")
    assert pulled.returncode == 0, pulled.stderr
    assert len(json.loads(pulled.stdout)["versions"]) == 1, pulled.stdout
    before = remote_records(remote)
    subprocess.run(
        [*as_nobody, sys.executable, "-c", _ADD_VERSION, str(clone)],
        env=visitor.environment(),
        check=True,
        cwd=clone,
    )
    pushed = run("push")
    assert pushed.returncode == 2, pushed.stdout + pushed.stderr
    assert "refused refs/watchkeeper/ledger: you may not write to it" in pushed.stderr
    assert str(remote) in pushed.stderr and "Traceback" not in pushed.stderr
    assert remote_records(remote) == before


_ADD_VERSION = """
import sys
from pathlib import Path
from tests.agent.share.people import Person
import os
Person("Nobody", Path(sys.argv[1]), Path(os.environ["WATCHKEEPER_HOME"])).add_versions(1)
"""


def test_bad_records_are_refused_by_name_and_the_rest_applies(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    [first] = ada.add_versions(1)
    ada.ok("push")
    bob = person(tmp_path, "Bob", remote)
    bob.ok("pull")

    original = json.loads(git(remote, "show", f"refs/watchkeeper/ledger:{_path(first)}"))
    garbage_id = "ab" * 16
    clash = {**original, "metrics": {"auc": 0.99}}
    foreign_id = "cd" * 16
    foreign = {**original, "id": foreign_id, "repo": {**original["repo"], "root_commit": "f" * 40}}
    [good] = ada.add_versions(1)
    ada.ok("push")
    # Mallory replaces a record under its id and adds broken ones, straight on a fresh ref
    mallory = person(tmp_path, "Mallory", remote)
    tip = gitref.fetch_ledger(mallory.clone, "origin")
    git(mallory.clone, "update-ref", "-d", gitref.tracking_ref("origin"))
    commit = gitref.write_commit(
        mallory.clone,
        tip,
        {
            _path(first): canonical(clash),
            record_path("version", garbage_id): b"{not json",
            record_path("version", foreign_id): canonical(foreign),
        },
        ("Mallory", "m@example.org"),
        "by hand",
    )
    assert gitref.push_commit(mallory.clone, "origin", commit)

    done = bob.run("pull", "--json")
    assert done.returncode == 1
    refused = {item["path"]: item["reason"] for item in json.loads(done.stdout)["refused"]}
    assert "id clash" in refused[_path(first)]
    assert "does not parse" in refused[record_path("version", garbage_id)]
    assert "another repository" in refused[record_path("version", foreign_id)]
    assert f"refs/watchkeeper/ledger:{_path(first)}: refused: id clash" in done.stderr
    listed = {row["id"]: row for row in bob.json("models", "list", "--all")}
    assert set(listed) == {first, good}
    assert listed[first]["metrics"] == original["metrics"]

    ada.add_versions(1)
    pushed = ada.run("push", "--json")
    assert pushed.returncode == 1
    assert json.loads(pushed.stdout)["clashes"] == [_path(first)]
    assert f"{_path(first)} on origin has other content" in pushed.stderr
    assert len(remote_records(remote)) == 5


def _path(global_id: str) -> str:
    return record_path("version", global_id)


def _consistent(who: Person) -> int:
    """The ledger passes its integrity check and every pulled version has its record; the
    ledger refs (when there are any) are whole commits. Returns the number of pulled versions."""
    pulled = 0
    if (who.home / "ledger.db").exists():
        connection = sqlite3.connect(who.home / "ledger.db")
        try:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            if "shared_records" in {
                row[0] for row in connection.execute("SELECT name FROM sqlite_master")
            }:
                orphans = connection.execute(
                    "SELECT COUNT(*) FROM model_versions v WHERE v.pulled_at IS NOT NULL AND "
                    "NOT EXISTS (SELECT 1 FROM shared_records s WHERE s.id = v.global_id)"
                ).fetchone()[0]
                assert orphans == 0
                pulled = connection.execute(
                    "SELECT COUNT(*) FROM model_versions WHERE pulled_at IS NOT NULL"
                ).fetchone()[0]
        finally:
            connection.close()
    for ref in (gitref.LEDGER_REF, gitref.tracking_ref("origin")):
        tip = gitref.ref_commit(who.clone, ref)
        if tip is not None:
            git(who.clone, "fsck", "--no-dangling", "--connectivity-only", tip)
    return int(pulled)


def _frozen_records(who: Person) -> bool:
    if not (who.home / "ledger.db").exists():
        return False
    connection = sqlite3.connect(who.home / "ledger.db", timeout=0.1)
    try:
        return bool(connection.execute("SELECT COUNT(*) FROM shared_records").fetchone()[0])
    except sqlite3.Error:
        return False
    finally:
        connection.close()


def _kill_when(who: Person, command: str, moment: Callable[[], bool]) -> None:
    """Start `watchkeeper COMMAND` and kill -9 it (and its git children) once `moment` holds."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", command],
        cwd=who.clone,
        env=who.environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(lambda: moment() or process.poll() is not None, 60, f"{command} to reach the moment")
    with contextlib.suppress(ProcessLookupError):  # it may have finished first
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _after(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


@pytest.mark.slow
def test_kill_9_during_push_and_pull_leaves_ledger_and_ref_consistent(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    ids = ada.add_versions(600)
    outgoing = lambda: gitref.ref_commit(ada.clone, gitref.OUTGOING_REF) is not None  # noqa: E731
    for moment in (lambda: _frozen_records(ada), outgoing, _after(0.8), _after(1.5)):
        gitref.git(ada.clone, "update-ref", "-d", gitref.OUTGOING_REF, check=False)
        _kill_when(ada, "push", moment)
        _consistent(ada)
        on_remote = {Path(path).stem for path in remote_records(remote)}
        assert on_remote in (set(), set(ids)), "a push lands whole or not at all"
    ada.ok("push")
    assert {Path(path).stem for path in remote_records(remote)} == set(ids)

    bob = person(tmp_path, "Bob", remote)
    fetched = lambda: gitref.ref_commit(bob.clone, gitref.tracking_ref("origin")) is not None  # noqa: E731
    for moment in (fetched, fetched, _after(0.8), _after(1.5)):
        gitref.git(bob.clone, "update-ref", "-d", gitref.tracking_ref("origin"), check=False)
        _kill_when(bob, "pull", moment)
        assert _consistent(bob) in (0, len(ids))
    bob.ok("pull")
    assert _consistent(bob) == len(ids)


@pytest.mark.ssh
def test_sharing_over_ssh_with_the_host_key_checked(
    tmp_path: Path,
    shared_sshd: LoopbackSshd,  # noqa: F811
) -> None:
    remote = make_remote(tmp_path)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(shared_sshd.known_hosts_line())
    ssh = (
        f"ssh -i {shared_sshd.user_key} -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known_hosts}"
    )
    url = f"ssh://{shared_sshd.user}@127.0.0.1:{shared_sshd.port}{remote}"
    ada = person(tmp_path, "Ada", remote, first=True)
    git(ada.clone, "remote", "set-url", "origin", url)
    ada.env["GIT_SSH_COMMAND"] = ssh
    [version] = ada.add_versions(1)
    done = subprocess.run(
        ["git", "-C", str(ada.clone), "push", "-q", "origin", "main"],
        env={**os.environ, "GIT_SSH_COMMAND": ssh},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pushed = ada.json("push")
    assert pushed["versions"] == 1 and pushed["url"] == url

    bob = person(tmp_path, "Bob", remote)
    git(bob.clone, "remote", "set-url", "origin", url)
    bob.env["GIT_SSH_COMMAND"] = ssh
    pulled = bob.json("pull")
    assert [v["id"] for v in pulled["versions"]] == [version]

    stranger_keys = tmp_path / "other_known_hosts"
    stranger_keys.write_text(f"[127.0.0.1]:{shared_sshd.port} ssh-ed25519 {'A' * 68}\n")
    bob.env["GIT_SSH_COMMAND"] = ssh.replace(str(known_hosts), str(stranger_keys))
    refused = bob.run("pull")
    assert refused.returncode == 2
    assert "could not fetch refs/watchkeeper/ledger from origin" in refused.stderr


def test_records_whose_artifact_or_blob_paths_leave_the_repo_are_refused(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    [first] = ada.add_versions(1)
    ada.ok("push")
    original = json.loads(git(remote, "show", f"refs/watchkeeper/ledger:{_path(first)}"))
    digest = "blake3:" + "0" * 64
    climbing_id, absolute_id = "ab" * 16, "cd" * 16
    climbing = {**original, "id": climbing_id, "artifacts": {"../../outside.txt": digest}}
    absolute = {**original, "id": absolute_id, "blobs": [["data", "/etc/cron.d/x", digest]]}
    mallory = person(tmp_path, "Mallory", remote)
    tip = gitref.fetch_ledger(mallory.clone, "origin")
    git(mallory.clone, "update-ref", "-d", gitref.tracking_ref("origin"))
    commit = gitref.write_commit(
        mallory.clone,
        tip,
        {
            record_path("version", climbing_id): canonical(climbing),
            record_path("version", absolute_id): canonical(absolute),
        },
        ("Mallory", "m@example.org"),
        "by hand",
    )
    assert gitref.push_commit(mallory.clone, "origin", commit)
    bob = person(tmp_path, "Bob", remote)
    done = bob.run("pull", "--json")
    assert done.returncode == 1
    refused = {item["path"]: item["reason"] for item in json.loads(done.stdout)["refused"]}
    assert "artifact '../../outside.txt' leads outside the repo" in refused[_path(climbing_id)]
    assert "data blob '/etc/cron.d/x' leads outside the repo" in refused[_path(absolute_id)]
    assert {row["id"] for row in bob.json("models", "list", "--all")} == {first}
