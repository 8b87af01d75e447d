"""The stable JSON shapes of versions, runs, status and version diffs, for the CLI and socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger.queries import current_version_of, is_builtin_repo, versions
from agent.project.git import diff_stat
from agent.staleness import (
    Finding,
    RepoScan,
    Staleness,
    StalenessChecker,
    Verdict,
    version_state,
)


def version_json(row: dict[str, Any], staleness: Staleness | None) -> dict[str, Any]:
    """One model version as `models list --json` prints it (see docs/ledger.md).

    `state` is the version's own state: `failed`, `cancelled`… for versions that did not
    succeed, else `fresh`, `stale` or `built-in`.
    """
    state = version_state(row, staleness)
    return {
        "model": row["model"],
        "repo": row["repo_path"],
        "version": row["version"],
        "status": row["status"],
        "state": state,
        "commit": row["commit_sha"],
        "dirty": bool(row["dirty"]),
        "diff_hash": row["diff_hash"],
        "train_command": row["train_command"],
        "data": {dep: record["fingerprint"] for dep, record in (row["data"] or {}).items()},
        "dvc_md5": {
            dep: record["dvc_md5"]
            for dep, record in (row["data"] or {}).items()
            if record.get("dvc_md5")
        },
        "code": row["code"] or {},
        "params": row["params"] or {},
        "metrics": row["metrics"] or {},
        "metrics_extra": row.get("metrics_extra"),
        "mlflow": row.get("mlflow"),
        "artifacts": row["artifacts"] or {},
        "executor": row["executor"],
        "host": row["host"],
        "run_id": row["run_id"],
        "experiment": bool(row.get("experiment")),
        "deleted": row.get("deleted_at") is not None,
        "sweep_id": row.get("sweep_id"),
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "exit_code": row["exit_code"],
        "stale": state == "stale",
        "stale_reasons": staleness.messages if staleness and state == "stale" else [],
        "builtin": staleness.builtin if staleness else is_builtin_repo(row["repo_path"]),
        "id": row.get("global_id"),
        "author": row.get("author"),
        "pulled": row.get("pulled_at") is not None,
    }


def list_versions(
    db: Database, checker: StalenessChecker, *, all_versions: bool = False
) -> list[dict[str, Any]]:
    """Every model's newest version (or every version), each with its own state.

    Only succeeded versions are compared with the repo; the others keep their run status.
    Each row also carries `model_state`, the model's verdict (the one `status` gives).
    """
    report = []
    verdicts: dict[tuple[str, str], str] = {}
    queued = {str(row[0]) for row in db.execute("SELECT id FROM runs WHERE state = 'queued'")}
    for row in versions(db, latest_only=not all_versions, include_deleted=all_versions):
        staleness = checker.check(row) if row["status"] == "succeeded" else None
        entry = version_json(row, staleness)
        if row["status"] == "running" and row["run_id"] in queued:  # a sweep point waiting
            entry["status"] = entry["state"] = "queued"
        key = (row["repo_path"], row["model"])
        if key not in verdicts:
            verdicts[key] = _model_state(db, checker, row)
        entry["model_state"] = verdicts[key]
        report.append(entry)
    return report


def _model_state(db: Database, checker: StalenessChecker, row: dict[str, Any]) -> str:
    """The model's verdict, judged (like `status`) on its current version."""
    if is_builtin_repo(row["repo_path"]):
        return Verdict.BUILTIN.value
    current = current_version_of(db, int(row["repo_id"]), row["model"])
    if current is None:
        return Verdict.NEVER_TRAINED.value
    return Verdict.STALE.value if checker.check(current).stale else Verdict.FRESH.value


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
        "sweep_id": row.get("sweep_id"),
    }


def finding_json(finding: Finding) -> dict[str, Any]:
    """One model's entry in `status --json`."""
    return {
        "model": finding.model,
        "version": finding.version,
        "commit": finding.commit,
        "state": finding.verdict.value,
        "stale": finding.stale,
        "on_stale": finding.on_stale,
        "latest_status": finding.latest_status,
        "trained_at": finding.trained_at,
        "error": finding.error,
        "reasons": [reason.as_json() for reason in finding.reasons],
        "stale_reasons": finding.messages if finding.stale else [],
    }


def status_report(scans: list[RepoScan], builtin: list[Finding]) -> dict[str, Any]:
    """Fresh, stale, never trained or error for every model the scans checked.

    Repos whose spec cannot be read are listed with an `error`; a model whose verdict could
    not be reached has its own `error` beside the other models' verdicts. Registered repos
    without a watchkeeper.toml (watched for coding time only) or whose folder is gone are
    `skipped`. Built-in models (kept current by the agent's refit, never stale) are listed
    under `builtin`.
    """
    repos: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    counts = {"fresh": 0, "stale": 0, "never_trained": 0, "errors": 0}
    for scan in scans:
        if scan.skipped:
            skipped.append({"path": str(scan.root), "reason": scan.skipped})
            continue
        entry: dict[str, Any] = {"path": str(scan.root), "models": [], "error": scan.error}
        if scan.error:
            counts["errors"] += 1
        for finding in scan.findings:
            entry["models"].append(finding_json(finding))
            key = {
                Verdict.FRESH: "fresh",
                Verdict.STALE: "stale",
                Verdict.NEVER_TRAINED: "never_trained",
                Verdict.ERROR: "errors",
            }.get(finding.verdict)
            if key:
                counts[key] += 1
        repos.append(entry)
    return {
        "repos": repos,
        "skipped": skipped,
        "builtin": [_builtin_json(finding) for finding in builtin],
        **counts,
    }


def _builtin_json(finding: Finding) -> dict[str, Any]:
    return {
        "model": finding.model,
        "repo": finding.repo,
        "state": Verdict.BUILTIN.value,
        "version": finding.version,
        "refitted_at": finding.trained_at,
    }


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
