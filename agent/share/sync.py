"""`push` and `pull`: exchange version and alias records with the remote's ledger ref.

Push freezes each finished local version as a record (once), fetches the remote's ref, adds the
records it lacks on top of it and pushes as a fast-forward; when someone else pushed first it
fetches again and retries, so both pushes land and no record is lost. Pull fetches the ref and
applies the records this ledger lacks in one transaction, refusing (and naming) any that do not
parse or clash with what it has.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.ledger import write_transaction
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.blobs import VersionBlob
from agent.ledger.queries import current_version, current_version_of, register_repo
from agent.share import gitref, records
from agent.share.blob_store import SharedStore, UploadReport, record_blobs, upload_blobs
from agent.share.gitref import ShareError

MAX_PUSH_ATTEMPTS = 12


@dataclass
class PushResult:
    """What a push sent: records added to the remote, already there, and clashes."""

    remote: str
    url: str
    pushed_versions: int = 0
    pushed_aliases: int = 0
    already: int = 0
    attempts: int = 0
    clashes: list[str] = field(default_factory=list)
    commit: str | None = None
    blobs: UploadReport | None = None  # None when records only were shared


def freeze_local_records(
    db: Database,
    root: Path,
    repo_id: int,
    identity: gitref.RepoIdentity,
    author: tuple[str, str],
    models: list[str] | None,
) -> list[tuple[str, str, bytes]]:
    """The (kind, id, body) of every record this repo's own versions and aliases share.

    A version's record is built once, the first time it is pushed, and kept as it was.
    """
    who = {"name": author[0], "email": author[1]}
    repo = {**identity.as_json(), "path": str(root)}
    with write_transaction(db):
        rows = records.local_versions_to_share(db, repo_id, models)
        stored = {
            str(i): body.encode("utf-8")
            for i, body in db.execute("SELECT id, body FROM shared_records").fetchall()
        }
        outgoing: list[tuple[str, str, bytes]] = []
        for row in rows:
            gid = str(row["global_id"])
            if gid not in stored:
                if row.get("author"):
                    name, _, email = str(row["author"]).partition(" <")
                    author_of_row = {"name": name, "email": email.rstrip(">")}
                else:
                    author_of_row = who
                    db.execute(
                        "UPDATE model_versions SET author = ? WHERE id = ?",
                        [records.author_text(who), row["id"]],
                    )
                body = records.canonical(records.version_record(db, row, repo, author_of_row))
                records.remember(
                    db, records.parse_record(records.record_path("version", gid), body), None
                )
                stored[gid] = body
            outgoing.append(("version", gid, stored[gid]))
        model_ids = _model_ids(db, repo_id, models)
        for record in records.alias_records(db, model_ids):
            gid = str(record["id"])
            if gid not in stored:
                body = records.canonical(record)
                records.remember(
                    db, records.parse_record(records.record_path("alias", gid), body), None
                )
                stored[gid] = body
            outgoing.append(("alias", gid, stored[gid]))
    return outgoing


def _model_ids(db: Database, repo_id: int, models: list[str] | None) -> list[int]:
    rows = db.execute("SELECT id, name FROM models WHERE repo_id = ?", [repo_id]).fetchall()
    return sorted(int(i) for i, name in rows if models is None or name in models)


def _check_model_names(db: Database, repo_id: int, models: list[str] | None) -> None:
    """Refuse model names that have no versions in this repo, listing the ones that do."""
    known = {
        str(row[0])
        for row in db.execute(
            "SELECT DISTINCT m.name FROM models m JOIN model_versions v ON v.model_id = m.id "
            "WHERE m.repo_id = ?",
            [repo_id],
        ).fetchall()
    }
    unknown = [name for name in models or [] if name not in known]
    if unknown:
        raise ShareError(
            f"no versions of {', '.join(unknown)} in {root_name(db, repo_id)}; models with "
            f"versions: {', '.join(sorted(known)) or 'none yet'}"
        )


def root_name(db: Database, repo_id: int) -> str:
    row = db.execute("SELECT path FROM repos WHERE id = ?", [repo_id]).fetchone()
    return str(row[0]) if row else "this repo"


def push(
    db: Database,
    root: Path,
    remote_name: str = gitref.DEFAULT_REMOTE,
    models: list[str] | None = None,
    on_attempt: Callable[[int], None] = lambda attempt: None,
    *,
    store: SharedStore | None = None,
    local_store: ArtifactStore | None = None,
    on_blob: Callable[[VersionBlob], None] = lambda blob: None,
) -> PushResult:
    """Share this repo's finished versions (of `models`, or all) and their aliases.

    With a `store`, every blob the versions reference goes there first (those it lacks, from
    `local_store`); the records are pushed only once all their blobs are in the store.
    """
    identity = gitref.repo_identity(root, remote_name)
    author = gitref.git_identity(root)
    with write_transaction(db):
        repo_id = register_repo(db, root)
    _check_model_names(db, repo_id, models)
    outgoing = freeze_local_records(db, root, repo_id, identity, author, models)
    result = PushResult(remote_name, identity.remote_url)
    if store is not None and local_store is not None:
        result.blobs = upload_blobs(store, local_store, _blobs_of(outgoing), on_blob)
    for attempt in range(1, MAX_PUSH_ATTEMPTS + 1):
        result.attempts = attempt
        on_attempt(attempt)
        tip = gitref.fetch_ledger(root, remote_name)
        present = gitref.list_records(root, tip)
        missing: dict[str, bytes] = {}
        result.clashes, result.already = [], 0
        counts = {"version": 0, "alias": 0}
        for kind, gid, body in outgoing:
            path = records.record_path(kind, gid)
            if path in present:
                if present[path] != gitref.blob_id(root, body):
                    result.clashes.append(path)
                else:
                    result.already += 1
                continue
            missing[path] = body
            counts[kind] += 1
        if not missing:
            result.commit = tip
            break
        message = (
            f"{counts['version']} versions, {counts['alias']} alias settings from "
            f"{author[0]} <{author[1]}>"
        )
        commit = gitref.write_commit(root, tip, missing, author, message)
        if gitref.push_commit(root, remote_name, commit):
            result.commit = commit
            result.pushed_versions, result.pushed_aliases = counts["version"], counts["alias"]
            _mark_pushed(db, [gid for _, gid, _ in outgoing], remote_name)
            break
        time.sleep(random.uniform(0.05, 0.2) * attempt)  # someone pushed first: merge again
    else:
        raise ShareError(
            f"{remote_name} kept moving: {MAX_PUSH_ATTEMPTS} pushes of {gitref.LEDGER_REF} in a "
            "row lost to other pushes; nothing is lost, run `watchkeeper push` again"
        )
    return result


def _blobs_of(outgoing: list[tuple[str, str, bytes]]) -> list[tuple[str, VersionBlob]]:
    """(version label, blob) of every blob the outgoing version records name."""
    found: list[tuple[str, VersionBlob]] = []
    for kind, _, body in outgoing:
        if kind == "version":
            record = json.loads(body)
            label = f"{record['model']} v{record.get('local_version')} ({record['id'][:10]})"
            found.extend((label, blob) for blob in record_blobs(record))
    return found


def _mark_pushed(db: Database, ids: list[str], remote_name: str) -> None:
    with write_transaction(db):
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            db.execute(
                f"UPDATE shared_records SET pushed_to = ? WHERE id IN "
                f"({', '.join('?' for _ in chunk)})",
                [remote_name, *chunk],
            )


@dataclass
class PullResult:
    """What a pull brought: the remote, its URL, and what was applied or refused."""

    remote: str
    url: str
    applied: records.Applied
    commit: str | None
    newer: list[dict[str, Any]] = field(default_factory=list)  # see `newer_than_current`


def pull(db: Database, root: Path, remote_name: str = gitref.DEFAULT_REMOTE) -> PullResult:
    """Fetch the remote's ledger ref and add the versions and aliases this ledger lacks."""
    identity = gitref.repo_identity(root, remote_name)
    tip = gitref.fetch_ledger(root, remote_name)
    present = gitref.list_records(root, tip)
    applied = records.Applied()
    with write_transaction(db):
        repo_id = register_repo(db, root)
        known = {
            str(i): body.encode("utf-8")
            for i, body in db.execute("SELECT id, body FROM shared_records").fetchall()
        }
        wanted: dict[str, str] = {}
        for path, blob in present.items():
            match = records.RECORD_PATH.match(path)
            gid = match.group(3) if match else None
            if gid is not None and gid in known:
                if gitref.blob_id(root, known[gid]) != blob:
                    applied.refused.append(
                        (path, f"id clash: this ledger has record {gid} with other content")
                    )
                else:
                    applied.already += 1
                continue
            wanted[path] = blob
        bodies = gitref.read_blobs(root, sorted(set(wanted.values())))
        parsed: list[records.Incoming] = []
        for path, blob in sorted(wanted.items()):
            try:
                incoming = records.parse_record(path, bodies.get(blob, b""))
                _check_identity(incoming.record, identity)
            except records.RecordRefused as refusal:
                applied.refused.append((path, str(refusal)))
                continue
            parsed.append(incoming)
        versions = sorted(
            (item for item in parsed if item.kind == "version"),
            key=lambda item: (item.record.get("ended_at") or 0, item.id),
        )
        aliases = sorted(
            (item for item in parsed if item.kind == "alias"),
            key=lambda item: (float(item.record["set_at"]), item.id),
        )
        currents = _currents(db, repo_id)
        for item in [*versions, *aliases]:
            db.execute("SAVEPOINT shared_record")
            try:
                if item.kind == "version":
                    applied.versions.append(
                        records.apply_version(db, root, repo_id, item, remote_name)
                    )
                else:
                    records.apply_alias(db, repo_id, item)
                    applied.aliases += 1
            except records.RecordRefused as refusal:
                db.execute("ROLLBACK TO shared_record")
                applied.refused.append((item.path, str(refusal)))
            db.execute("RELEASE shared_record")
        newer = newer_than_current(db, repo_id, currents, applied.versions)
    if tip is not None:
        gitref.git(root, "update-ref", gitref.LEDGER_REF, tip, check=False)
    return PullResult(remote_name, identity.remote_url, applied, tip, newer)


def _currents(db: Database, repo_id: int) -> dict[str, dict[str, Any] | None]:
    """model name -> its current version, before a pull applies anything."""
    return {
        str(name): current_version(db, int(model_id))
        for model_id, name in db.execute(
            "SELECT id, name FROM models WHERE repo_id = ?", [repo_id]
        ).fetchall()
    }


def newer_than_current(
    db: Database,
    repo_id: int,
    before: dict[str, dict[str, Any] | None],
    pulled: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The pulled versions that ended after their model's current version (before the pull):
    the model's current version is no longer its newest. One entry per model, the newest."""
    newest: dict[str, dict[str, Any]] = {}
    for summary in pulled:
        row = db.execute(
            "SELECT v.version, v.global_id, v.ended_at, v.status, v.experiment, v.author "
            "FROM model_versions v WHERE v.global_id = ?",
            [summary["id"]],
        ).fetchone()
        if row is None or row[3] != "succeeded" or row[4]:
            continue
        previous = before.get(summary["model"])
        if previous is not None and float(row[2] or 0) <= float(previous["ended_at"] or 0):
            continue
        if summary["model"] in newest and newest[summary["model"]]["ended_at"] >= (row[2] or 0):
            continue
        now_current = current_version_of(db, repo_id, summary["model"])
        newest[summary["model"]] = {
            "model": summary["model"],
            "version": int(row[0]),
            "id": str(row[1]),
            "ended_at": row[2] or 0,
            "author": str(row[5] or ""),
            "previous": None
            if previous is None
            else {"version": int(previous["version"]), "id": previous.get("global_id")},
            "current": None if now_current is None else int(now_current["version"]),
        }
    return list(newest.values())


def _check_identity(record: dict[str, Any], identity: gitref.RepoIdentity) -> None:
    """Refuse a record made in another repository (a different root commit)."""
    theirs = (record.get("repo") or {}).get("root_commit")
    if theirs and identity.root_commit and theirs != identity.root_commit:
        raise records.RecordRefused(
            f"was made in another repository (root commit {str(theirs)[:12]}, this one's is "
            f"{identity.root_commit[:12]})"
        )


def notify_agent(root: Path, pulled: PullResult | None = None) -> bool:
    """Ask a running agent to judge this repo's models again now, and to tell the app what a
    pull brought (see `newer_than_current`); False when no agent runs."""
    from agent.client import AgentClient

    try:
        client = AgentClient.connect_or_none(timeout=5.0)
    except Exception:  # an agent that cannot be reached notices the new versions on its own poll
        return False
    if client is None:
        return False
    with client:
        try:
            if pulled is not None:
                summary = {"versions": len(pulled.applied.versions), "newer": pulled.newer}
                client.call("check", repo=str(root), pulled=summary)
            else:
                client.call("check", repo=str(root))
        except Exception:
            return False
    return True
