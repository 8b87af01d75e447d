"""`watchkeeper reproduce` and what it needs: kept diffs, kept data, real git worktrees."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from agent.data.fingerprint import fingerprint
from agent.data.hashing import RACY_WINDOW_NS, stat_key
from agent.data.stat_cache import StatCache
from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.blobs import DATA, DIFF, blobs_of_version
from agent.ledger.gc import referenced_blobs
from agent.ledger.queries import current_version, versions
from agent.paths import WatchkeeperPaths
from agent.runs.reproduce import materialise, new_staging_path, reproduction_root
from desktop_app.queries.data import data_sources
from tests.agent.runs.gitrepo import cli_command, cli_env, commit_all, git
from tests.agent.runs.reproducible import cli, make_data_repo, reproducible_spec, write_csv
from tests.support import wait_for


def version(model: str, number: int) -> dict:
    return next(v for v in versions(open_ledger(), model=model) if v["version"] == number)


def change_code_and_data(root: Path) -> None:
    (root / "helper.py").write_text("SCALE = 2.0\n")  # uncommitted
    (root / "notes.txt").write_text("an untracked file\n")
    write_csv(root, "part1.csv", [10, 20])


def store() -> ArtifactStore:
    return ArtifactStore(WatchkeeperPaths.from_environment().artifacts)


def test_a_version_trained_before_code_and_data_changed_is_reproduced_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    change_code_and_data(root)
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}

    first = cli(root, monkeypatch, "reproduce", "churn@1")
    second = cli(root, monkeypatch, "reproduce", "churn@2")

    assert first.exit_code == 0, first.output
    assert "reproduced exactly" in first.output
    assert second.exit_code == 0 and "reproduced exactly" in second.output, second.output
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert after == before  # the user's tree is untouched
    folder = reproduction_root(WatchkeeperPaths.from_environment())
    # The code stays parked for the next reproduction; the data goes, in the background.
    wait_for(lambda: len(list(folder.iterdir())) == 1, timeout=30)
    (parked,) = folder.iterdir()
    assert parked.name.startswith("parked-") and not (parked / "data").exists()
    assert git(root, "worktree", "list").splitlines()[1].startswith(f"{parked} ")
    v1, v3, v4 = version("churn", 1), version("churn", 3), version("churn", 4)
    assert v3["reproduction_of"] == v1["id"] and v3["metrics"] == v1["metrics"]
    assert v3["reproduction"]["verdict"] == "reproduced exactly"
    assert version("churn", 2)["metrics"]["scale"] == v4["metrics"]["scale"] == 2.0
    current = current_version(open_ledger(), v1["model_id"])
    assert current is not None and current["version"] == 2  # reproductions are not current


def test_models_show_and_diff_print_the_kept_uncommitted_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    change_code_and_data(root)
    cli(root, monkeypatch, "train", "churn")

    shown = cli(root, monkeypatch, "models", "show", "churn@2", "--diff")
    patch = cli(root, monkeypatch, "models", "diff", "churn@1", "churn@2", "--patch")
    clean = cli(root, monkeypatch, "models", "show", "churn@1", "--diff")

    assert "-SCALE = 1.0\n+SCALE = 2.0" in shown.output
    assert "+++ b/notes.txt" in shown.output and "+an untracked file" in shown.output
    assert "+SCALE = 2.0" in patch.output and "+++ b/notes.txt" in patch.output
    assert clean.exit_code != 0 and "clean tree" in clean.output
    assert set(blobs_of_version(open_ledger(), version("churn", 2)["id"], DIFF)) == {
        "tracked.patch",
        "untracked.patch",
    }


def test_a_second_version_with_one_changed_file_stores_only_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    first = blobs_of_version(open_ledger(), version("churn", 1)["id"], DATA)
    blob_files = {p for p in store().root.rglob("*") if p.is_file()}
    write_csv(root, "part2.csv", [7, 7])
    cli(root, monkeypatch, "train", "churn")

    second = blobs_of_version(open_ledger(), version("churn", 2)["id"], DATA)
    new_files = {p for p in store().root.rglob("*") if p.is_file()} - blob_files
    assert sorted(first) == ["data/part0.csv", "data/part1.csv", "data/part2.csv"]
    changed = {path for path in second if second[path] != first[path]}
    assert changed == {"data/part2.csv"}
    new_data = {p for p in new_files if f"blake3:{p.parent.name}{p.name}" in second.values()}
    assert new_data == {store().path(second["data/part2.csv"])}


def test_a_later_edit_of_the_users_file_does_not_reach_the_kept_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    kept_blobs = blobs_of_version(open_ledger(), version("churn", 1)["id"], DATA)
    kept = store().path(kept_blobs["data/part0.csv"])
    original = kept.read_bytes()

    with (root / "data" / "part0.csv").open("r+b") as handle:  # edited in place
        handle.write(b"Z")

    assert kept.read_bytes() == original
    assert os.stat(kept).st_ino != os.stat(root / "data" / "part0.csv").st_ino


def test_a_ref_that_does_not_exist_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")

    missing_version = cli(root, monkeypatch, "reproduce", "churn@7")
    missing_model = cli(root, monkeypatch, "reproduce", "nosuch@1")

    assert missing_version.exit_code != 0 and "has no version 7" in missing_version.output
    assert "no model named 'nosuch'" in missing_model.output
    assert "Traceback" not in missing_version.output + missing_model.output


def test_a_commit_gone_from_the_repo_says_to_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    (root / "helper.py").write_text("SCALE = 3.0\n")
    sha = commit_all(root, "a commit that will be dropped")
    cli(root, monkeypatch, "train", "churn")
    git(root, "reset", "-q", "--hard", "HEAD~1")
    git(root, "reflog", "expire", "--expire=now", "--all")
    git(root, "gc", "-q", "--prune=now")

    result = cli(root, monkeypatch, "reproduce", "churn@1")

    assert result.exit_code != 0
    assert sha[:12] in result.output and "git fetch" in result.output
    assert "Traceback" not in result.output


def test_data_that_was_not_kept_is_listed_and_allow_missing_data_uses_the_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path, reproducible_spec('keep_data = "never"\n'))
    cli(root, monkeypatch, "train", "churn")
    write_csv(root, "part1.csv", [5, 5])

    refused = cli(root, monkeypatch, "reproduce", "churn@1")
    allowed = cli(root, monkeypatch, "reproduce", "churn@1", "--allow-missing-data")

    assert refused.exit_code != 0
    for name in ("data/part0.csv", "data/part1.csv", "data/part2.csv"):
        assert name in refused.output
    assert "--allow-missing-data" in refused.output
    assert len(versions(open_ledger(), model="churn")) == 2
    assert "not a reproduction" in allowed.output
    assert allowed.exit_code == 1 and "differs" in allowed.output


def test_a_damaged_blob_is_named_and_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    digest = blobs_of_version(open_ledger(), version("churn", 1)["id"], DATA)["data/part1.csv"]
    blob = store().path(digest)
    blob.chmod(0o600)
    blob.write_text("x,y\n0,999\n")  # same path, other bytes

    result = cli(root, monkeypatch, "reproduce", "churn@1")

    assert result.exit_code != 0
    assert "data/part1.csv is damaged" in result.output and str(blob) in result.output
    assert not blob.exists() and blob.with_name(blob.name + ".damaged").exists()
    assert len(versions(open_ledger(), model="churn")) == 1  # nothing trained on it
    assert list(reproduction_root(WatchkeeperPaths.from_environment()).iterdir()) == []
    cli(root, monkeypatch, "train", "churn")  # the next training keeps the content anew
    assert store().has(digest) and cli(root, monkeypatch, "reproduce", "churn@1").exit_code == 0


def test_no_run_lays_out_the_worktree_and_prints_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    change_code_and_data(root)
    cli(root, monkeypatch, "train", "churn")

    result = cli(root, monkeypatch, "reproduce", "churn@1", "--no-run")

    worktree = Path(result.output.strip().splitlines()[-1])
    assert (worktree / "helper.py").read_text() == "SCALE = 1.0\n"
    assert (worktree / "data" / "part1.csv").read_text() == "x,y\n0,1\n1,2\n"
    assert not (worktree / "notes.txt").exists()
    assert len(versions(open_ledger(), model="churn")) == 2


def test_a_reproduction_leaves_no_data_source_standing_for_its_gone_worktree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    old_part1 = blobs_of_version(open_ledger(), version("churn", 1)["id"], DATA)["data/part1.csv"]
    change_code_and_data(root)
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    reproduced = cli(root, monkeypatch, "reproduce", "churn@1")
    assert reproduced.exit_code == 0, reproduced.output

    connection = sqlite3.connect(WatchkeeperPaths.from_environment().ledger)
    connection.row_factory = sqlite3.Row
    try:
        listed = [source.path for source in data_sources(connection)]
    finally:
        connection.close()
    assert listed == [str((root / "data").resolve())]  # not the worktree's data folder
    # Once churn@1 and its reproduction are deleted, the old content is no longer held.
    assert cli(root, monkeypatch, "models", "delete", "churn@1", "churn@3").exit_code == 0
    kept, only_deleted = referenced_blobs(open_ledger(), set())
    assert old_part1 not in kept and only_deleted[old_part1] == DATA


def test_a_worktree_left_by_a_killed_reproduce_is_removed_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    hold = tmp_path / "release"
    folder = reproduction_root(WatchkeeperPaths.from_environment())
    killed = subprocess.Popen(
        cli_command("reproduce", "churn@1"),
        cwd=root,
        env={**cli_env(), "WK_TEST_HOLD": str(hold)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: any(r["state"] == "running" for r in open_ledger()["runs"].rows), 30)
        left = next(folder.iterdir())  # the worktree (the data it was laid out with moved in)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
    finally:
        hold.touch()
    assert left.is_dir() and left.name in git(root, "worktree", "list")

    again = cli(root, monkeypatch, "reproduce", "churn@1")

    assert again.exit_code == 0, again.output
    assert not left.exists() and left.name not in git(root, "worktree", "list")
    standing = (
        open_ledger()
        .execute(
            "SELECT count(*) FROM data_snapshots s JOIN data_sources d ON d.id = s.source_id "
            "WHERE s.deleted_at IS NULL AND substr(d.path, 1, ?) = ?",
            [len(str(folder.resolve())), str(folder.resolve())],
        )
        .fetchone()[0]
    )
    assert standing == 0  # the killed one's snapshot and the next one's are both retired


def test_a_worktree_whose_background_deletion_was_cut_short_goes_with_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    folder = reproduction_root(WatchkeeperPaths.from_environment())
    finished = subprocess.Popen(["true"])
    finished.wait()
    trash = folder / f"trash-{finished.pid}-1-abcdef"
    (trash / "data").mkdir(parents=True)
    (trash / "data" / "part0.csv").write_text("x,y\n")

    again = cli(root, monkeypatch, "reproduce", "churn@1")

    assert again.exit_code == 0, again.output
    wait_for(lambda: [p.name[:7] for p in folder.iterdir()] == ["parked-"], timeout=30)


def test_data_restored_by_a_killed_reproduce_goes_with_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    folder = reproduction_root(WatchkeeperPaths.from_environment())
    finished = subprocess.Popen(["true"])
    finished.wait()
    staging = new_staging_path(WatchkeeperPaths.from_environment())
    left = folder / staging.name.replace(f"run-{os.getpid()}-", f"run-{finished.pid}-", 1)
    (left / "data").mkdir(parents=True)
    (left / "data" / "part0.csv").write_text("x,y\n")

    again = cli(root, monkeypatch, "reproduce", "churn@1")

    assert again.exit_code == 0, again.output
    assert not left.exists()


def test_a_data_folder_holding_tracked_files_is_laid_out_with_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)  # data/ is ignored: a data dep, whatever git tracks in it
    (root / "data" / "README.md").write_text("where the data comes from\n")
    (root / "data" / "part2.csv").write_text("x,y\n0,100\n")
    git(root, "add", "-f", "data/README.md", "data/part2.csv")
    commit_all(root, "describe the data")  # part2.csv is changed next: its kept content wins
    write_csv(root, "part2.csv", [5, 6])
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0

    laid_out = cli(root, monkeypatch, "reproduce", "churn@1", "--no-run")
    reproduced = cli(root, monkeypatch, "reproduce", "churn@1")

    worktree = Path(laid_out.output.strip().splitlines()[-1])
    assert (worktree / "data" / "README.md").read_text() == "where the data comes from\n"
    assert (worktree / "data" / "part2.csv").read_text() == "x,y\n0,5\n1,6\n"
    assert (worktree / "data" / "part0.csv").read_text() == "x,y\n0,0\n1,1\n"
    assert reproduced.exit_code == 0 and "reproduced exactly" in reproduced.output, (
        reproduced.output
    )


def test_a_checkout_that_fails_leaves_neither_worktree_nor_restored_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    (root / ".git" / "worktrees").write_text("not a folder\n")  # git cannot add a worktree

    result = cli(root, monkeypatch, "reproduce", "churn@1")

    assert result.exit_code != 0
    assert "git worktree add" in result.output and "failed in" in result.output, result.output
    assert list(reproduction_root(WatchkeeperPaths.from_environment()).iterdir()) == []
    assert len(versions(open_ledger(), model="churn")) == 1


def test_a_blob_changed_after_its_stat_vouched_for_it_is_named_and_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    digest = blobs_of_version(open_ledger(), version("churn", 1)["id"], DATA)["data/part1.csv"]
    blob = store().path(digest)
    written = blob.stat()
    settled_at = max(written.st_mtime_ns, written.st_ctime_ns) + RACY_WINDOW_NS
    wait_for(lambda: time.time_ns() > settled_at, timeout=10)  # past the racy window
    assert cli(root, monkeypatch, "reproduce", "churn@1").exit_code == 0  # hashes it once
    cache = StatCache.open(WatchkeeperPaths.from_environment())
    assert cache.cached_digests([stat_key(blob.stat())]) == [bytes.fromhex(digest[7:])]
    blob.write_text("x,y\n0,9\n1,9\n")  # same size, other bytes: its stat is another

    result = cli(root, monkeypatch, "reproduce", "churn@1")

    assert result.exit_code != 0
    assert "data/part1.csv is damaged" in result.output and str(blob) in result.output
    assert not blob.exists() and blob.with_name(blob.name + ".damaged").exists()
    assert len(versions(open_ledger(), model="churn")) == 2  # the first reproduction only


def test_metrics_within_the_tolerance_pass_and_beyond_it_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    monkeypatch.setenv("WK_TEST_NOISE", "1e-9")  # the reproduction's total is 1e-9 off

    close = cli(root, monkeypatch, "reproduce", "churn@1")
    strict = cli(root, monkeypatch, "reproduce", "churn@1", "--tolerance", "0")

    assert close.exit_code == 0 and "metrics within tolerance" in close.output, close.output
    assert "artifact model.bin" in close.output and "differs" in close.output
    assert strict.exit_code == 1 and "differs:" in strict.output
    assert version("churn", 3)["reproduction"]["verdict"] == "differs"


def test_data_diff_shows_the_changed_rows_of_kept_csv_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    cli(root, monkeypatch, "train", "churn")
    write_csv(root, "part1.csv", [1, 99, 2])
    cli(root, monkeypatch, "train", "churn")
    first, second = (str(version("churn", n)["data"]["data"]["snapshot_id"]) for n in (1, 2))

    result = cli(root, monkeypatch, "data", "diff", first, second, "--rows", "5")

    assert "rows     part1.csv: 2 added, 1 removed (whole lines" in result.output, result.output
    assert "    - 1,2\n" in result.output
    assert "    + 1,99\n" in result.output and "    + 2,2\n" in result.output
    by_version = cli(root, monkeypatch, "data", "diff", "churn@1", "churn@2", "--key", "x")
    assert "rows     part1.csv: 1 added, 0 removed, 1 changed (rows matched by x)" in (
        by_version.output
    ), by_version.output
    assert "    + 2,2\n" in by_version.output and "    ~ x=1: y 2 → 99\n" in by_version.output


def test_the_restored_data_is_not_read_again_and_the_run_uses_the_worktree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = reproducible_spec().replace('train = "', 'train = "pwd -P > where.txt && ')
    root = make_data_repo(tmp_path, spec.replace('outs = ["model.bin"]', 'outs = ["where.txt"]'))
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    paths = WatchkeeperPaths.from_environment()
    laid_out = materialise(open_ledger(), version("churn", 1), paths, keep=True)
    cache = StatCache.open(paths)

    fingerprint(laid_out.worktree / "data", cache=cache)
    reproduced = cli(root, monkeypatch, "reproduce", "churn@1")

    assert laid_out.restored_files == 3 and cache.stats.files_hashed == 0
    assert "metrics within tolerance" in reproduced.output, reproduced.output  # where.txt differs
    where = store().path(version("churn", 2)["artifacts"]["where.txt"]).read_text().strip()
    assert Path(where).parent == reproduction_root(paths).resolve()
    assert not (paths.runs / version("churn", 2)["run_id"] / "code").exists()


SPOILING_SCRIPT = textwrap.dedent(
    """\
    import json, pathlib, sys
    here = pathlib.Path.cwd()
    left = [p for p in ("leftover.txt", "build/out.bin", "data/extra.csv") if (here / p).exists()]
    if left or "spoiled" in (here / "helper.py").read_text():
        sys.exit(f"left by the reproduction before: {left or 'helper.py changed'}")
    total = sum(
        float(line.split(",")[1])
        for path in sorted((here / "data").glob("*.csv"))
        for line in path.read_text().splitlines()[1:]
    )
    (here / "model.bin").write_text(f"weights {total!r}\\n")
    json.dump({"total": total}, open("metrics.json", "w"))
    if "reproduce" in here.parts:  # spoil every reproduction's worktree for the next one
        (here / "leftover.txt").write_text("output\\n")
        (here / "build").mkdir()
        (here / "build" / "out.bin").write_bytes(b"x")
        with open(here / "helper.py", "a") as helper:
            helper.write("# spoiled\\n")
        with open(here / "data" / "part0.csv", "a") as part:
            part.write("9,1000\\n")
        (here / "data" / "part1.csv").unlink()
        (here / "data" / "extra.csv").write_text("x,y\\n0,5\\n")
    """
)


def test_the_next_reproduction_checks_out_over_the_parked_code_and_sees_no_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_repo(tmp_path)
    (root / "train.py").write_text(SPOILING_SCRIPT)
    commit_all(root, "a training that spoils its worktree")
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    folder = reproduction_root(WatchkeeperPaths.from_environment())

    first = cli(root, monkeypatch, "reproduce", "churn@1")

    assert first.exit_code == 0 and "reproduced exactly" in first.output, first.output
    (parked,) = folder.glob("parked-*")
    train_inode = (parked / "train.py").stat().st_ino

    second = cli(root, monkeypatch, "reproduce", "churn@1")

    assert second.exit_code == 0 and "reproduced exactly" in second.output, second.output
    assert not parked.exists()
    (again,) = folder.glob("parked-*")
    assert (again / "train.py").stat().st_ino == train_inode  # reused, not checked out anew
    assert "spoiled" not in (root / "helper.py").read_text()


def reproduced_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """A repo whose v1 was reproduced once: the repo, the reproduction folder, the parked
    worktree in it."""
    root = make_data_repo(tmp_path)
    assert cli(root, monkeypatch, "train", "churn").exit_code == 0
    assert cli(root, monkeypatch, "reproduce", "churn@1").exit_code == 0
    folder = reproduction_root(WatchkeeperPaths.from_environment())
    (parked,) = folder.glob("parked-*")
    return root, folder, parked


def test_a_parked_worktree_over_an_hour_old_goes_with_the_next_reproduction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, folder, parked = reproduced_once(tmp_path, monkeypatch)
    old = folder / f"parked-{int(time.time()) - 3601}-{parked.name.rsplit('-', 1)[1]}"
    parked.rename(old)  # git's record of it is repaired by the removal's prune
    (tmp_path / "other").mkdir()
    other = make_data_repo(tmp_path / "other")
    assert cli(other, monkeypatch, "train", "churn").exit_code == 0

    assert cli(other, monkeypatch, "reproduce", "churn@1").exit_code == 0

    assert not old.exists()
    assert len(git(root, "worktree", "list").splitlines()) == 1
    assert [p.name[:7] for p in folder.iterdir()] == ["parked-"]  # the other repo's


def test_gc_removes_the_parked_worktree_and_its_record_in_the_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _, parked = reproduced_once(tmp_path, monkeypatch)

    dry = cli(root, monkeypatch, "gc", "--dry-run")
    assert "would remove 1 parked reproduction worktree(s)" in dry.output and parked.exists()
    collected = cli(root, monkeypatch, "gc")

    assert collected.exit_code == 0, collected.output
    assert "removed 1 parked reproduction worktree(s)" in collected.output
    assert not parked.exists()
    assert len(git(root, "worktree", "list").splitlines()) == 1
