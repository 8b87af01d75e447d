"""Staleness checks with drift run in a short-lived child, so scipy never stays in the agent.

Drift tests pull in scipy (about 60 MB); the agent's budget is 120 MB, so the agent judges
models in-process without drift (`findings_for(..., drift=False)`, milliseconds) and asks a
child process for the same findings with drift, which it prints as JSON and exits.
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
from agent.staleness import Finding, registered_roots, scan_repos

CHECK_TIMEOUT_SECONDS = 300


def findings_for(
    db: Database,
    paths: WatchkeeperPaths,
    roots: list[tuple[Path, int | None]],
    *,
    drift: bool,
) -> tuple[list[Finding], list[str]]:
    """Every declared model's finding in the given repos, and the repos that could not be read."""
    findings: list[Finding] = []
    problems: list[str] = []
    for scan in scan_repos(db, roots, paths, drift=drift):
        if scan.error:
            problems.append(scan.error)
        findings.extend(scan.findings)
    return findings, problems


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
) -> tuple[list[Finding], list[str]]:
    """Every registered repo's findings with drift (or one repo's), from a child Python."""
    report = _run_child(paths, ["--repo", str(repo_filter)] if repo_filter else [])
    return [Finding.from_json(item) for item in report["findings"]], report["problems"]


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
            from agent.reports import list_versions
            from agent.staleness import StalenessChecker

            report: dict[str, Any] = {"models": list_versions(db, StalenessChecker(db, paths))}
        else:
            roots = registered_roots(db)
            if args.repo is not None:
                roots = [(root, repo_id) for root, repo_id in roots if root == args.repo]
            findings, problems = findings_for(db, paths, roots, drift=True)
            report = {"findings": [f.as_json() for f in findings], "problems": problems}
    finally:
        db.close()
    json.dump(report, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
