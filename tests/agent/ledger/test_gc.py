"""`models delete` and `gc`: refusals, exactly what is freed, dry runs, grace, running runs."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from agent.ledger import open_ledger
from agent.ledger.blobs import blobs_of_version
from agent.ledger.gc import stored_blobs
from agent.ledger.queries import versions
from agent.paths import WatchkeeperPaths
from tests.agent.runs.gitrepo import cli_command, cli_env
from tests.agent.runs.reproducible import cli, make_data_repo, write_csv
from tests.support import wait_for

HOURS_AGO = 2 * 3600


def paths() -> WatchkeeperPaths:
    return WatchkeeperPaths.from_environment()


def version_row(number: int) -> dict:
    found = versions(open_ledger(), model="churn", include_deleted=True)
    return next(v for v in found if v["version"] == number)


def store_digests() -> set[str]:
    return {blob.digest for blob in stored_blobs(paths().artifacts)}


def age_the_store() -> None:
    """Make every stored blob look written two hours ago (older than gc's grace period)."""
    old = time.time() - HOURS_AGO
    for blob in stored_blobs(paths().artifacts):
        os.utime(blob.path, (old, old))


def listed(number: int) -> set[str]:
    return set(blobs_of_version(open_ledger(), version_row(number)["id"]).values())


def three_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """v1; v2 with a code change (a diff) and changed data; v3 with more changed data."""
    root = make_data_repo(tmp_path)
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    (root / "helper.py").write_text("SCALE = 2.0\n")
    write_csv(root, "part1.csv", [10, 20])
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    (root / "helper.py").write_text("SCALE = 3.0\n")
    write_csv(root, "part2.csv", [7, 8])
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    return root


def test_delete_refuses_current_aliased_running_and_unknown_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = three_versions(tmp_path, monkeypatch)
    cli(root, monkeypatch, "models", "alias", "churn@1", "champion")

    current = cli(root, monkeypatch, "models", "delete", "churn@3")
    aliased = cli(root, monkeypatch, "models", "delete", "churn@2", "churn@1")
    unknown = cli(root, monkeypatch, "models", "delete", "churn@9")

    assert current.exit_code == 2 and "churn@3 is the current version" in current.output
    assert aliased.exit_code == 2 and "churn@1 is alias champion" in aliased.output
    assert "--force" in aliased.output
    assert unknown.exit_code == 2 and "has no version 9" in unknown.output
    assert all(version_row(n)["deleted_at"] is None for n in (1, 2, 3))  # all or nothing

    forced = cli(root, monkeypatch, "models", "delete", "churn@1", "churn@2", "--force")

    assert forced.exit_code == 0, forced.output
    assert "churn v1 deleted" in forced.output and "churn v2 deleted" in forced.output
    listing = cli(root, monkeypatch, "models", "list", "--all", "--json").output
    shown = cli(root, monkeypatch, "models", "compare", "churn", "--last", "3", "--json").output
    assert '"deleted": true' in listing
    assert [entry["version"] for entry in json.loads(shown)["versions"]] == [3]


def test_a_running_version_cannot_be_deleted_and_gc_keeps_what_it_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    (root / "helper.py").write_text("SCALE = 2.0\n")
    write_csv(root, "part1.csv", [10, 20])
    hold = tmp_path / "release"
    training = subprocess.Popen(
        cli_command("train", "churn"),
        cwd=root,
        env={**cli_env(), "WK_TEST_HOLD": str(hold)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: any(r["state"] == "running" for r in open_ledger()["runs"].rows), 30)
        running = version_row(2)
        age_the_store()

        refused = cli(root, monkeypatch, "models", "delete", "churn@2", "--force")
        collected = cli(root, monkeypatch, "gc", "--keep-last", "0")

        assert refused.exit_code == 2 and "churn@2 is still running" in refused.output
        assert collected.exit_code == 0, collected.output
        assert version_row(2)["deleted_at"] is None
        assert listed(2) and listed(2) <= store_digests()
        assert Path(running["run_id"]).name in os.listdir(paths().runs)
    finally:
        hold.touch()
    assert training.wait(timeout=60) == 0
    assert version_row(2)["status"] == "succeeded"
    assert listed(2) <= store_digests()


def test_gc_frees_exactly_what_only_deleted_versions_held_and_reproduce_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = three_versions(tmp_path, monkeypatch)
    run_of_v2 = paths().runs / version_row(2)["run_id"]
    assert cli(root, monkeypatch, "models", "delete", "churn@2").exit_code == 0
    age_the_store()
    before = store_digests()
    only_v2 = listed(2) - listed(1) - listed(3)
    assert only_v2  # its diff, its model.bin and its changed part1.csv

    freed = cli(root, monkeypatch, "gc")

    assert freed.exit_code == 0, freed.output
    assert before - store_digests() == only_v2
    assert "artifacts" in freed.output and "diffs" in freed.output and "run folders" in freed.output
    assert not run_of_v2.exists()
    assert (paths().runs / version_row(3)["run_id"]).is_dir()
    assert cli(root, monkeypatch, "gc").output.count("nothing to free") == 1
    again = cli(root, monkeypatch, "reproduce", "churn@1")
    assert again.exit_code == 0 and "reproduced exactly" in again.output, again.output


def test_dry_run_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = three_versions(tmp_path, monkeypatch)
    age_the_store()
    ledger_file = paths().ledger
    gc.collect()  # close the hash cache of stores this process dropped, before the snapshot
    files = {p: p.stat().st_mtime_ns for p in paths().data_dir.rglob("*") if p.is_file()}
    dump = "\n".join(open_ledger().conn.iterdump())

    shown = cli(root, monkeypatch, "gc", "--dry-run", "--keep-last", "1")

    assert shown.exit_code == 0, shown.output
    assert "would mark 2 versions deleted: churn@1, churn@2" in shown.output
    assert "would free" in shown.output and "artifacts" in shown.output
    assert "\n".join(open_ledger().conn.iterdump()) == dump
    now = {p: p.stat().st_mtime_ns for p in paths().data_dir.rglob("*") if p.is_file()}
    assert {p: m for p, m in now.items() if not p.name.startswith(ledger_file.name)} == {
        p: m for p, m in files.items() if not p.name.startswith(ledger_file.name)
    }


def test_keep_last_keeps_aliased_and_current_versions_and_new_blobs_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = three_versions(tmp_path, monkeypatch)
    cli(root, monkeypatch, "models", "alias", "churn@1", "champion")

    young = cli(root, monkeypatch, "gc", "--keep-last", "0")

    assert young.exit_code == 0, young.output
    assert "marked 1 versions deleted: churn@2" in young.output
    assert [version_row(n)["deleted_at"] is None for n in (1, 2, 3)] == [True, False, True]
    assert listed(2) <= store_digests()  # written within the grace period: kept for now
    assert "newer than the grace period" in young.output

    age_the_store()
    old = cli(root, monkeypatch, "gc")

    assert "artifacts" in old.output
    for number in (1, 3):
        assert listed(number) <= store_digests()
    assert cli(root, monkeypatch, "reproduce", "churn@champion").exit_code == 0


def test_data_brought_back_to_content_gc_freed_is_kept_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    write_csv(root, "part1.csv", [10, 20])
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    assert cli(root, monkeypatch, "models", "delete", "churn@1").exit_code == 0
    age_the_store()
    assert cli(root, monkeypatch, "gc").exit_code == 0
    write_csv(root, "part1.csv", [1, 2])  # v1's content again, with a new mtime

    trained = cli(root, monkeypatch, "train", "churn")

    assert trained.exit_code == 0 and "was not kept" not in trained.output, trained.output
    assert listed(3) <= store_digests()
    again = cli(root, monkeypatch, "reproduce", "churn@3")
    assert again.exit_code == 0 and "reproduced exactly" in again.output, again.output
