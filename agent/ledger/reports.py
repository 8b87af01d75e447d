"""The stable JSON shapes of versions, runs, status and version diffs, built from the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger.queries import is_builtin_repo, latest_succeeded, list_repos, versions
from agent.project.git import diff_stat
from agent.project.spec import SPEC_FILE
from agent.staleness import Staleness, StalenessChecker


def version_json(row: dict[str, Any], staleness: Staleness | None) -> dict[str, Any]:
    """One model version as `models list --json` prints it (see docs/ledger.md)."""
    return {
        "model": row["model"],
        "repo": row["repo_path"],
        "version": row["version"],
        "status": row["status"],
        "commit": row["commit_sha"],
        "dirty": bool(row["dirty"]),
        "diff_hash": row["diff_hash"],
        "train_command": row["train_command"],
        "data": {dep: record["fingerprint"] for dep, record in (row["data"] or {}).items()},
        "code": row["code"] or {},
        "params": row["params"] or {},
        "metrics": row["metrics"] or {},
        "artifacts": row["artifacts"] or {},
        "executor": row["executor"],
        "host": row["host"],
        "run_id": row["run_id"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "exit_code": row["exit_code"],
        "stale": staleness.stale if staleness else None,
        "stale_reasons": staleness.messages if staleness else [],
        "builtin": staleness.builtin if staleness else is_builtin_repo(row["repo_path"]),
    }


def list_versions(
    db: Database, checker: StalenessChecker, *, all_versions: bool = False
) -> list[dict[str, Any]]:
    """Every model's newest version (or every version), each with its staleness."""
    report = []
    for row in versions(db, latest_only=not all_versions):
        report.append(version_json(row, checker.check(row)))
    return report


def run_json(row: dict[str, Any]) -> dict[str, Any]:
    """One run as `runs list --json` prints it."""
    detail = row.get("detail") or {}
    return {
        "id": row["id"],
        "model": row.get("model"),
        "version": row.get("version"),
        "state": row["state"],
        "executor": row["executor"],
        "remote": row["remote"],
        "host": row["host"],
        "remote_job_id": row["remote_job_id"],
        "pid": row["pid"],
        "run_dir": row["run_dir"],
        "log_path": row["log_path"],
        "exit_code": row["exit_code"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "problem": detail.get("problem"),
    }


def status_report(db: Database, checker: StalenessChecker) -> dict[str, Any]:
    """Fresh or stale for every declared model of every registered repo.

    Repos whose spec cannot be read are listed with an `error`; registered repos without a
    watchkeeper.toml (watched for coding time only) or whose folder is gone are `skipped`.
    Built-in models (kept current by the agent's refit, never stale) are listed under
    `builtin` with their newest version and when it was fitted.
    """
    repos: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    builtin: list[dict[str, Any]] = []
    counts = {"fresh": 0, "stale": 0, "errors": 0}
    for repo in list_repos(db):
        if is_builtin_repo(repo["path"]):
            builtin.extend(_builtin_models(db, repo))
            continue
        root = Path(repo["path"])
        if not root.is_dir():
            skipped.append({"path": str(root), "reason": "the folder no longer exists"})
            continue
        if not (root / SPEC_FILE).exists():
            skipped.append({"path": str(root), "reason": f"no {SPEC_FILE} (watched only)"})
            continue
        entry: dict[str, Any] = {"path": str(root), "models": [], "error": None}
        try:
            project = checker.project(root)
            for model in project.models.values():
                status = checker.model_status(root, model, repo["id"])
                version = status.version
                entry["models"].append(
                    {
                        "model": model.name,
                        "version": version["version"] if version else None,
                        "commit": version["commit_sha"] if version else None,
                        "state": "stale" if status.staleness.stale else "fresh",
                        "stale": status.staleness.stale,
                        "on_stale": model.on_stale,
                        "reasons": [reason.as_json() for reason in status.staleness.reasons],
                        "stale_reasons": status.staleness.messages,
                    }
                )
                counts["stale" if status.staleness.stale else "fresh"] += 1
        except WatchkeeperError as error:
            entry["error"] = str(error)
            counts["errors"] += 1
        repos.append(entry)
    return {"repos": repos, "skipped": skipped, "builtin": builtin, **counts}


def _builtin_models(db: Database, repo: dict[str, Any]) -> list[dict[str, Any]]:
    """The built-in models of one `builtin:` repos row, each with its newest fitted version."""
    entries = []
    for (name,) in db.execute(
        "SELECT name FROM models WHERE repo_id = ? ORDER BY name", [repo["id"]]
    ).fetchall():
        version = latest_succeeded(db, int(repo["id"]), name)
        entries.append(
            {
                "model": name,
                "repo": repo["path"],
                "state": "built-in",
                "version": version["version"] if version else None,
                "refitted_at": version["ended_at"] if version else None,
                "metrics": (version["metrics"] or {}) if version else {},
            }
        )
    return entries


def version_diff(db: Database, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What differs between two versions: params, metrics, code (diff stat) and data files."""

    def pairs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Any]]:
        return {
            key: [a.get(key), b.get(key)]
            for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)
        }

    root = Path(new["repo_path"])
    code_stat = ""
    if old["commit_sha"] and new["commit_sha"] and root.is_dir():
        try:
            code_stat = diff_stat(root, old["commit_sha"], new["commit_sha"])
        except WatchkeeperError as error:
            code_stat = f"(no diff: {error})"
    return {
        "model": new["model"],
        "a": old["version"],
        "b": new["version"],
        "params": pairs(old["params"] or {}, new["params"] or {}),
        "metrics": pairs(old["metrics"] or {}, new["metrics"] or {}),
        "code": {
            "commits": [old["commit_sha"], new["commit_sha"]],
            "dirty": [bool(old["dirty"]), bool(new["dirty"])],
            "diff_hashes": [old["diff_hash"], new["diff_hash"]],
            "paths": pairs(old["code"] or {}, new["code"] or {}),
            "stat": code_stat,
        },
        "data": _data_diff(db, old["data"] or {}, new["data"] or {}),
        "artifacts": pairs(old["artifacts"] or {}, new["artifacts"] or {}),
    }


def _data_diff(
    db: Database, old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for dep in sorted(set(old) | set(new)):
        a, b = old.get(dep), new.get(dep)
        entry: dict[str, Any] = {
            "fingerprints": [a and a["fingerprint"], b and b["fingerprint"]],
            "added": [],
            "removed": [],
            "modified": [],
        }
        if a and b and a["fingerprint"] != b["fingerprint"]:
            from agent.data.snapshots import diff_fingerprints, load_snapshot

            difference = diff_fingerprints(
                load_snapshot(db, int(a["snapshot_id"])), load_snapshot(db, int(b["snapshot_id"]))
            )
            entry.update(
                added=sorted(difference.added),
                removed=sorted(difference.removed),
                modified=sorted(difference.modified),
            )
        if a is None or b is None or a["fingerprint"] != b["fingerprint"]:
            result[dep] = entry
    return result
