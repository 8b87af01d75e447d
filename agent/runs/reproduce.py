"""Reproduce a version: its commit and kept diff in a temporary worktree, its kept data, its
params; train there and compare the result with the original."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlite_utils import Database

from agent.data.hashing import DIGEST_PREFIX, StatKey, stat_key
from agent.data.snapshots import load_snapshot
from agent.data.stat_cache import StatCache
from agent.errors import WatchkeeperError
from agent.ledger import write_transaction
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.blobs import DATA, DIFF, blobs_of_version
from agent.ledger.queries import update_row
from agent.paths import PRIVATE_FOLDER_MODE, WatchkeeperPaths
from agent.project.git import GitInBackground, git
from agent.runs.code_diff import apply_code_diff
from agent.runs.data_cache import file_names
from agent.runs.executor import process_alive, process_start_ticks
from agent.runs.training import TrainResult, train

log = logging.getLogger(__name__)

EXACTLY = "reproduced exactly"
WITHIN_TOLERANCE = "metrics within tolerance"
DIFFERS = "differs"
EXIT_CODES = {EXACTLY: 0, WITHIN_TOLERANCE: 0, DIFFERS: 1}
DEFAULT_TOLERANCE = 1e-6
MAX_LISTED_FILES = 20
# Files restored at once: hashing (blake3 lets go of the GIL) overlaps reading and writing.
RESTORE_WORKERS = 4
# Files each restore task takes in turn (one task a file costs more than the copy of a small one).
RESTORE_BATCH = 8
# `reproduce/run-<pid>-<start ticks>-<token>`: removed by the next reproduce once that process is
# gone. `reproduce/kept-…` (made by --no-run) stays until the user removes it.
_OWNED_WORKTREE = re.compile(r"^(?:run|trash)-(\d+)-(\d+)-")
# `reproduce/parked-<unix seconds>-<token>`: the code of a finished reproduction (its data
# removed), checked out anew by the next reproduction of the same repo instead of making every
# file again; removed once older than PARKED_FOR_SECONDS.
_PARKED_WORKTREE = re.compile(r"^parked-(\d+)-")
PARKED_FOR_SECONDS = 3600


@dataclass
class Materialised:
    """A version's code and data laid out in a worktree, and what could not be restored."""

    worktree: Path
    restored_files: int = 0
    restored_bytes: int = 0
    current_data: list[str] = field(default_factory=list)  # files taken from the repo as is
    data_deps: list[str] = field(default_factory=list)  # where the data was laid out


@dataclass(frozen=True)
class Comparison:
    """The verdict and the rows that led to it: (what, original, reproduction, same?)."""

    verdict: str
    rows: list[tuple[str, str, str, str]]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


@dataclass
class Reproduction:
    """What `reproduce` did: where, the new version, the comparison."""

    materialised: Materialised
    result: TrainResult | None = None
    comparison: Comparison | None = None


def label(version: dict[str, Any]) -> str:
    return f"{version['model']}@{version['version']}"


def reproduction_root(paths: WatchkeeperPaths) -> Path:
    """The folder holding the temporary worktrees (beside the blob store, for reflinks)."""
    return paths.data_dir / "reproduce"


def check_commit(repo: Path, version: dict[str, Any]) -> str:
    """The version's commit, or an error saying it is gone and to fetch it."""
    sha = str(version.get("commit_sha") or "")
    if not repo.is_dir():
        raise WatchkeeperError(
            f"{label(version)} was trained in {repo}, which no longer exists; clone the repo "
            "there again to reproduce it"
        )
    if not sha or not _has(repo, sha):
        raise WatchkeeperError(
            f"{label(version)} was trained from commit {sha[:12] or '(none)'}, which is not in "
            f"{repo} (a rebase, a reset or another clone?); run `git fetch` there, or fetch the "
            "branch that holds it, and try again"
        )
    return sha


def _has(repo: Path, sha: str) -> bool:
    completed = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "-e", f"{sha}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    return completed.returncode == 0


@dataclass
class DataPlan:
    """A version's data: each file to restore and its blob, each dep's kind, the stat of each
    stored blob, and the files whose content was not kept."""

    restore: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, os.stat_result] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def plan_data(db: Database, store: ArtifactStore, version: dict[str, Any]) -> DataPlan:
    """What restoring a version's data deps takes (see DataPlan)."""
    kept = blobs_of_version(db, int(version["id"]), DATA)
    plan = DataPlan(blobs=store.blob_stats(kept.values()))
    for dep, record in (version.get("data") or {}).items():
        fingerprint = load_snapshot(db, int(record["snapshot_id"]))
        plan.kinds[dep] = fingerprint.kind
        for _, name in file_names(dep, fingerprint):
            digest = kept.get(name)
            if digest is None or digest not in plan.blobs:
                plan.missing.append(name)
            else:
                plan.restore[name] = digest
    return plan


def missing_data_error(version: dict[str, Any], missing: list[str]) -> WatchkeeperError:
    shown = ", ".join(missing[:MAX_LISTED_FILES])
    more = f" and {len(missing) - MAX_LISTED_FILES} more" if len(missing) > MAX_LISTED_FILES else ""
    return WatchkeeperError(
        f"{label(version)} cannot be reproduced: the content of {len(missing)} data file(s) was "
        f"not kept ({shown}{more}); it was trained before the data cache, or with keep_data "
        '= "never" or over the size limit. Pass --allow-missing-data to use the current data '
        "instead (the result is then not a reproduction)."
    )


def remove_abandoned_worktrees(paths: WatchkeeperPaths) -> list[Path]:
    """Remove the worktrees of reproductions whose process is gone (killed, say)."""
    removed: list[Path] = []
    folder = reproduction_root(paths)
    if not folder.is_dir():
        return removed
    for worktree in folder.iterdir():
        match = _OWNED_WORKTREE.match(worktree.name)
        if match is None or process_alive(int(match.group(1)), int(match.group(2))):
            continue
        if worktree.name.startswith("trash-"):  # its deletion was cut short
            _delete(worktree)
        else:
            remove_worktree(worktree)
        removed.append(worktree)
    return removed + remove_parked_worktrees(paths, older_than=PARKED_FOR_SECONDS)


def remove_parked_worktrees(paths: WatchkeeperPaths, *, older_than: float = 0) -> list[Path]:
    """Remove the parked worktrees (see `park_worktree`) parked more than `older_than` seconds
    ago (all of them by default); the ones removed."""
    removed: list[Path] = []
    for parked in parked_worktrees(paths, older_than=older_than):
        claimed = parked.with_name(f"{_owned('run')}-gone-{secrets.token_hex(3)}")
        try:  # claimed first, so that a reproduction taking it meanwhile keeps it whole
            os.rename(parked, claimed)
        except OSError:
            continue
        remove_worktree(claimed)
        removed.append(parked)
    return removed


def _owned(kind: str) -> str:
    """`<kind>-<pid>-<start ticks>`: the start of a folder this process owns (see
    _OWNED_WORKTREE), removed by a later reproduction once this process is gone."""
    return f"{kind}-{os.getpid()}-{process_start_ticks(os.getpid())}"


def _parked_in(folder: Path) -> dict[Path, int]:
    """The parked worktrees in `folder`, each with the time it was parked."""
    if not folder.is_dir():
        return {}
    return {
        parked: int(match.group(1))
        for parked in sorted(folder.iterdir())
        if (match := _PARKED_WORKTREE.match(parked.name)) is not None
    }


def parked_worktrees(paths: WatchkeeperPaths, *, older_than: float = 0) -> list[Path]:
    """The parked worktrees (see `park_worktree`) parked more than `older_than` seconds ago."""
    now = time.time()
    return [
        parked
        for parked, since in _parked_in(reproduction_root(paths)).items()
        if now - since >= older_than
    ]


def park_worktree(worktree: Path, data_deps: list[str]) -> bool:
    """Keep a finished reproduction's worktree for the next reproduction of its repo: its data
    deps are deleted (in the background) and its code stays, renamed `parked-…`, to be reset
    by `_claim_parked`. False (nothing done) when it is not a worktree of a repo or a worktree
    of that repo is parked already: the caller removes it then."""
    common = _common_git_dir(worktree)
    if common is None or _parked_of(worktree.parent, common):
        return False
    trash = worktree.with_name(f"{_owned('trash')}-{secrets.token_hex(3)}")
    try:
        trash.mkdir(mode=PRIVATE_FOLDER_MODE)
        for index, dep in enumerate(data_deps):
            with contextlib.suppress(FileNotFoundError):
                os.rename(worktree / dep, trash / str(index))
        parked = worktree.with_name(f"parked-{int(time.time())}-{secrets.token_hex(3)}")
        os.rename(worktree, parked)
    except OSError as error:
        log.info("the worktree %s is removed, not parked: %s", worktree, error)
        _delete_in_background(trash)
        return False
    _delete_in_background(trash)
    git(common, "worktree", "repair", str(parked), check=False)
    return True


def _parked_of(folder: Path, common: Path) -> list[Path]:
    """The parked worktrees in `folder` of the repo whose .git folder is `common`."""
    return [parked for parked in _parked_in(folder) if _common_git_dir(parked) == common]


def _claim_parked(repo: Path, worktree: Path) -> bool:
    """Move a parked worktree of `repo` to `worktree` and reset it to a clean checkout of
    what it holds (no file left from the reproduction before: not its outputs, not its
    changes); False when there is none, another reproduction took it first, or it cannot be
    reset (it is removed then)."""
    common = repo / ".git" if (repo / ".git").is_dir() else _common_git_dir(repo)
    if common is None:
        return False
    for parked in _parked_of(worktree.parent, common.resolve()):
        try:
            os.rename(parked, worktree)
        except OSError:
            continue  # another reproduction took it
        try:
            git(common, "worktree", "repair", str(worktree))
            git(worktree, "clean", "-ffdxq")
        except WatchkeeperError as error:
            log.info("the parked worktree %s is removed, not reused: %s", parked, error)
            remove_worktree(worktree)
            return False
        return True
    return False


def remove_worktree(worktree: Path, *, in_background: bool = False) -> None:
    """Delete a temporary worktree and forget it in its repo (whatever state it is in).

    With `in_background`, the worktree is renamed aside (`trash-<pid>-…` beside it) and
    forgotten at once, and a detached `rm -rf` deletes its files while the caller goes on;
    trash left by a deletion that was cut short goes with the next reproduction's clean-up.
    """
    common = _common_git_dir(worktree)
    if in_background:
        trash = worktree.with_name(f"{_owned('trash')}-{secrets.token_hex(3)}")
        try:
            os.replace(worktree, trash)
        except OSError:
            in_background = False
        else:
            _delete_in_background(trash)
    if not in_background:
        _delete(worktree)
    if common is not None and common.is_dir():
        git(common, "worktree", "prune", check=False)


def _delete_in_background(folder: Path) -> None:
    """Delete `folder` by a detached `rm -rf`, which outlives the caller."""
    subprocess.Popen(
        ["rm", "-rf", "--", str(folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _delete(folder: Path) -> None:
    subprocess.run(["rm", "-rf", "--", str(folder)], check=False)  # twice rmtree's speed
    shutil.rmtree(folder, ignore_errors=True)


def _common_git_dir(worktree: Path) -> Path | None:
    """The repo's .git folder, read from the worktree's `.git` file (`gitdir: …/worktrees/X`)."""
    try:
        text = (worktree / ".git").read_text()
    except OSError:
        return None
    gitdir = Path(text.removeprefix("gitdir:").strip())
    return gitdir.parent.parent if gitdir.parent.name == "worktrees" else None


def new_worktree_path(paths: WatchkeeperPaths, version: dict[str, Any], keep: bool) -> Path:
    folder = reproduction_root(paths)
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
    token = secrets.token_hex(3)
    tail = f"{version['model']}-v{version['version']}-{token}"
    if keep:
        return folder / f"kept-{tail}"
    return folder / f"{_owned('run')}-{tail}"


def materialise(
    db: Database,
    version: dict[str, Any],
    paths: WatchkeeperPaths,
    *,
    allow_missing_data: bool = False,
    keep: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Materialised:
    """Lay out a version's code (commit + kept diff) and data in a new temporary worktree.

    Checks first, changes nothing on failure: the commit must be in the repo, a dirty
    version's diff must be kept, and every data file kept (unless `allow_missing_data`, which
    takes those files from the repo as they are now). The user's working tree is not touched.
    """
    repo = Path(version["repo_path"])
    sha = check_commit(repo, version)
    store = ArtifactStore(paths.artifacts, StatCache.open(paths))
    _fetch_shared_blobs(db, store, version)
    diff_blobs = blobs_of_version(db, int(version["id"]), DIFF)
    if version.get("dirty") and not all(store.has(d) for d in diff_blobs.values()):
        diff_blobs = {}
    if version.get("dirty") and not diff_blobs:
        raise WatchkeeperError(
            f"{label(version)} was trained with uncommitted changes that were not kept (it "
            "predates the kept diffs, or its blob was removed); it cannot be reproduced"
        )
    plan = plan_data(db, store, version)
    if plan.missing and not allow_missing_data:
        raise missing_data_error(version, plan.missing)
    remove_abandoned_worktrees(paths)
    _retire_quietly(db, vanished_worktrees(db, paths))
    worktree = new_worktree_path(paths, version, keep)
    staging = new_staging_path(paths)
    done = Materialised(worktree, data_deps=sorted(plan.kinds))
    # git checks the code out while the data is restored beside it; the data moves in after.
    if _claim_parked(repo, worktree):  # its files rewritten only where the commit differs
        checkout = GitInBackground(worktree, "checkout", "--detach", "--force", "--quiet", sha)
    else:
        checkout = GitInBackground(
            repo, "worktree", "add", "--detach", "--quiet", str(worktree), sha
        )
    try:
        try:
            written = _restore_data(store, plan, staging, done, on_progress, checkout.check)
        except BaseException:
            if checkout.process.returncode is None:  # not yet waited for (a failure says so)
                checkout.process.communicate()  # its worktree is removed below
            raise
        checkout.wait()
        apply_code_diff(store, diff_blobs, worktree)
        written.update(_move_data_in(staging, worktree, plan))
        # The blobs hashed here vouch for themselves from now on, by their stat.
        store.remember_verified()
        # Each restored file is a checked copy: the fingerprint of the training that follows
        # finds its digest by stat instead of reading it again.
        store.hash_cache.remember_written_digests(
            [
                (key, bytes.fromhex(plan.restore[name].removeprefix(DIGEST_PREFIX)))
                for name, key in written.items()
            ]
        )
        for name in plan.missing:
            source = repo / name
            if source.is_file():
                shutil.copyfile(source, _clear(worktree / name))
            done.current_data.append(name)
    except BaseException:
        remove_worktree(worktree)
        _delete(staging)
        raise
    shutil.rmtree(staging, ignore_errors=True)  # only the folders the data moved out of
    return done


def new_staging_path(paths: WatchkeeperPaths) -> Path:
    """A folder beside the worktrees to restore data into while git checks the code out
    (removed with abandoned worktrees when its process is gone)."""
    token = secrets.token_hex(3)
    return reproduction_root(paths) / f"{_owned('run')}-data-{token}"


def _restore_data(
    store: ArtifactStore,
    plan: DataPlan,
    staging: Path,
    done: Materialised,
    on_progress: Callable[[int, int], None] | None,
    check: Callable[[], None],
) -> dict[str, StatKey]:
    """Restore each kept data file of `plan` under `staging` (at its repo-relative path),
    checked; the stat of each file written. `check` runs between files (it raises to stop)."""
    for dep, kind in plan.kinds.items():
        if kind == "folder":
            (staging / dep).mkdir(parents=True, exist_ok=True)
    restore = plan.restore
    total = sum(plan.blobs[digest].st_size for digest in restore.values())
    vouched = store.vouched_blobs(plan.blobs)
    written: dict[str, StatKey] = {}
    made: set[str] = set()
    base = str(staging)

    def restore_batch(names: list[str]) -> list[str]:
        for name in names:
            digest = restore[name]
            target = f"{base}/{name}"  # strings, not Paths: thousands of files
            folder = os.path.dirname(target)
            if folder not in made:  # staging starts empty: nothing to clear in the target's place
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            info = store.restore(digest, target, name, vouched=vouched.get(digest))
            written[name] = stat_key(info)
        return names

    names = list(restore)
    batches = [
        names[start : start + RESTORE_BATCH] for start in range(0, len(names), RESTORE_BATCH)
    ]
    with ThreadPoolExecutor(max_workers=RESTORE_WORKERS) as pool:
        try:
            for batch in pool.map(restore_batch, batches):
                done.restored_files += len(batch)
                done.restored_bytes += sum(plan.blobs[restore[name]].st_size for name in batch)
                if on_progress is not None:
                    on_progress(done.restored_bytes, total)
                check()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return written


def _move_data_in(staging: Path, worktree: Path, plan: DataPlan) -> dict[str, StatKey]:
    """Move each data dep restored under `staging` to its place in the checked-out worktree:
    the whole dep at once where the checkout has nothing there, else file by file over what
    it has (a tracked file of the same name). The new stat of each file moved by itself."""
    moved: dict[str, StatKey] = {}
    for dep in sorted(plan.kinds, key=lambda dep: PurePosixPath(dep).parts):
        source, target = staging / dep, worktree / dep
        if not os.path.lexists(source):
            continue  # moved in with a dep that holds it, or nothing of it was kept
        if not os.path.lexists(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(source, target)  # the files of a folder moved keep their stat
            if dep in plan.restore:
                moved[dep] = stat_key(os.stat(target))
            continue
        files = (
            [source]
            if not source.is_dir()
            else sorted(
                Path(folder, name) for folder, _, names in os.walk(source) for name in names
            )
        )
        for file in files:
            relative = file.relative_to(staging).as_posix()
            destination = worktree / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, destination)
            if relative in plan.restore:
                moved[relative] = stat_key(os.stat(destination))
    return moved


def _fetch_shared_blobs(db: Database, store: ArtifactStore, version: dict[str, Any]) -> None:
    """Bring a version's kept diff and data the local store lacks from the shared store (a
    teammate's version); what the shared store lacks is reported by the checks that follow."""
    from agent.share.blob_store import fetch_blobs, version_blobs

    wanted = [blob for blob in version_blobs(db, version) if blob.kind in (DATA, DIFF)]
    fetch_blobs(db, store, version, wanted)


def _clear(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    return target


def compare(
    original: dict[str, Any], result: TrainResult, new: dict[str, Any], tolerance: float
) -> Comparison:
    """Compare a reproduction with its original: status, code, data, metrics, artifacts."""
    rows: list[tuple[str, str, str, str]] = []
    exact = True
    close = True

    def row(what: str, a: Any, b: Any, mark: str) -> None:
        rows.append((what, _text(a), _text(b), mark))

    if result.status != "succeeded":
        row("status", original["status"], result.status, "differs")
        return Comparison(DIFFERS, rows)
    same_code = (original["commit_sha"], original["diff_hash"]) == (
        new["commit_sha"],
        new["diff_hash"],
    )
    row("code", _code(original), _code(new), "same" if same_code else "differs")
    old_data = {dep: r["fingerprint"] for dep, r in (original.get("data") or {}).items()}
    new_data = {dep: r["fingerprint"] for dep, r in (new.get("data") or {}).items()}
    for dep in sorted(set(old_data) | set(new_data)):
        same = old_data.get(dep) == new_data.get(dep)
        row(f"data {dep}", old_data.get(dep), new_data.get(dep), "same" if same else "differs")
        close = close and same
    close = close and same_code
    old_metrics = original.get("metrics") or {}
    for key in sorted(set(old_metrics) | set(result.metrics)):
        a, b = old_metrics.get(key), result.metrics.get(key)
        if a == b:
            row(f"metric {key}", a, b, "same")
        elif (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
        ):
            row(f"metric {key}", a, b, "within tolerance")
            exact = False
        else:
            row(f"metric {key}", a, b, "differs")
            close = False
    old_artifacts = original.get("artifacts") or {}
    for path in sorted(set(old_artifacts) | set(result.artifacts)):
        same = old_artifacts.get(path) == result.artifacts.get(path)
        row(
            f"artifact {path}",
            old_artifacts.get(path),
            result.artifacts.get(path),
            "identical" if same else "differs",
        )
        exact = exact and same
    if close and exact:
        return Comparison(EXACTLY, rows)
    return Comparison(WITHIN_TOLERANCE if close else DIFFERS, rows)


def _code(version: dict[str, Any]) -> str:
    sha = str(version.get("commit_sha") or "")[:12]
    return sha + (f" + {str(version['diff_hash'])[:19]}" if version.get("diff_hash") else "")


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and value.startswith("blake3:"):
        return value[:19]
    if isinstance(value, str) and len(value) == 64:  # a data fingerprint
        return value[:12]
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def reproduce(
    db: Database,
    version: dict[str, Any],
    *,
    paths: WatchkeeperPaths | None = None,
    remote: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    allow_missing_data: bool = False,
    no_run: bool = False,
    on_restore: Callable[[int, int], None] | None = None,
    **train_callbacks: Any,
) -> Reproduction:
    """Rebuild `version` in a temporary worktree, train it, record and compare the result.

    With `no_run` the worktree is only laid out and kept. Otherwise the new version is
    recorded as a reproduction of `version`, with the verdict, and the worktree removed.
    """
    paths = paths or WatchkeeperPaths.from_environment()
    done = materialise(
        db,
        version,
        paths,
        allow_missing_data=allow_missing_data,
        keep=no_run,
        on_progress=on_restore,
    )
    reproduction = Reproduction(done)
    if no_run:
        return reproduction
    try:  # the new version's diff hash is compared with the original's afterwards
        result = train(
            done.worktree,
            str(version["model"]),
            params=dict(version.get("params") or {}),
            remote=remote,
            allow_concurrent=True,
            db=db,
            paths=paths,
            reproduction_of=int(version["id"]),
            recorded_repo=Path(version["repo_path"]),
            run_in_root=True,
            **train_callbacks,
        )
    finally:
        if not park_worktree(done.worktree, done.data_deps):
            remove_worktree(done.worktree, in_background=True)
        _retire_quietly(db, [done.worktree])
    code_link = paths.runs / result.run_id / "code"
    if code_link.is_symlink():  # it led to the worktree, now removed
        code_link.unlink()
    new = _version_of_run(db, result.run_id)
    comparison = compare(version, result, new, tolerance)
    record = {
        "of": label(version),
        "verdict": comparison.verdict,
        "tolerance": tolerance,
        "current_data": done.current_data,
    }
    with write_transaction(db):
        update_row(db, "model_versions", "id", new["id"], {"reproduction": record})
    reproduction.result = result
    reproduction.comparison = comparison
    return reproduction


def vanished_worktrees(db: Database, paths: WatchkeeperPaths) -> list[Path]:
    """Worktrees of past reproductions (killed ones too) that are gone but still have
    snapshots standing in the ledger."""
    root = str(reproduction_root(paths).resolve()) + "/"
    worktrees = {
        Path(root, str(path)[len(root) :].split("/", 1)[0])
        for (path,) in db.execute(
            "SELECT DISTINCT d.path FROM data_sources d JOIN data_snapshots s "
            "ON s.source_id = d.id WHERE s.deleted_at IS NULL AND substr(d.path, 1, ?) = ?",
            [len(root), root],
        )
    }
    return sorted(worktree for worktree in worktrees if not worktree.exists())


def _retire_quietly(db: Database, worktrees: list[Path]) -> None:
    """Retire the snapshots of these gone worktrees; a failure (a full disk, say) only leaves
    them standing, so it is logged, not raised over what the caller is doing."""
    if not worktrees:
        return
    try:
        with write_transaction(db):
            for worktree in worktrees:
                retire_worktree_snapshots(db, worktree)
    except (WatchkeeperError, sqlite3.Error) as error:
        log.warning("the data snapshots of %s stay listed: %s", worktrees[0], error)


def retire_worktree_snapshots(db: Database, worktree: Path) -> int:
    """Mark deleted the snapshots a reproduction took of the data in its temporary worktree
    (inside a write transaction); returns how many.

    The worktree is gone afterwards, so these snapshots must not stand as the newest state of
    a data source: gc would keep their content for ever and the Data page would list folders
    that no longer exist. Their rows stay, for the reproduction version names them, and the
    reproduction's own data blobs stay listed on it (`version_blobs`).
    """
    root = str(worktree.resolve())
    cursor = db.execute(
        "UPDATE data_snapshots SET deleted_at = ? WHERE deleted_at IS NULL AND source_id IN "
        "(SELECT id FROM data_sources WHERE path = ? OR substr(path, 1, ?) = ?)",
        [time.time(), root, len(root) + 1, root + "/"],
    )
    return cursor.rowcount


def _version_of_run(db: Database, run_id: str) -> dict[str, Any]:
    from agent.ledger.queries import VERSION_SELECT, decode_row

    row = next(iter(db.query(VERSION_SELECT + " WHERE v.run_id = ?", [run_id])))
    return decode_row(row)
