"""Declared outs: symlinks that leave code/ are never followed, outs/ exists while the command
runs, and a local out is kept once in the run folder (plus its artifact), on every executor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.ledger.artifacts import ArtifactStore
from agent.paths import WatchkeeperPaths
from agent.remote.config import RemoteConfig
from agent.runs.training import TrainResult
from tests.agent.remote.conftest import RemoteFactory
from tests.agent.remote.sshd_server import LoopbackSshd
from tests.agent.runs.gitrepo import make_repo
from tests.faults.conftest import ledger_is_intact, run_rows
from tests.faults.support import train_bounded

SECRET = "not for the artifact store\n"
MIB = 1 << 20


def make_outs_project(folder: Path, script: str, remote: str, outs: list[str]) -> Path:
    spec = (
        "[models.churn]\n"
        'train = "sh train.sh"\n'
        'deps = ["train.sh"]\n'
        f"outs = {json.dumps(outs)}\n"
        'metrics = "metrics.json"\n'
        f'remote = "{remote}"\n'
    )
    return make_repo(folder, files={"train.sh": script}, spec=spec)


@pytest.fixture(params=["local", "ssh"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, RemoteConfig | None]:
    """Where the run goes: this machine, or a remote on the real sshd."""
    if request.param == "local":
        return "local", None
    server: LoopbackSshd = request.getfixturevalue("shared_sshd")
    make_remote: RemoteFactory = request.getfixturevalue("make_remote")
    return "box", make_remote(server, "box")


def files_holding(folder: Path, content: bytes) -> list[Path]:
    if not folder.exists():
        return []
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and path.read_bytes() == content
    ]


def test_outs_that_are_symlinks_out_of_code_are_refused_unread(
    target: tuple[str, RemoteConfig | None], tmp_path: Path
) -> None:
    remote, config = target
    secrets = tmp_path / "secrets"  # stands in for /etc/ssh
    secrets.mkdir()
    (secrets / "ssh_host_key").write_text(SECRET)
    script = (
        "ln -s /etc/passwd model.pkl\n"
        "mkdir -p models && echo weights > models/a.txt\n"
        f"ln -s {secrets} models/keys\n"
        f'ln -s {secrets}/ssh_host_key "$WK_RUN_DIR/outs/planted"\n'
        "echo '{\"auc\": 0.5}' > metrics.json\n"
    )
    result = train_bounded(make_outs_project(tmp_path, script, remote, ["model.pkl", "models"]))
    assert isinstance(result, TrainResult), result
    assert result.status == "failed"
    problem = result.problem or ""
    assert problem.startswith("outs missing after training: model.pkl."), problem
    assert "refusing out model.pkl: a symlink leading out of code/ (to /etc/passwd)" in problem
    log = (WatchkeeperPaths.from_environment().runs / result.run_id / "log").read_text()
    assert f"refusing out models/keys: a symlink leading out of code/ (to {secrets})" in log
    assert "refusing out planted" in log
    searched = [Path(os.environ["WATCHKEEPER_HOME"])]
    if config is not None:
        searched.append(Path(config.workdir) / "runs" / result.run_id / "outs")
    for secret in (Path("/etc/passwd").read_bytes(), SECRET.encode()):
        assert [path for folder in searched for path in files_holding(folder, secret)] == []
    (row,) = run_rows()
    assert row["state"] == "failed" and "refusing out model.pkl" in row["detail"]["problem"]
    assert ledger_is_intact()


def test_symlinks_inside_code_are_followed(
    target: tuple[str, RemoteConfig | None], tmp_path: Path
) -> None:
    remote, _ = target
    script = (
        "mkdir -p ckpt models && echo best > ckpt/best.pkl\n"
        "ln -s ckpt/best.pkl model.pkl\n"
        "ln -s ../ckpt models/ckpt\n"
        "echo '{\"auc\": 0.5}' > metrics.json\n"
    )
    result = train_bounded(make_outs_project(tmp_path, script, remote, ["model.pkl", "models"]))
    assert isinstance(result, TrainResult), result
    assert result.status == "succeeded", result.problem
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    assert sorted(result.artifacts) == ["model.pkl", "models/ckpt/best.pkl"]
    assert store.path(result.artifacts["model.pkl"]).read_text() == "best\n"


def test_outs_folder_exists_while_the_command_runs(
    target: tuple[str, RemoteConfig | None], tmp_path: Path
) -> None:
    remote, _ = target
    script = 'echo direct > "$WK_RUN_DIR/outs/model.pkl"\necho \'{"auc": 0.5}\' > metrics.json\n'
    result = train_bounded(make_outs_project(tmp_path, script, remote, ["model.pkl"]))
    assert isinstance(result, TrainResult), result
    assert result.status == "succeeded", result.problem
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    assert store.path(result.artifacts["model.pkl"]).read_text() == "direct\n"


def disk_use(folders: list[Path], size: int) -> int:
    """Bytes allocated to distinct files of exactly `size` bytes below `folders`."""
    seen: dict[tuple[int, int], int] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            info = path.lstat()
            if path.is_file() and not path.is_symlink() and info.st_size == size:
                seen[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return sum(seen.values())


def test_a_local_out_is_kept_once_beside_its_artifact(tmp_path: Path) -> None:
    script = f"head -c {4 * MIB} /dev/urandom > model.pkl\necho '{{\"auc\": 0.5}}' > metrics.json\n"
    result = train_bounded(make_outs_project(tmp_path, script, "local", ["model.pkl"]))
    assert isinstance(result, TrainResult), result
    assert result.status == "succeeded", result.problem
    paths = WatchkeeperPaths.from_environment()
    run_dir = paths.runs / result.run_id
    code, out = run_dir / "code" / "model.pkl", run_dir / "outs" / "model.pkl"
    assert os.path.samestat(code.stat(), out.stat())
    assert disk_use([run_dir, paths.artifacts], 4 * MIB) <= 2 * 4 * MIB + 64 * 1024
