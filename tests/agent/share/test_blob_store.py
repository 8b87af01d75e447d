"""The shared blob store: a version's artifacts, data and diff travel to a teammate on demand."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from agent.ledger import open_ledger, write_transaction
from agent.ledger.artifacts import INCOMING_PREFIX, ArtifactStore
from agent.ledger.blobs import ARTIFACT, VersionBlob, record_version_blobs
from agent.ledger.queries import ensure_model, insert_row, next_version, register_repo
from agent.share.blob_store import BlobStoreError, SshStore
from agent.share.sync import push
from tests.agent.remote.conftest import (  # noqa: F401 - the real sshd fixtures
    RemoteFactory,
    make_remote,
    private_sshd,
    shared_sshd,
)
from tests.agent.remote.sshd_server import LoopbackSshd
from tests.agent.runs.gitrepo import commit_all, git
from tests.agent.share.people import Person, person, remote_records
from tests.agent.share.people import make_remote as make_git_remote
from tests.support import wait_for


def _team(tmp_path: Path, store: str, *, data: bool = False) -> tuple[Person, Path]:
    """Ada's clone of a new bare remote whose watchkeeper.toml names the shared `store` (and,
    with `data`, a data dep `data/` that git ignores, so only Ada has it)."""
    remote = make_git_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    spec = ada.clone / "watchkeeper.toml"
    text = spec.read_text() + f'\n[share]\nstore = "{store}"\n'
    if data:
        text = text.replace('deps = ["train.py", "src/"]', 'deps = ["train.py", "src/", "data/"]')
        (ada.clone / ".gitignore").write_text("data/\n")
        (ada.clone / "data").mkdir()
        (ada.clone / "data" / "train.csv").write_text("age,city\n31,Paris\n42,Oslo\n")
    spec.write_text(text)
    commit_all(ada.clone, "share blobs")
    git(ada.clone, "push", "-q", "origin", "main")
    return ada, remote


def _stored_files(folder: Path) -> dict[str, bytes]:
    """name -> content of the complete blobs in a store folder (temporary files left out)."""
    return {
        f"{path.parent.name}/{path.name}": path.read_bytes()
        for path in folder.glob("*/*")
        if not path.name.startswith(INCOMING_PREFIX)
    }


def _each_blob_hashes_to_its_name(folder: Path) -> None:
    for name, content in _stored_files(folder).items():
        assert blake3.blake3(content).hexdigest() == name.replace("/", ""), name


def test_artifacts_and_diffs_travel_through_a_folder_store(tmp_path: Path) -> None:
    store = tmp_path / "team-blobs"
    store.mkdir()
    ada, remote = _team(tmp_path, str(store), data=True)
    ada.ok("train", "churn")
    (ada.clone / "src" / "helper.py").write_text('MESSAGE = "uncommitted"\n')
    ada.ok("train", "churn")  # a dirty tree: its diff is kept as a blob
    pushed = ada.json("push")
    assert pushed["versions"] == 2
    assert pushed["blobs"]["uploaded"] == 3  # the model (the same both times), data, diff
    _each_blob_hashes_to_its_name(store)

    bob = person(tmp_path, "Bob", remote)
    bob.ok("pull")
    out = tmp_path / "bob-out"
    got = bob.run("models", "get", "churn@2", "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert "fetched 1 artifacts from the folder" in got.stderr
    assert (out / "model.pkl").read_text() == "weights lr=0.01"

    ada_db = ada.ledger()
    [(diff_digest,)] = ada_db.execute(
        "SELECT digest FROM version_blobs WHERE kind = 'diff'"
    ).fetchall()
    ada_db.close()
    assert not ArtifactStore(bob.home / "artifacts").has(diff_digest)
    reproduced = bob.run("reproduce", "churn@2", "--no-run")
    assert reproduced.returncode == 0, reproduced.stderr
    assert ArtifactStore(bob.home / "artifacts").has(diff_digest)
    worktree = Path(reproduced.stdout.strip().splitlines()[-1].split()[-1])
    assert (worktree / "src" / "helper.py").read_text() == 'MESSAGE = "uncommitted"\n'
    assert (worktree / "data" / "train.csv").read_text() == "age,city\n31,Paris\n42,Oslo\n"
    assert not (bob.clone / "data").exists()

    again = ada.json("push")
    assert again["blobs"]["uploaded"] == 0 and again["versions"] == 0


def test_no_blobs_shares_records_only_and_get_names_what_is_missing(tmp_path: Path) -> None:
    store = tmp_path / "team-blobs"
    store.mkdir()
    ada, remote = _team(tmp_path, str(store))
    ada.ok("train", "churn")
    pushed = ada.json("push", "--no-blobs")
    assert pushed["versions"] == 1 and pushed["blobs"] is None
    assert _stored_files(store) == {}

    bob = person(tmp_path, "Bob", remote)
    bob.ok("pull")
    out = tmp_path / "bob-out"
    refused = bob.run("models", "get", "churn@1", "-o", str(out))
    assert refused.returncode == 2
    assert "model.pkl (blake3:" in refused.stderr
    assert f"missing from the local store and from the shared store the folder {store}" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert not (out / "model.pkl").exists()

    spec = bob.clone / "watchkeeper.toml"
    spec.write_text(spec.read_text().split("[share]")[0])
    unset = bob.run("models", "get", "churn@1", "-o", str(out))
    assert unset.returncode == 2
    assert "model.pkl (blake3:" in unset.stderr
    assert "no shared store is configured; set [share] store" in unset.stderr


def test_a_damaged_blob_in_the_store_is_refused_on_download(tmp_path: Path) -> None:
    store = tmp_path / "team-blobs"
    store.mkdir()
    ada, remote = _team(tmp_path, str(store))
    ada.ok("train", "churn")
    ada.ok("push")
    [artifact] = ada.json("models", "list")[0]["artifacts"].values()
    blob = store / artifact[7:9] / artifact[9:]
    blob.write_bytes(b"not the weights")

    bob = person(tmp_path, "Bob", remote)
    bob.ok("pull")
    out = tmp_path / "bob-out"
    refused = bob.run("models", "get", "churn@1", "-o", str(out))
    assert refused.returncode == 2
    assert "model.pkl is damaged in the shared store" in refused.stderr
    assert not (out / "model.pkl").exists()
    assert not ArtifactStore(bob.home / "artifacts").has(artifact)


def _versions_with_blobs(who: Person, count: int) -> list[str]:
    """`count` finished versions, each with an artifact of its own really in the local store."""
    local = ArtifactStore(who.home / "artifacts")
    head = git(who.clone, "rev-parse", "HEAD").strip()
    db = open_ledger(who.home / "ledger.db")
    digests = []
    try:
        with write_transaction(db):
            model_id = ensure_model(db, register_repo(db, who.clone), "churn")
            first = next_version(db, model_id)
            for offset in range(count):
                digest = local.put_bytes(f"weights {offset} ".encode() * 2000)
                digests.append(digest)
                version_id = insert_row(
                    db,
                    "model_versions",
                    {
                        "model_id": model_id,
                        "version": first + offset,
                        "status": "succeeded",
                        "commit_sha": head,
                        "dirty": 0,
                        "train_command": "python train.py",
                        "params": {"lr": 0.01, "epochs": 5},
                        "metrics": {"auc": 0.5},
                        "data": {},
                        "code": {},
                        "artifacts": {"model.pkl": digest},
                        "executor": "local",
                        "started_at": time.time() + offset,
                        "ended_at": time.time() + offset + 0.5,
                        "exit_code": 0,
                    },
                )
                record_version_blobs(db, version_id, [VersionBlob(ARTIFACT, "model.pkl", digest)])
    finally:
        db.close()
    return digests


@pytest.mark.slow
def test_kill_9_during_a_push_with_blobs_leaves_store_ledger_and_ref_consistent(
    tmp_path: Path,
) -> None:
    store = tmp_path / "team-blobs"
    store.mkdir()
    ada, remote = _team(tmp_path, str(store))
    digests = _versions_with_blobs(ada, 300)
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "push"],
        cwd=ada.clone,
        env=ada.environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(
        lambda: len(_stored_files(store)) >= 20 or process.poll() is not None,
        60,
        "the push to upload some blobs",
    )
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert 0 < len(_stored_files(store)) < len(digests), "killed half-way through the blobs"
    _each_blob_hashes_to_its_name(store)
    assert remote_records(remote) == [], "no record before all its blobs are in the store"
    db = ada.ledger()
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert not db.execute(
            "SELECT COUNT(*) FROM shared_records WHERE pushed_to IS NOT NULL"
        ).fetchone()[0], "nothing is marked pushed"
    finally:
        db.close()

    resumed = ada.json("push")
    assert resumed["versions"] == 300
    assert resumed["blobs"]["present"] + resumed["blobs"]["uploaded"] == 300
    assert resumed["blobs"]["present"] >= 20
    assert len(_stored_files(store)) == 300
    _each_blob_hashes_to_its_name(store)


def _ssh_store_for(
    who: Person, server: LoopbackSshd, make: RemoteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHKEEPER_HOME", str(who.home))
    make(server, "team")


@pytest.mark.ssh
def test_blobs_travel_through_an_ssh_store_with_the_host_key_checked(
    tmp_path: Path,
    shared_sshd: LoopbackSshd,  # noqa: F811
    make_remote: RemoteFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ada, remote = _team(tmp_path, "team")
    _ssh_store_for(ada, shared_sshd, make_remote, monkeypatch)
    ada.ok("train", "churn")
    pushed = ada.json("push")
    assert pushed["blobs"]["uploaded"] >= 1 and "the remote team" in pushed["blobs"]["store"]
    shared = tmp_path / "remote-team" / "shared-blobs"
    assert _stored_files(shared)
    _each_blob_hashes_to_its_name(shared)

    stranger = person(tmp_path, "Cy", remote)
    monkeypatch.setenv("WATCHKEEPER_HOME", str(stranger.home))
    make_remote(shared_sshd, "team", trusted=False)
    stranger.ok("pull")
    refused = stranger.run("models", "get", "churn@1", "-o", str(tmp_path / "cy-out"))
    assert refused.returncode == 2
    assert "host key" in refused.stderr.lower() and "Traceback" not in refused.stderr
    assert not (stranger.home / "known_hosts").exists() or shared_sshd.known_hosts_line() not in (
        (stranger.home / "known_hosts").read_text()
    )

    bob = person(tmp_path, "Bob", remote)
    _ssh_store_for(bob, shared_sshd, make_remote, monkeypatch)
    bob.ok("pull")
    out = tmp_path / "bob-out"
    got = bob.run("models", "get", "churn@1", "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert (out / "model.pkl").read_text() == "weights lr=0.01"


@pytest.mark.ssh
@pytest.mark.slow
def test_an_ssh_store_lost_mid_push_pushes_no_record_and_a_rerun_resumes(
    tmp_path: Path,
    private_sshd: LoopbackSshd,  # noqa: F811
    make_remote: RemoteFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ada, remote = _team(tmp_path, "team")
    _ssh_store_for(ada, private_sshd, make_remote, monkeypatch)
    digests = _versions_with_blobs(ada, 4)
    shared = tmp_path / "remote-team" / "shared-blobs"

    def stop_after_two(blob: VersionBlob) -> None:
        if len(_stored_files(shared)) == 2:
            private_sshd.stop()

    db = open_ledger(ada.home / "ledger.db")
    try:
        with pytest.raises(BlobStoreError, match="unreachable"):
            push(
                db,
                ada.clone,
                store=SshStore("team"),
                local_store=ArtifactStore(ada.home / "artifacts"),
                on_blob=stop_after_two,
            )
    finally:
        db.close()
    assert len(_stored_files(shared)) == 2
    assert remote_records(remote) == []

    private_sshd.start()
    resumed = ada.json("push")
    assert resumed["versions"] == 4
    assert (resumed["blobs"]["present"], resumed["blobs"]["uploaded"]) == (2, 2)
    assert len(_stored_files(shared)) == len(digests)
    _each_blob_hashes_to_its_name(shared)
