"""The one owner of stale and watch alerts: raised, updated and resolved from typed findings.

Rules (docs/agent.md, "Alerts"):

- one unresolved alert per model and cause, the cause being the kind of reason (data, code,
  params, command, deps, …), whichever watch or check saw the change first;
- new details of a standing cause (more files, drift computed later) are dated updates of
  that alert; its own text is never rewritten;
- an alert is resolved when its cause is gone: "v6 trained" when a newer version is fresh,
  "change reverted" when the same version matches again;
- a finding older than the alert's last change never resolves it (checks may overlap).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlite_utils import Database

from agent.daemon import alerts as alert_store
from agent.ledger import write_transaction
from agent.staleness import Finding, StaleReason, Verdict

log = logging.getLogger(__name__)

STALE_ALERT_KINDS = ("stale", "drift")
UNALERTED_REASON_KINDS = ("untrained",)


class AlertSink(Protocol):
    """What raising an alert needs of the agent: a ledger and a way to tell subscribers."""

    def db(self) -> Database: ...

    def publish(self, kind: str, payload: dict[str, Any]) -> None: ...


def reconcile(
    sink: AlertSink,
    findings: list[Finding],
    *,
    on_raised: Callable[[Finding], None] | None = None,
) -> int:
    """Bring the alerts of the findings' models in line with them; returns how many were raised.

    Only the models the findings name are touched, so a check of one data source leaves the
    alerts of other models alone.
    """
    raised = 0
    for finding in findings:
        if finding.model_id is None or finding.verdict in (Verdict.ERROR, Verdict.BUILTIN):
            continue
        causes = _causes(finding)
        for alert in _unresolved(sink.db(), finding.model_id):
            if alert["cause"] in causes and alert["version_id"] == finding.version_id:
                continue
            if (alert["updated_at"] or alert["created_at"]) > finding.checked_at:
                continue  # the alert saw a later change than this finding did
            resolution = _resolution(finding, alert)
            resolved = alert_store.resolve(sink.db(), int(alert["id"]), resolution)
            if resolved is not None:
                log.info("alert %d resolved: %s", alert["id"], resolution)
                sink.publish("alert", resolved)
        for cause, reasons in causes.items():
            if _raise_or_update(sink, finding, cause, reasons):
                raised += 1
                if on_raised is not None:
                    on_raised(finding)
    return raised


def _causes(finding: Finding) -> dict[str, list[StaleReason]]:
    causes: dict[str, list[StaleReason]] = {}
    if finding.verdict is not Verdict.STALE:
        return causes
    for reason in finding.reasons:
        if reason.kind not in UNALERTED_REASON_KINDS:
            causes.setdefault(reason.kind, []).append(reason)
    return causes


def _unresolved(db: Database, model_id: int) -> list[dict[str, Any]]:
    kinds = ", ".join("?" for _ in STALE_ALERT_KINDS)
    return list(
        db.query(
            f"SELECT * FROM alerts WHERE model_id = ? AND kind IN ({kinds})"
            " AND resolved_at IS NULL AND cause IS NOT NULL",
            [model_id, *STALE_ALERT_KINDS],
        )
    )


def _resolution(finding: Finding, alert: dict[str, Any]) -> str:
    if finding.version_id is not None and finding.version_id != alert["version_id"]:
        state = "fresh" if finding.verdict is Verdict.FRESH else "now the one judged"
        return f"v{finding.version} trained ({state})"
    if finding.verdict is Verdict.NEVER_TRAINED:
        return "the model has no successful version any more"
    return "change reverted"


def _raise_or_update(
    sink: AlertSink, finding: Finding, cause: str, reasons: list[StaleReason]
) -> bool:
    """Raise the alert of one cause, or add what is new to the one that stands; True if raised."""
    db = sink.db()
    messages = [reason.message for reason in reasons]
    drift = [line for reason in reasons for line in reason.drift]
    existing = db.execute(
        "SELECT id FROM alerts WHERE model_id = ? AND cause = ? AND resolved_at IS NULL",
        [finding.model_id, cause],
    ).fetchone()
    if existing is not None:
        _update(sink, int(existing[0]), messages, drift)
        return False
    resolved_since = db.execute(
        "SELECT 1 FROM alerts WHERE model_id = ? AND cause = ? AND resolved_at > ?",
        [finding.model_id, cause, finding.checked_at],
    ).fetchone()
    if resolved_since is not None:
        return False  # a later check already saw this cause end
    message = f"{finding.model}@{finding.version} is stale: " + "; ".join(messages)
    alert = alert_store.insert_alert(
        db,
        kind="drift" if drift else "stale",
        message=message,
        cause=cause,
        model_id=finding.model_id,
        version_id=finding.version_id,
        reasons=messages,
        versions=[
            {
                "model": finding.model,
                "version": finding.version,
                "id": finding.version_id,
                "repo": finding.repo,
                "paths": sorted({path for reason in reasons for path in reason.paths}),
            }
        ],
        drift=drift or None,
    )
    if alert is None:
        return False
    log.warning("alert %d: %s", alert["id"], message)
    sink.publish("alert", alert)
    return True


def _update(sink: AlertSink, alert_id: int, messages: list[str], drift: list[str]) -> None:
    alert = alert_store.get_alert(sink.db(), alert_id)
    known_messages = set(alert["reasons"] or [])
    known_drift = set(alert["drift"] or [])
    for update in alert["updates"]:
        known_messages.update(update["reasons"])
        known_drift.update(update["drift"] or [])
    new_messages = [message for message in messages if message not in known_messages]
    new_drift = [line for line in drift if line not in known_drift]
    if not new_messages and not new_drift:
        return
    text = "; ".join(new_messages) if new_messages else "drift: " + "; ".join(new_drift)
    updated = alert_store.add_update(
        sink.db(), alert_id, text, reasons=new_messages, drift=new_drift or None
    )
    sink.publish("alert", {**updated, "updated": True})


def watch_missing(sink: AlertSink, root: Path, kind: str) -> dict[str, Any] | None:
    """Alert once that a watched root vanished (resolved by `watch_back`)."""
    what = "repo" if kind == "repo" else "data folder"
    alert = alert_store.insert_alert(
        sink.db(),
        kind="watch",
        message=f"watched {what} {root} was deleted or renamed; watching resumes when it reappears",
        dedupe_key=f"missing:{root}:open",
        cause=f"missing:{root}",
        reasons=[f"{root} is missing"],
    )
    if alert is not None:
        sink.publish("alert", alert)
    return alert


def watch_back(sink: AlertSink, root: Path) -> None:
    """Resolve the missing-root alert of a root that came back."""
    db = sink.db()
    for (alert_id,) in db.execute(
        "SELECT id FROM alerts WHERE kind = 'watch' AND dedupe_key = ? AND resolved_at IS NULL",
        [f"missing:{root}:open"],
    ).fetchall():
        _resolve_watch_alert(sink, int(alert_id), f"{root} is back")


def watch_skipped(sink: AlertSink, source: Path, skipped: list[str]) -> dict[str, Any] | None:
    """One `watch` alert while entries of a data source are left out of its fingerprint.

    The list may change (new entries are dated updates); the alert is resolved once nothing
    is skipped any more.
    """
    db = sink.db()
    key = f"skipped:{source}:open"
    row = db.execute(
        "SELECT id FROM alerts WHERE dedupe_key = ? AND resolved_at IS NULL", [key]
    ).fetchone()
    if not skipped:
        if row is not None:
            _resolve_watch_alert(sink, int(row[0]), "nothing is skipped any more")
        return None
    if row is not None:
        alert = alert_store.get_alert(db, int(row[0]))
        known = set(alert["reasons"] or [])
        for update in alert["updates"]:
            known.update(update["reasons"])
        new = [entry for entry in skipped if entry not in known]
        if new:
            updated = alert_store.add_update(
                db, int(row[0]), f"{len(new)} more skipped: " + "; ".join(new[:8]), reasons=new
            )
            sink.publish("alert", {**updated, "updated": True})
        return None
    shown = "; ".join(skipped[:8]) + (f" and {len(skipped) - 8} more" if len(skipped) > 8 else "")
    raised = alert_store.insert_alert(
        db,
        kind="watch",
        message=f"{len(skipped)} entries of {source} are left out of its fingerprint: {shown}",
        dedupe_key=key,
        cause=f"skipped:{source}",
        reasons=skipped,
    )
    if raised is not None:
        sink.publish("alert", raised)
    return raised


def _resolve_watch_alert(sink: AlertSink, alert_id: int, resolution: str) -> None:
    """Resolve a watch alert and free its dedupe key, so the same fault can alert again."""
    db = sink.db()
    resolved = alert_store.resolve(db, alert_id, resolution)
    with write_transaction(db):
        db.execute("UPDATE alerts SET dedupe_key = NULL WHERE id = ?", [alert_id])
    if resolved is not None:
        sink.publish("alert", {**resolved, "dedupe_key": None})
