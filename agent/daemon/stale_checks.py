"""Staleness checks from the agent: judge models, store their verdicts, reconcile their alerts.

Two speeds, one verdict. The quick check runs in the agent without drift statistics
(milliseconds: git hashes and fingerprints it already holds). When a data reason appears, the
same check with drift runs in a short-lived child (see `stalecheck`), and its findings add the
drift to the standing alerts as dated updates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from agent.daemon import stale_alerts
from agent.daemon.ports import AgentCore
from agent.errors import WatchkeeperError
from agent.ledger.queries import recorded_data_deps
from agent.staleness import Finding, RepoScan, registered_roots, scan_repos
from agent.verdicts import record_findings, record_scans

log = logging.getLogger(__name__)


class StaleChecks:
    """Runs checks on the agent's worker thread and feeds their findings to the alerts."""

    def __init__(self, core: AgentCore, on_stale: Callable[[Finding], None]) -> None:
        self.core = core
        self.on_stale = on_stale

    def check_repos(self, repo_filter: Path | None = None) -> int:
        """Judge every registered repo's models (or one repo's); returns alerts raised."""
        db = self.core.db()
        roots = registered_roots(db)
        if repo_filter is not None:
            roots = [(root, repo_id) for root, repo_id in roots if root == repo_filter]
        scans = scan_repos(db, roots, self.core.paths, drift=False)
        record_scans(db, scans, complete=True)
        for scan in scans:
            if scan.error:
                log.warning("cannot check staleness: %s", scan.error)
        return self._reconcile(_findings(scans))

    def check_dependents(self, source: Path) -> int:
        """Judge only the models with a version whose data dep is `source`."""
        db = self.core.db()
        by_repo: dict[Path, tuple[int | None, set[str]]] = {}
        for root, repo_id, model in _dependents(db, source):
            by_repo.setdefault(root, (repo_id, set()))[1].add(model)
        findings: list[Finding] = []
        for root, (repo_id, models) in by_repo.items():
            scans = scan_repos(db, [(root, repo_id)], self.core.paths, names=models, drift=False)
            findings.extend(_findings(scans))
        record_findings(db, findings)
        return self._reconcile(findings)

    def check_drift(self, repo_filter: Path | None = None) -> int:
        """The same check with drift, in a child process; adds drift to standing alerts."""
        from agent.daemon.stalecheck import check_in_child

        try:
            findings, problems = check_in_child(self.core.paths, repo_filter)
        except (WatchkeeperError, OSError, ValueError) as error:
            log.warning("%s", error)
            return 0
        for problem in problems:
            log.warning("cannot check staleness: %s", problem)
        record_findings(self.core.db(), findings)
        return self._reconcile(findings, drift_follows=False)

    def _reconcile(self, findings: list[Finding], *, drift_follows: bool = True) -> int:
        """Alerts and the `verdicts` event from findings; a data reason queues the drift check."""
        raised = stale_alerts.reconcile(self.core, findings, on_raised=self.on_stale)
        self.core.counters["alerts"] += raised
        self.core.publish("verdicts", {"models": [finding.as_json() for finding in findings]})
        stale_data = any(r.kind == "data" for f in findings if f.stale for r in f.reasons)
        if drift_follows and stale_data:
            self.core.worker.request(
                "drift",
                self.check_drift,
                delay=self.core.settings.staleness_debounce_seconds,
                max_delay=30.0,
            )
        return raised


def _findings(scans: list[RepoScan]) -> list[Finding]:
    return [finding for scan in scans for finding in scan.findings]


def _dependents(db: Database, source: Path) -> list[tuple[Path, int | None, str]]:
    """(repo, repo id, model) of every model with a version whose data dep is `source`."""
    return sorted(
        {(dep.repo, dep.repo_id, dep.model) for dep in recorded_data_deps(db) if dep.path == source}
    )
