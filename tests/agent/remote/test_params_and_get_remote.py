"""Params reach the command over SSH and on Slurm, and `models get` copies those versions out."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.ledger import open_ledger
from agent.remote.config import RemoteConfig
from agent.runs.training import train
from tests.agent.remote.conftest import RemoteFactory
from tests.agent.remote.sshd_server import LoopbackSshd
from tests.agent.remote.test_slurm import cluster, slurm_cluster  # noqa: F401 (fixtures)
from tests.agent.runs.gitrepo import make_repo

PROBE = textwrap.dedent(
    """\
    import json, os, pathlib, sys
    seen = {"argv": sys.argv[1:], "env": os.environ.get("WK_PARAM_LR"),
            "file": json.loads(pathlib.Path("params.json").read_text())}
    pathlib.Path("out").mkdir(exist_ok=True)
    pathlib.Path("out/seen.json").write_text(json.dumps(seen))
    pathlib.Path("out/weights.bin").write_bytes(bytes(range(256)) * 64)
    json.dump({"lr": float(sys.argv[1])}, open("metrics.json", "w"))
    """
)


def probe_spec(remote: str) -> str:
    return textwrap.dedent(
        f"""\
        [models.churn]
        train = "python probe.py {{lr}} {{tag}}"
        deps = ["probe.py"]
        outs = ["out"]
        metrics = "metrics.json"
        params = {{ lr = 0.5, tag = "base" }}
        params_file = "params.json"
        remote = "{remote}"
        resources = {{ cpus = 1, memory = "100M", time = "00:05:00" }}
        """
    )


def train_and_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: str, kind: str) -> Path:
    root = make_repo(tmp_path, files={"probe.py": PROBE}, spec=probe_spec(remote))
    db = open_ledger()
    log = bytearray()
    try:
        result = train(
            root, "churn", param_pairs=["lr=0.25", "tag=a b'c"], db=db, on_log=log.extend
        )
        executor = db.execute(
            "SELECT executor FROM model_versions WHERE run_id = ?", [result.run_id]
        ).fetchone()[0]
    finally:
        db.close()
    assert result.status == "succeeded", (result.problem, log.decode())
    assert executor == kind
    out = tmp_path / "export"
    monkeypatch.chdir(root)
    got = CliRunner().invoke(
        main, ["models", "get", result.run_id[-6:], "-o", str(out)], catch_exceptions=False
    )
    assert got.exit_code == 0, got.output
    return out


def check_export(out: Path) -> None:
    seen = json.loads((out / "out/seen.json").read_text())
    assert seen == {
        "argv": ["0.25", "a b'c"],
        "env": "0.25",
        "file": {"lr": 0.25, "tag": "a b'c"},
    }
    assert (out / "out/weights.bin").read_bytes() == bytes(range(256)) * 64


@pytest.mark.ssh
def test_params_reach_an_ssh_run_and_its_artifacts_come_back_out(
    shared_sshd: LoopbackSshd,
    make_remote: RemoteFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_remote(shared_sshd, "box")
    check_export(train_and_get(tmp_path, monkeypatch, "box", "ssh"))


@pytest.mark.ssh
@pytest.mark.slurm
def test_params_reach_a_slurm_job_and_its_artifacts_come_back_out(
    cluster: RemoteConfig,  # noqa: F811 (the fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_export(train_and_get(tmp_path, monkeypatch, "cluster", "slurm"))
