"""Test helpers: a bare git remote and people (a clone plus their own WATCHKEEPER_HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.ledger import open_ledger, write_transaction
from agent.ledger.queries import ensure_model, insert_row, next_version, register_repo
from tests.agent.runs.gitrepo import REPO_ROOT, commit_all, git, make_repo


def make_remote(folder: Path, name: str = "remote.git") -> Path:
    """A bare repo on disk whose HEAD is main."""
    bare = folder / name
    git(folder, "init", "-q", "--bare", str(bare))
    git(bare, "symbolic-ref", "HEAD", "refs/heads/main")
    return bare


@dataclass
class Person:
    """Someone with a clone of the team's repo and a ledger of their own."""

    name: str
    clone: Path
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "WATCHKEEPER_HOME": str(self.home),
            "PYTHONPATH": str(REPO_ROOT),
            **self.env,
        }

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`watchkeeper ARGS` run by this person in their clone."""
        return subprocess.run(
            [sys.executable, "-m", "agent", *args],
            cwd=self.clone,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(*args)
        assert done.returncode == 0, f"watchkeeper {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def ledger(self) -> Any:
        return open_ledger(self.home / "ledger.db")

    def add_versions(self, count: int, model: str = "churn") -> list[str]:
        """Record `count` finished versions straight in the ledger (as `train` records them)."""
        head = git(self.clone, "rev-parse", "HEAD").strip()
        db = self.ledger()
        try:
            with write_transaction(db):
                model_id = ensure_model(db, register_repo(db, self.clone), model)
                first = next_version(db, model_id)
                now = time.time()
                for offset in range(count):
                    insert_row(
                        db,
                        "model_versions",
                        {
                            "model_id": model_id,
                            "version": first + offset,
                            "status": "succeeded",
                            "commit_sha": head,
                            "dirty": 0,
                            "train_command": "python train.py",
                            "params": {"lr": 0.01, "epochs": 5},
                            "metrics": {"auc": 0.5 + offset / (2 * count)},
                            "data": {},
                            "code": {},
                            "artifacts": {"model.pkl": f"blake3:{offset:064x}"},
                            "executor": "local",
                            "started_at": now + offset,
                            "ended_at": now + offset + 0.5,
                            "exit_code": 0,
                        },
                    )
            return [
                str(row[0])
                for row in db.execute(
                    "SELECT global_id FROM model_versions WHERE model_id = ? AND version >= ?",
                    [model_id, first],
                )
            ]
        finally:
            db.close()


def person(folder: Path, name: str, remote: Path, *, first: bool = False) -> Person:
    """A person with a clone of `remote` (the first one creates the repo and pushes main)."""
    home = folder / f"home-{name}"
    if first:
        (folder / f"work-{name}").mkdir()
        clone = make_repo(folder / f"work-{name}")
        git(clone, "remote", "add", "origin", str(remote))
        git(clone, "push", "-q", "origin", "main")
    else:
        clone = folder / f"work-{name}" / "checkout"
        clone.parent.mkdir(parents=True)
        git(folder, "clone", "-q", str(remote), str(clone))
        git(clone, "config", "user.email", f"{name.lower()}@example.org")
        git(clone, "config", "user.name", name)
    if first:
        git(clone, "config", "user.email", f"{name.lower()}@example.org")
        git(clone, "config", "user.name", name)
    return Person(name, clone, home)


def remote_records(remote: Path) -> list[str]:
    """The record paths on the remote's ledger ref."""
    listing = subprocess.run(
        ["git", "-C", str(remote), "ls-tree", "-r", "--name-only", "refs/watchkeeper/ledger"],
        capture_output=True,
        text=True,
        check=False,
    )
    return sorted(line for line in listing.stdout.splitlines() if line)


__all__ = ["Person", "commit_all", "make_remote", "person", "remote_records"]
