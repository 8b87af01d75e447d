"""`watchkeeper reproduce --remote`: over the test sshd and on the test Slurm."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.ledger import open_ledger
from agent.ledger.queries import versions
from agent.remote.config import RemoteConfig
from tests.agent.remote.test_slurm import cluster, slurm_cluster  # noqa: F401 (fixtures)
from tests.agent.runs.reproducible import cli, make_data_repo, reproducible_spec, write_csv

SLURM_RESOURCES = 'resources = { cpus = 1, memory = "100M", time = "00:05:00" }\n'


def train_change_and_reproduce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: str, extra: str = ""
) -> str:
    root = make_data_repo(tmp_path, reproducible_spec(extra, remote=remote), python="python")
    first = cli(root, monkeypatch, "train", "churn")
    assert first.exit_code == 0, first.output
    (root / "helper.py").write_text("SCALE = 2.0\n")
    write_csv(root, "part1.csv", [10, 20])
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    result = cli(root, monkeypatch, "reproduce", "churn@1", "--remote", remote)
    assert result.exit_code == 0, result.output
    return result.output


def test_reproduce_over_ssh_gives_the_same_version(
    box: RemoteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = train_change_and_reproduce(tmp_path, monkeypatch, box.name)

    assert "reproduced exactly" in output
    reproduction = versions(open_ledger(), model="churn")[0]
    assert reproduction["executor"] == "ssh" and reproduction["reproduction_of"] is not None


@pytest.mark.slurm
def test_reproduce_on_slurm_gives_the_same_version(
    cluster: RemoteConfig,  # noqa: F811 (fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = train_change_and_reproduce(tmp_path, monkeypatch, cluster.name, SLURM_RESOURCES)

    assert "reproduced exactly" in output
    assert versions(open_ledger(), model="churn")[0]["executor"] == "slurm"
