"""The git state a model is built from: repo root, HEAD, the uncommitted diff and dep hashes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import WatchkeeperError


class GitError(WatchkeeperError):
    """A git command failed; the message holds the command and git's own words."""


def git(
    root: Path,
    *args: str,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> bytes:
    """Run `git -C root ARGS` and return its stdout (raises GitError on failure when check)."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(root), *args],
            input=stdin,
            capture_output=True,
            env=_git_environment(env),
            check=False,
        )
    except FileNotFoundError as error:
        raise GitError(GIT_MISSING) from error
    if check and completed.returncode != 0:
        raise _failed(root, args, completed.stderr)
    return completed.stdout


GIT_MISSING = "git is not installed or not on PATH; install git and try again"


def _git_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}


def _failed(root: Path, args: Sequence[str], stderr: bytes) -> GitError:
    message = stderr.decode(errors="replace").strip()
    return GitError(f"`git {' '.join(args)}` failed in {root}: {message}")


class GitInBackground:
    """`git -C root ARGS` started now, as `git` runs it, to be waited for later."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.args = args
        try:
            self.process = subprocess.Popen(
                ["git", "-C", str(root), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=_git_environment(),
            )
        except FileNotFoundError as error:
            raise GitError(GIT_MISSING) from error

    def check(self) -> None:
        """GitError as soon as the command has failed (nothing while it runs)."""
        if self.process.poll() not in (None, 0):
            self.wait()

    def wait(self) -> None:
        """Wait for the command; GitError when it failed. Safe to call again."""
        _, errors = self.process.communicate()
        if self.process.returncode != 0:
            raise _failed(self.root, self.args, errors or b"")


def repo_root(path: Path) -> Path:
    """The top folder of the git repo holding `path`."""
    folder = path if path.is_dir() else path.parent
    if not folder.exists():
        raise WatchkeeperError(f"{path} does not exist")
    completed = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
        capture_output=True,
        check=False,
    )
    if completed.returncode != 0:
        raise WatchkeeperError(
            f"{path} is not inside a git repository; run `git init` there (and commit your code)"
        )
    return Path(completed.stdout.decode().strip()).resolve()


def head_commit(root: Path) -> str:
    """The sha of HEAD, or an error saying the repo needs a first commit."""
    output = git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    sha = output.decode().strip()
    if not sha:
        raise WatchkeeperError(
            f"{root} has no commit yet; commit your code first so a version can name its commit"
        )
    return sha


def untracked_files(root: Path) -> list[str]:
    """Files git does not track and does not ignore, relative to the root."""
    output = git(root, "ls-files", "--others", "--exclude-standard", "-z")
    return [name for name in output.decode().split("\0") if name]


@dataclass(frozen=True)
class WorkingTree:
    """HEAD plus what is not committed: the binary diff against HEAD and the untracked files."""

    commit: str
    patch: bytes
    untracked: tuple[str, ...]
    diff_hash: str | None

    @property
    def dirty(self) -> bool:
        return self.diff_hash is not None


def working_tree(root: Path) -> WorkingTree:
    """Read HEAD, `git diff HEAD --binary` and the untracked files; hash them when dirty."""
    commit = head_commit(root)
    patch = git(root, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff")
    untracked = tuple(untracked_files(root))
    if not patch and not untracked:
        return WorkingTree(commit, patch, untracked, None)
    hasher = hashlib.sha256(patch)
    for name in sorted(untracked):
        hasher.update(b"\0untracked\0" + name.encode() + b"\0")
        file_path = root / name
        if file_path.is_symlink():
            hasher.update(os.readlink(file_path).encode())
        elif file_path.is_file():
            hasher.update(file_path.read_bytes())
    return WorkingTree(commit, patch, untracked, "sha256:" + hasher.hexdigest())


def is_ignored(root: Path, path: str) -> bool:
    """Whether git ignores `path` (relative to the root)."""
    completed = subprocess.run(
        ["git", "-C", str(root), "check-ignore", "--quiet", "--no-index", "--", path],
        capture_output=True,
        check=False,
    )
    return completed.returncode == 0


def _tree_spec(tree: str, path: str) -> str:
    return f"{tree}:" if path in (".", "") else f"{tree}:{path}"


def _object_ids(root: Path, tree: str, paths: Iterable[str]) -> dict[str, str | None]:
    paths = list(paths)
    if not paths:
        return {}
    request = "".join(_tree_spec(tree, path) + "\n" for path in paths).encode()
    output = git(root, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin=request)
    result: dict[str, str | None] = {}
    for path, line in zip(paths, output.decode().splitlines(), strict=True):
        result[path] = None if line.endswith("missing") else line.split()[0]
    return result


def head_hashes(
    root: Path, paths: Iterable[str], commit: str | None = None
) -> dict[str, str | None]:
    """The git blob or tree id of each path at HEAD, or at `commit` (None where it lacks it)."""
    return _object_ids(root, commit or head_commit(root), paths)


def working_hashes(root: Path, paths: Iterable[str]) -> dict[str, str | None]:
    """The git blob or tree id each path would have if the working tree were committed now.

    A copy of the index gets `git add -A` for just these paths (so git's stat cache keeps this
    fast), then `git write-tree`; untracked files that git does not ignore are included, ignored
    ones are not. None means the path is gone.
    """
    paths = list(paths)
    if not paths:
        return {}
    head_commit(root)
    index = Path(git(root, "rev-parse", "--git-path", "index").decode().strip())
    if not index.is_absolute():
        index = root / index
    with tempfile.TemporaryDirectory(prefix="wk-index-") as scratch:
        scratch_index = Path(scratch) / "index"
        env = {"GIT_INDEX_FILE": str(scratch_index)}
        if index.exists():
            shutil.copyfile(index, scratch_index)
        else:
            git(root, "read-tree", "HEAD", env=env)
        pathspecs = [f":(literal){path}" if path != "." else "." for path in paths]
        git(root, "add", "--all", "--ignore-errors", "--", *pathspecs, env=env, check=False)
        tree = git(root, "write-tree", env=env).decode().strip()
    return _object_ids(root, tree, paths)


def changed_files(root: Path, old_id: str, new_id: str, prefix: str) -> list[tuple[str, str]]:
    """(status, path) of files differing between two tree ids; [] when either is unknown."""
    completed = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "diff-tree",
            "-r",
            "--no-renames",
            "--name-status",
            old_id,
            new_id,
        ],
        capture_output=True,
        check=False,
    )
    if completed.returncode != 0:
        return []
    words = {"A": "added", "D": "deleted", "M": "modified", "T": "type changed"}
    changes: list[tuple[str, str]] = []
    for line in completed.stdout.decode(errors="replace").splitlines():
        status, _, name = line.partition("\t")
        full = name if prefix in (".", "") else f"{prefix}/{name}"
        changes.append((words.get(status[:1], status), full))
    return changes


def object_type(root: Path, object_id: str) -> str | None:
    """'blob', 'tree' or None when the object is not in the repo (any more)."""
    completed = subprocess.run(
        ["git", "-C", str(root), "cat-file", "-t", object_id], capture_output=True, check=False
    )
    return completed.stdout.decode().strip() or None if completed.returncode == 0 else None


def diff_stat(root: Path, old_commit: str, new_commit: str) -> str:
    """`git diff --stat` between two commits (empty when they are equal)."""
    if old_commit == new_commit:
        return ""
    return git(root, "diff", "--stat", "--no-color", old_commit, new_commit).decode(
        errors="replace"
    )
