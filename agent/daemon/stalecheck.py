"""Staleness checks run in a short-lived child, so drift statistics never stay in the agent.

Drift tests pull in scipy (about 60 MB); the agent's budget is 120 MB, so it asks a child
process, which prints one JSON object per stale model version and exits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths

CHECK_TIMEOUT_SECONDS = 300


def stale_versions(
    db: Database, paths: WatchkeeperPaths, repo_filter: Path | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every stale trained model of the registered repos, and the problems met on the way."""
    from agent.ledger.queries import list_repos
    from agent.staleness import StalenessChecker

    checker = StalenessChecker(db, paths)
    found: list[dict[str, Any]] = []
    problems: list[str] = []
    for repo in list_repos(db):
        root = Path(repo["path"])
        if repo_filter is not None and root != repo_filter:
            continue
        if not (root / "watchkeeper.toml").exists():
            continue
        try:
            project = checker.project(root)
            for model in project.models.values():
                status = checker.model_status(root, model, repo["id"])
                version = status.version
                if version is None or not status.staleness.stale:
                    continue
                found.append(
                    {
                        "repo": str(root),
                        "model": status.model,
                        "on_stale": model.on_stale,
                        "version": {
                            "id": version["id"],
                            "version": version["version"],
                            "model_id": version["model_id"],
                            "data": sorted(version.get("data") or {}),
                        },
                        "reasons": [reason.as_json() for reason in status.staleness.reasons],
                    }
                )
        except WatchkeeperError as error:
            problems.append(f"{root}: {error}")
    return found, problems


def _run_child(paths: WatchkeeperPaths, extra: list[str]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "agent.daemon.stalecheck",
        "--config-dir",
        str(paths.config_dir),
        "--data-dir",
        str(paths.data_dir),
        "--runtime-dir",
        str(paths.runtime_dir),
    ]
    completed = subprocess.run(
        [*command, *extra],
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-5:]
        raise WatchkeeperError("the staleness check failed: " + " | ".join(tail))
    report: dict[str, Any] = json.loads(completed.stdout)
    return report


def check_in_child(
    paths: WatchkeeperPaths, repo_filter: Path | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run `stale_versions` in a child Python and return its findings."""
    report = _run_child(paths, ["--repo", str(repo_filter)] if repo_filter else [])
    return report["stale"], report["problems"]


def models_in_child(paths: WatchkeeperPaths) -> list[dict[str, Any]]:
    """`models list --json` (each model's newest version with its staleness), from a child."""
    models: list[dict[str, Any]] = _run_child(paths, ["--models"])["models"]
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.daemon.stalecheck")
    parser.add_argument("--config-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--runtime-dir", type=Path, required=True)
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--models", action="store_true")
    args = parser.parse_args(argv)
    from agent.ledger import open_ledger

    paths = WatchkeeperPaths(args.config_dir, args.data_dir, args.runtime_dir)
    db = open_ledger(paths.ledger)
    try:
        if args.models:
            from agent.ledger.reports import list_versions
            from agent.staleness import StalenessChecker

            report: dict[str, Any] = {"models": list_versions(db, StalenessChecker(db, paths))}
        else:
            stale, problems = stale_versions(db, paths, args.repo)
            report = {"stale": stale, "problems": problems}
    finally:
        db.close()
    json.dump(report, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
