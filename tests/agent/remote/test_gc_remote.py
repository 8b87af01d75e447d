"""`gc --remote NAME` over the test sshd: run folders of deleted versions and unlinked blobs go."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest

from agent.remote.config import RemoteConfig
from tests.agent.runs.reproducible import cli, make_data_repo, reproducible_spec, write_csv


def cache_blobs(workdir: Path) -> set[str]:
    return set(os.listdir(workdir / "cache" / "blobs"))


def run_folders(workdir: Path) -> set[str]:
    return set(os.listdir(workdir / "runs"))


def test_gc_remote_frees_the_cache_blobs_only_a_deleted_version_used(
    box: RemoteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = Path(box.workdir)
    root = make_data_repo(tmp_path, reproducible_spec(remote=box.name), python="python")
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    first_runs, first_blobs = run_folders(workdir), cache_blobs(workdir)
    write_csv(root, "part1.csv", [10, 20])
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    second_run = (run_folders(workdir) - first_runs).pop()
    assert cli(root, monkeypatch, "models", "delete", "churn@1").exit_code == 0
    blobs_before = cache_blobs(workdir)

    dry = cli(root, monkeypatch, "gc", "--dry-run", "--remote", box.name)

    assert dry.exit_code == 0, dry.output
    assert f"remote {box.name}: would free" in dry.output
    assert cache_blobs(workdir) == blobs_before and run_folders(workdir) >= first_runs

    freed = cli(root, monkeypatch, "gc", "--remote", box.name)

    assert freed.exit_code == 0, freed.output
    assert f"remote {box.name}: freed" in freed.output
    assert run_folders(workdir) == {second_run}
    gone = blobs_before - cache_blobs(workdir)
    v1_part1 = blake3.blake3(b"x,y\n0,1\n1,2\n").hexdigest()
    assert v1_part1 in gone and gone <= first_blobs  # what only v1's run folder linked
    again = cli(root, monkeypatch, "reproduce", "churn@2", "--remote", box.name)
    assert again.exit_code == 0 and "reproduced exactly" in again.output, again.output
