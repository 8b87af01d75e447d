"""A version's uncommitted changes kept as blobs: stored at training, printed, applied again."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from agent.errors import WatchkeeperError
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.blobs import DIFF, VersionBlob
from agent.project.git import WorkingTree, git

TRACKED_PATCH = "tracked.patch"  # `git diff HEAD --binary`: changes to files git tracks
UNTRACKED_PATCH = "untracked.patch"  # the untracked (not ignored) files, as new-file diffs


def untracked_patch(root: Path, names: tuple[str, ...]) -> bytes:
    """The untracked files `names` as a binary patch of new files (modes and symlinks kept).

    A scratch index marks them intent-to-add, so the user's index is not touched.
    """
    if not names:
        return b""
    with tempfile.TemporaryDirectory(prefix="wk-index-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        listing = "".join(f"{name}\0" for name in names).encode()
        git(
            root,
            "add",
            "--intent-to-add",
            "--pathspec-from-file=-",
            "--pathspec-file-nul",
            stdin=listing,
            env=env,
        )
        return git(root, "diff", "--binary", "--no-color", "--no-ext-diff", env=env)


def keep_code_diff(store: ArtifactStore, root: Path, tree: WorkingTree) -> list[VersionBlob]:
    """Store the uncommitted changes of a dirty tree; the blobs to list on its version."""
    if not tree.dirty:
        return []
    parts = {TRACKED_PATCH: tree.patch, UNTRACKED_PATCH: untracked_patch(root, tree.untracked)}
    return [
        VersionBlob(DIFF, name, store.put_bytes(content))
        for name, content in parts.items()
        if content
    ]


def code_diff_text(store: ArtifactStore, diff_blobs: dict[str, str]) -> str:
    """The kept changes as one patch (tracked changes, then untracked files), for reading."""
    return "".join(
        store.read_checked(diff_blobs[name], f"the uncommitted changes ({name})").decode(
            errors="replace"
        )
        for name in (TRACKED_PATCH, UNTRACKED_PATCH)
        if name in diff_blobs
    )


def apply_code_diff(store: ArtifactStore, diff_blobs: dict[str, str], worktree: Path) -> None:
    """Apply kept changes to a fresh checkout of the version's commit.

    Tracked changes go to the index too, so that files that were staged but never committed
    are tracked again; untracked files stay untracked. `git diff HEAD` of the worktree then
    equals the version's own, and so does its diff hash.
    """
    for name, extra in ((TRACKED_PATCH, ["--index"]), (UNTRACKED_PATCH, [])):
        if name not in diff_blobs:
            continue
        patch = store.read_checked(diff_blobs[name], f"the uncommitted changes ({name})")
        completed = subprocess.run(
            ["git", "apply", "--binary", "--whitespace=nowarn", *extra, "-"],
            input=patch,
            cwd=worktree,
            capture_output=True,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
        if completed.returncode != 0:
            raise WatchkeeperError(
                f"the kept uncommitted changes ({name}) do not apply to {worktree}: "
                f"{completed.stderr.decode(errors='replace').strip()}"
            )


def code_tree(repo: Path, store: ArtifactStore, commit: str, diff_blobs: dict[str, str]) -> str:
    """The git tree id of a version's code: its commit with its kept changes applied.

    Built in a scratch index (`git apply --cached`), so no working tree is touched.
    """
    with tempfile.TemporaryDirectory(prefix="wk-index-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        git(repo, "read-tree", commit, env=env)
        for name in (TRACKED_PATCH, UNTRACKED_PATCH):
            if name in diff_blobs:
                patch = store.read_checked(diff_blobs[name], f"the uncommitted changes ({name})")
                git(repo, "apply", "--cached", "--binary", "-", stdin=patch, env=env)
        return git(repo, "write-tree", env=env).decode().strip()


def code_patch_between(
    repo: Path, store: ArtifactStore, versions: list[tuple[str, dict[str, str]]]
) -> str:
    """`git diff` from the code of one version to another's: (commit, kept diff blobs) each."""
    (old_commit, old_blobs), (new_commit, new_blobs) = versions
    old_tree = code_tree(repo, store, old_commit, old_blobs)
    new_tree = code_tree(repo, store, new_commit, new_blobs)
    return git(repo, "diff", "--no-color", "--no-ext-diff", old_tree, new_tree).decode(
        errors="replace"
    )
