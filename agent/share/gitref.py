"""The shared-ledger ref in git: fetch it, read its records, commit new ones, push it.

Everything goes through git plumbing on refs under `refs/watchkeeper/`, so the user's branches,
index and working tree are never touched: `fetch` and `push` name only the ledger ref,
`fast-import` writes the blobs, tree and commit in one process, and `update-ref` moves local refs.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import WatchkeeperError
from agent.project.git import GitError, git

LEDGER_REF = "refs/watchkeeper/ledger"
"""The ref every teammate's records meet on, on the shared remote (and its local copy)."""
OUTGOING_REF = "refs/watchkeeper/outgoing"
DEFAULT_REMOTE = "origin"
FALLBACK_IDENTITY = ("watchkeeper", "watchkeeper@localhost")

_RACE_WORDS = (
    "fetch first",
    "non-fast-forward",
    "stale info",
    "cannot lock ref",
    "failed to update ref",
    "but expected",
    "incorrect old value",
)
_PERMISSION_WORDS = (
    "permission denied",
    "insufficient permission",
    "unable to create temporary object directory",
    "unpacker error",
    "unable to write",
    "read-only",
    "hook declined",
    "protected",
)


class ShareError(WatchkeeperError):
    """Sharing could not go ahead: no remote, a remote that refuses us, a damaged ref."""


def tracking_ref(remote_name: str) -> str:
    """The local copy of a remote's ledger ref, as last fetched.

    >>> tracking_ref("origin")
    'refs/watchkeeper/remotes/origin/ledger'
    """
    return f"refs/watchkeeper/remotes/{remote_name}/ledger"


@dataclass(frozen=True)
class RepoIdentity:
    """What makes two clones the same repo: the shared remote's URL and the root commit.

    `root_commit` is None in a shallow clone, which cannot see its root.
    """

    remote_url: str
    root_commit: str | None

    def as_json(self) -> dict[str, str | None]:
        return {"remote_url": self.remote_url, "root_commit": self.root_commit}


_URLS: dict[tuple[Path, str], str] = {}


def remote_url(root: Path, remote_name: str) -> str:
    """The URL of the named git remote, or an error saying how to add one."""
    if (root, remote_name) in _URLS:
        return _URLS[(root, remote_name)]
    output = git(root, "remote", "get-url", remote_name, check=False).decode().strip()
    if output:
        _URLS[(root, remote_name)] = output
        return output
    known = git(root, "remote", check=False).decode().split()
    if known:
        raise ShareError(
            f"{root} has no git remote named {remote_name!r} (its remotes: {', '.join(known)}); "
            f"choose one with --remote-name {known[0]}"
        )
    raise ShareError(
        f"{root} has no git remote, so there is nowhere to share the ledger; add the team's "
        "repository with `git remote add origin URL` and try again"
    )


def is_shallow(root: Path) -> bool:
    return _repository_facts(root)[0]


_FACTS: dict[Path, tuple[bool, str]] = {}


def _repository_facts(root: Path) -> tuple[bool, str]:
    """Whether the clone is shallow, and its object hash (sha1 or sha256), asked once."""
    if root not in _FACTS:
        lines = (
            git(root, "rev-parse", "--is-shallow-repository", "--show-object-format")
            .decode()
            .split()
        )
        shallow = bool(lines) and lines[0] == "true"
        _FACTS[root] = (shallow, "sha256" if lines[1:] == ["sha256"] else "sha1")
    return _FACTS[root]


def repo_identity(root: Path, remote_name: str) -> RepoIdentity:
    """The remote URL and root commit (the oldest of several roots, by sha) of the repo."""
    url = remote_url(root, remote_name)
    if is_shallow(root):
        return RepoIdentity(url, None)
    roots = git(root, "rev-list", "--max-parents=0", "HEAD", check=False).decode().split()
    return RepoIdentity(url, sorted(roots)[0] if roots else None)


def git_identity(root: Path) -> tuple[str, str]:
    """The user's git name and email in this repo (a neutral identity when none is set)."""
    output = git(root, "config", "--get-regexp", r"^user\.(name|email)$", check=False).decode()
    found = dict(line.partition(" ")[::2] for line in output.splitlines())
    return (
        found.get("user.name", "").strip() or FALLBACK_IDENTITY[0],
        found.get("user.email", "").strip() or FALLBACK_IDENTITY[1],
    )


def blob_id(root: Path, content: bytes) -> str:
    """The git object id `content` gets as a blob in this repo (sha1 or sha256 repos)."""
    algorithm = _repository_facts(root)[1]
    hasher = hashlib.new(algorithm)
    hasher.update(b"blob %d\0" % len(content))
    hasher.update(content)
    return hasher.hexdigest()


REPOSITORY_UMASK = 0o022
"""The umask of git commands that write objects and refs: a bare repo on a shared disk must stay
readable to the team, whatever private umask the command runs under (the remote's
`core.sharedRepository` still decides its own modes)."""


def git_writing(root: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    """`git -C root ARGS` with the repository umask; raises GitError on failure when check."""
    completed = subprocess.run(
        ["git", "-C", str(root), *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        umask=REPOSITORY_UMASK,
        check=False,
    )
    if check and completed.returncode != 0:
        message = completed.stderr.decode(errors="replace").strip()
        raise GitError(f"`git {' '.join(args)}` failed in {root}: {message}")
    return completed.stdout


def _git_words(error: GitError) -> str:
    """git's own last meaningful line from a failed command's message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else str(error)


def fetch_ledger(root: Path, remote_name: str) -> str | None:
    """Fetch the remote's ledger ref into its tracking ref; its commit, or None when the
    remote has no shared ledger yet."""
    url = remote_url(root, remote_name)
    refspec = f"+{LEDGER_REF}:{tracking_ref(remote_name)}"
    try:
        git_writing(
            root, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote_name, refspec
        )
    except GitError as error:
        text = str(error).lower()
        if "couldn't find remote ref" in text:
            git(root, "update-ref", "-d", tracking_ref(remote_name), check=False)
            return None
        raise ShareError(
            f"could not fetch {LEDGER_REF} from {remote_name} ({url}): {_git_words(error)}; "
            "check that the remote is reachable and that you may read it"
        ) from error
    return ref_commit(root, tracking_ref(remote_name))


def ref_commit(root: Path, ref: str) -> str | None:
    output = git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return output.decode().strip() or None


def list_records(root: Path, commit: str | None) -> dict[str, str]:
    """Path -> blob id of every file on the ledger commit (empty for None)."""
    if commit is None:
        return {}
    output = git(root, "ls-tree", "-r", "-z", "--full-tree", commit)
    entries: dict[str, str] = {}
    for item in output.split(b"\0"):
        if not item:
            continue
        meta, _, path = item.partition(b"\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == b"blob":
            entries[path.decode(errors="replace")] = parts[2].decode()
    return entries


def read_blobs(root: Path, ids: list[str]) -> dict[str, bytes]:
    """The content of each blob, read through one `git cat-file --batch`."""
    if not ids:
        return {}
    output = git(root, "cat-file", "--batch", stdin="".join(f"{i}\n" for i in ids).encode())
    contents: dict[str, bytes] = {}
    position = 0
    for object_id in ids:
        newline = output.index(b"\n", position)
        header = output[position:newline].split()
        position = newline + 1
        if len(header) < 3:  # "<id> missing"
            continue
        size = int(header[2])
        contents[object_id] = output[position : position + size]
        position += size + 1
    return contents


def write_commit(
    root: Path,
    parent: str | None,
    files: dict[str, bytes],
    identity: tuple[str, str],
    message: str,
) -> str:
    """A commit holding `parent`'s tree plus `files` (path -> content); returns its id.

    Written by one `git fast-import` onto a scratch ref, so nothing else moves.
    """
    name, email = identity
    stream = bytearray()
    encoded_message = message.encode()
    stream += f"reset {OUTGOING_REF}\n\ncommit {OUTGOING_REF}\nmark :1\n".encode()
    stream += f"committer {_clean(name)} <{_clean(email)}> {int(time.time())} +0000\n".encode()
    stream += b"data %d\n%s\n" % (len(encoded_message), encoded_message)
    if parent is not None:
        stream += f"from {parent}\n".encode()
    else:
        stream += b"deleteall\n"
    for path, content in sorted(files.items()):
        stream += f"M 100644 inline {path}\n".encode()
        stream += b"data %d\n" % len(content)
        stream += content + b"\n"
    stream += b"get-mark :1\ndone\n"
    output = git_writing(root, "fast-import", "--quiet", "--force", "--done", stdin=bytes(stream))
    commit = output.decode().strip()
    if not commit:
        raise ShareError(f"git fast-import wrote no commit on {OUTGOING_REF} in {root}")
    return commit


def _clean(text: str) -> str:
    return re.sub(r"[<>\n]", "", text)


def push_commit(root: Path, remote_name: str, commit: str) -> bool:
    """Push `commit` to the remote's ledger ref as a fast-forward.

    True when it landed; False when someone else pushed first (fetch, merge and retry). A
    remote that refuses for any other reason raises ShareError saying why.
    """
    url = remote_url(root, remote_name)
    completed = subprocess.run(
        ["git", "-C", str(root), "push", "--porcelain", remote_name, f"{commit}:{LEDGER_REF}"],
        capture_output=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        umask=REPOSITORY_UMASK,
        check=False,
    )
    output = (completed.stdout + completed.stderr).decode(errors="replace")
    if completed.returncode == 0:
        moves = f"update {tracking_ref(remote_name)} {commit}\nupdate {LEDGER_REF} {commit}\n"
        git(root, "update-ref", "--stdin", stdin=moves.encode())
        return True
    lowered = output.lower()
    if any(word in lowered for word in _PERMISSION_WORDS):
        raise ShareError(
            f"the remote {remote_name} ({url}) refused {LEDGER_REF}: you may not write to it "
            f"({_refusal_line(output)}); ask the repository's owner for push access, or push to "
            "a remote you may write with --remote-name"
        )
    if any(word in lowered for word in _RACE_WORDS):
        return False
    raise ShareError(
        f"could not push {LEDGER_REF} to {remote_name} ({url}): {_refusal_line(output)}"
    )


def _refusal_line(output: str) -> str:
    """The line of git's push output that says why, without the progress chatter."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        lowered = line.lower()
        if line.startswith("!") or "error" in lowered or "denied" in lowered:
            return line.lstrip("!\t ").replace("\t", " ")
    return lines[-1] if lines else "git gave no reason"
