"""Fixtures for the agent tests: git repos, an in-process agent, and an unprivileged runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.paths import WatchkeeperPaths

REPO_ROOT = Path(__file__).resolve().parents[3]
NOBODY_UID = 65534


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity and return its stdout."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Dev",
        "GIT_AUTHOR_EMAIL": "dev@example.com",
        "GIT_COMMITTER_NAME": "Dev",
        "GIT_COMMITTER_EMAIL": "dev@example.com",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A git repo with one commit holding `files`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    for name, text in (files or {"README.md": "hello\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def paths(watchkeeper_home: Path) -> WatchkeeperPaths:
    return WatchkeeperPaths.from_environment().ensure()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder other users can traverse (pytest's own is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="wk-shared-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def can_switch_user() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def run_as_nobody(
    code: str, *, timeout: float = 60.0, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess[str]:
    """Run Python code as uid nobody (setpriv), with the repo importable."""
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY_UID}",
            f"--regid={NOBODY_UID}",
            "--clear-groups",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "HOME": "/tmp"},
    )
