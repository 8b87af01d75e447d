"""The latest verdict on each model, kept in the ledger for views that only read it (app, tray)."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from agent.ledger import write_transaction
from agent.staleness import Finding, RepoScan


def record_scans(db: Database, scans: list[RepoScan], *, complete: bool) -> None:
    """Store the findings of registered repos; `complete` scans also drop models gone since.

    A scan is complete when it covered every declared model of its repo; a scan limited to
    some models only updates theirs. Repos that are not registered (a CI clone) and repos
    whose spec could not be read are left as they were.

    Example::

        record_scans(db, scan_repos(db, registered_roots(db)), complete=True)
    """
    with write_transaction(db):
        for scan in scans:
            if scan.repo_id is None or scan.error:
                continue
            if complete or scan.skipped:
                kept = [finding.model for finding in scan.findings]
                db.execute(
                    "DELETE FROM model_verdicts WHERE repo = ? AND model NOT IN "
                    f"({', '.join('?' for _ in kept)})",
                    [str(scan.root), *kept],
                )
            for finding in scan.findings:
                _upsert(db, finding)


def record_findings(db: Database, findings: list[Finding]) -> None:
    """Store some models' findings (for example those a data change touched)."""
    with write_transaction(db):
        for finding in findings:
            _upsert(db, finding)


def _upsert(db: Database, finding: Finding) -> None:
    db.execute(
        "INSERT INTO model_verdicts (repo, model, verdict, version, version_id, latest_status,"
        " reasons, error, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (repo, model) DO UPDATE SET verdict = excluded.verdict,"
        " version = excluded.version, version_id = excluded.version_id,"
        " latest_status = excluded.latest_status, reasons = excluded.reasons,"
        " error = excluded.error, checked_at = excluded.checked_at"
        " WHERE excluded.checked_at >= model_verdicts.checked_at",
        [
            finding.repo,
            finding.model,
            finding.verdict.value,
            finding.version,
            finding.version_id,
            finding.latest_status,
            json.dumps([reason.as_json() for reason in finding.reasons]),
            finding.error,
            finding.checked_at,
        ],
    )


def stored_verdicts(db: Database) -> list[dict[str, Any]]:
    """Every stored verdict, ordered by repo and model, with its reasons decoded."""
    rows = []
    for row in db.query("SELECT * FROM model_verdicts ORDER BY repo, model"):
        rows.append({**row, "reasons": json.loads(row["reasons"] or "[]")})
    return rows
