"""Shared records: a version or an alias setting as canonical JSON, checked and applied.

A record is immutable once shared: its id is the version's (or alias setting's) global id, its
body is canonical JSON (sorted keys, no spaces), and `shared_records` keeps the body exactly as
it travelled. The same id with another body is a clash and is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlite_utils import Database

from agent.ledger.queries import (
    VERSION_SELECT,
    decode_row,
    encode,
    ensure_model,
    next_version,
)
from agent.runs.states import ACTIVE_RUN_STATES, VERSION_STATUSES

RECORD_FORMAT = 1
GLOBAL_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
FOLDERS = {"version": "versions", "alias": "aliases"}
RECORD_PATH = re.compile(r"^(versions|aliases)/([0-9a-f]{2})/([0-9a-f]{32})\.json$")


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes a record travels as: JSON with sorted keys and no spaces, one line.

    >>> canonical({"b": 1, "a": [1.5, None]})
    b'{"a":[1.5,null],"b":1}\\n'
    """
    return (
        json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8"
        )
        + b"\n"
    )


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def record_path(kind: str, global_id: str) -> str:
    """Where a record lives on the ledger ref.

    >>> record_path("version", "3f" + "0" * 30)
    'versions/3f/3f000000000000000000000000000000.json'
    """
    return f"{FOLDERS[kind]}/{global_id[:2]}/{global_id}.json"


# -- building records from the local ledger ------------------------------------------------


def local_versions_to_share(
    db: Database, repo_id: int, models: list[str] | None
) -> list[dict[str, Any]]:
    """This repo's own versions (not pulled) that have finished, oldest first."""
    where = "r.id = ? AND v.pulled_at IS NULL"
    parameters: list[Any] = [repo_id]
    marks = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    where += f" AND v.status NOT IN ({marks}) AND v.status != 'running'"
    parameters.extend(ACTIVE_RUN_STATES)
    if models:
        where += f" AND m.name IN ({', '.join('?' for _ in models)})"
        parameters.extend(models)
    sql = VERSION_SELECT + " WHERE " + where + " ORDER BY v.id"
    return [decode_row(row) for row in db.query(sql, parameters)]


def version_record(
    db: Database, row: dict[str, Any], repo: dict[str, Any], author: dict[str, str]
) -> dict[str, Any]:
    """The shared record of a local version: its whole lineage, who trained it and where."""
    return {
        "format": RECORD_FORMAT,
        "kind": "version",
        "id": row["global_id"],
        "model": row["model"],
        "repo": repo,
        "status": row["status"],
        "experiment": bool(row.get("experiment")),
        "commit": row["commit_sha"],
        "dirty": bool(row["dirty"]),
        "diff": row["diff_hash"],
        "train_command": row["train_command"],
        "params": row["params"] or {},
        "metrics": row["metrics"] or {},
        "metrics_extra": row.get("metrics_extra"),
        "code": row["code"] or {},
        "data": _data_lineage(db, row["data"] or {}),
        "artifacts": row["artifacts"] or {},
        "blobs": _blob_list(db, int(row["id"])),
        "steps": step_summary(db, int(row["id"])),
        "author": author,
        "host": row["host"] or (socket.gethostname() if row["executor"] == "local" else None),
        "executor": row["executor"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "exit_code": row["exit_code"],
        "local_version": row["version"],
    }


def _blob_list(db: Database, version_id: int) -> list[list[str]]:
    """[kind, path, digest] of every blob the version references (artifacts, data, diffs)."""
    return [
        [str(kind), str(path), str(digest)]
        for kind, path, digest in db.execute(
            "SELECT kind, path, digest FROM version_blobs WHERE version_id = ? ORDER BY kind, path",
            [version_id],
        ).fetchall()
    ]


def _data_lineage(db: Database, data: dict[str, Any]) -> dict[str, Any]:
    """Each data dep's fingerprint with its files (path, size, digest), from its snapshot."""
    lineage: dict[str, Any] = {}
    for dep, recorded in data.items():
        entry: dict[str, Any] = {"fingerprint": recorded.get("fingerprint")}
        if recorded.get("dvc_md5"):
            entry["dvc_md5"] = recorded["dvc_md5"]  # lets a teammate `dvc checkout` the data
        snapshot_id = recorded.get("snapshot_id")
        row = db.execute(
            "SELECT s.n_files, s.total_bytes, d.kind FROM data_snapshots s "
            "JOIN data_sources d ON d.id = s.source_id WHERE s.id = ?",
            [snapshot_id],
        ).fetchone()
        if row is not None:
            entry.update(n_files=row[0], total_bytes=row[1], kind=row[2])
            entry["files"] = [
                [path, size, digest]
                for path, size, digest in db.execute(
                    "SELECT path, size, digest FROM data_snapshot_files WHERE snapshot_id = ? "
                    "ORDER BY path",
                    [snapshot_id],
                ).fetchall()
            ]
        lineage[dep] = entry
    return lineage


def step_summary(db: Database, version_id: int) -> dict[str, Any] | None:
    """Per step metric: points, first and last step, last, min and max value."""
    summary: dict[str, dict[str, Any]] = {}
    for name, steps_f8, values_f8 in db.execute(
        "SELECT name, steps_f8, values_f8 FROM step_metrics WHERE version_id = ? "
        "ORDER BY name, first_line",
        [version_id],
    ).fetchall():
        steps = struct.unpack(f"<{len(steps_f8) // 8}d", steps_f8)
        values = [v for v in struct.unpack(f"<{len(values_f8) // 8}d", values_f8)]
        if not steps:
            continue
        entry = summary.setdefault(
            name, {"points": 0, "first_step": steps[0], "min": None, "max": None}
        )
        entry["points"] += len(steps)
        entry["last_step"], entry["last"] = steps[-1], _finite(values[-1])
        finite = [value for value in values if math.isfinite(value)]
        if finite:
            low, high = min(finite), max(finite)
            entry["min"] = low if entry["min"] is None else min(entry["min"], low)
            entry["max"] = high if entry["max"] is None else max(entry["max"], high)
    return summary or None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def alias_records(db: Database, model_ids: list[int]) -> list[dict[str, Any]]:
    """Every alias setting of these models whose version has a global id, plus one record
    per alias removal (an end with no setting after it)."""
    records: list[dict[str, Any]] = []
    if not model_ids:
        return records
    marks = ", ".join("?" for _ in model_ids)
    rows = db.execute(
        "SELECT a.global_id, m.name, a.alias, v.global_id, a.set_at, a.moved_at, a.model_id "
        "FROM version_aliases a JOIN models m ON m.id = a.model_id "
        f"JOIN model_versions v ON v.id = a.version_id WHERE a.model_id IN ({marks}) "
        "AND (v.status != 'running') ORDER BY a.set_at, a.id",
        model_ids,
    ).fetchall()
    settings = {(row[6], row[2], row[4]) for row in rows}
    for alias_id, model, alias, version_id, set_at, moved_at, model_id in rows:
        records.append(_alias_record(alias_id, model, alias, version_id, set_at))
        if moved_at is not None and (model_id, alias, moved_at) not in settings:
            removal_id = hashlib.sha256(f"{alias_id}:removed".encode()).hexdigest()[:32]
            records.append(_alias_record(removal_id, model, alias, None, moved_at))
    return records


def _alias_record(
    alias_id: str, model: str, alias: str, version: str | None, at: float
) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "kind": "alias",
        "id": alias_id,
        "model": model,
        "alias": alias,
        "version": version,
        "set_at": at,
    }


# -- checking records that arrive -----------------------------------------------------------


class RecordRefused(Exception):
    """A record that cannot be applied; the message says why (the caller names the path)."""


@dataclass
class Incoming:
    """A record read from the ledger ref, checked and parsed."""

    path: str
    body: bytes
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def kind(self) -> str:
        return str(self.record["kind"])


def parse_record(path: str, body: bytes) -> Incoming:
    """Check a record's place, JSON and fields; raises RecordRefused saying what is wrong."""
    where = RECORD_PATH.match(path)
    if where is None:
        raise RecordRefused("not a record path (versions/ab/ID.json or aliases/ab/ID.json)")
    try:
        record = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordRefused(f"does not parse as JSON ({error})") from error
    if not isinstance(record, dict):
        raise RecordRefused("is not a JSON object")
    if record.get("format") != RECORD_FORMAT:
        raise RecordRefused(
            f"has format {record.get('format')!r}; this Watchkeeper reads format "
            f"{RECORD_FORMAT} (upgrade it to read newer records)"
        )
    kind = record.get("kind")
    if FOLDERS.get(str(kind)) != where.group(1):
        raise RecordRefused(f"kind {kind!r} does not belong in {where.group(1)}/")
    if record.get("id") != where.group(3):
        raise RecordRefused(f"its id {record.get('id')!r} is not the one its file is named by")
    _require(record, "model", str)
    if not MODEL_NAME.match(record["model"]):
        raise RecordRefused(f"model name {record['model']!r} is not a valid name")
    if kind == "version":
        _check_version(record)
    else:
        _require(record, "alias", str)
        _require(record, "set_at", float | int)
        if record.get("version") is not None and not GLOBAL_ID.match(str(record["version"])):
            raise RecordRefused(f"version {record['version']!r} is not a global id")
    return Incoming(path, body, record)


def _require(record: dict[str, Any], key: str, kind: Any) -> None:
    if not isinstance(record.get(key), kind):
        raise RecordRefused(f"field {key!r} is missing or of the wrong type")


def _check_version(record: dict[str, Any]) -> None:
    for key in ("params", "metrics", "code", "data", "artifacts", "author", "repo"):
        _require(record, key, dict)
    if record.get("status") not in VERSION_STATUSES or record.get("status") == "running":
        raise RecordRefused(f"status {record.get('status')!r} is not a finished status")
    for dep, lineage in record["data"].items():
        _check_relative(dep, "data dep")
        if not isinstance(lineage, dict):
            raise RecordRefused(f"data dep {dep!r} has no fingerprint object")
        for item in lineage.get("files") or []:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
                raise RecordRefused(f"data dep {dep!r} lists a file entry that is not valid")
            _check_relative(item[0], f"data dep {dep!r} file")
    for dep in record["code"]:
        _check_relative(dep, "code dep")
    for out in record["artifacts"]:
        _check_relative(out, "artifact")
    blobs = record.get("blobs", [])
    valid = isinstance(blobs, list) and all(
        isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item)
        for item in blobs
    )
    if not valid:
        raise RecordRefused("field 'blobs' is not a list of [kind, path, digest]")
    for kind, path, _ in blobs:
        _check_relative(path, f"{kind} blob")


def _check_relative(path: str, what: str) -> None:
    pure = PurePosixPath(path)
    if path in (".", ""):
        return
    if pure.is_absolute() or ".." in pure.parts:
        raise RecordRefused(f"{what} {path!r} leads outside the repo")


# -- applying records ------------------------------------------------------------------------


@dataclass
class Applied:
    """What a pull did: versions and alias settings added, and records refused with why."""

    versions: list[dict[str, Any]] = field(default_factory=list)
    aliases: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    already: int = 0


def known_records(db: Database) -> dict[str, str]:
    """Global id -> sha256 of every record this ledger has shared or received."""
    return {str(i): str(h) for i, h in db.execute("SELECT id, sha256 FROM shared_records")}


def remember(db: Database, incoming: Incoming, pushed_to: str | None) -> None:
    db.execute(
        "INSERT OR IGNORE INTO shared_records (id, kind, sha256, body, pushed_to, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            incoming.id,
            incoming.kind,
            sha256(incoming.body),
            incoming.body.decode("utf-8"),
            pushed_to,
            time.time(),
        ],
    )


def apply_version(
    db: Database, root: Path, repo_id: int, incoming: Incoming, remote_name: str
) -> dict[str, Any]:
    """Add a teammate's version to this repo's model, with a local number; returns a summary."""
    record = incoming.record
    if db.execute("SELECT 1 FROM model_versions WHERE global_id = ?", [record["id"]]).fetchone():
        raise RecordRefused(
            f"id clash: this ledger already has a version {record['id']} with other content"
        )
    model_id = ensure_model(db, repo_id, record["model"])
    number = next_version(db, model_id)
    author = record["author"]
    data = {
        dep: {
            "snapshot_id": _snapshot_for(db, root / dep, lineage),
            "fingerprint": lineage.get("fingerprint"),
            **({"dvc_md5": lineage["dvc_md5"]} if isinstance(lineage.get("dvc_md5"), str) else {}),
        }
        for dep, lineage in record["data"].items()
    }
    extra = record.get("metrics_extra")
    db.execute(
        "INSERT INTO model_versions (model_id, version, status, commit_sha, dirty, diff_hash, "
        "train_command, params, metrics, metrics_extra, data, code, artifacts, executor, host, "
        "started_at, ended_at, exit_code, experiment, global_id, author, pulled_from, pulled_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            model_id,
            number,
            record["status"],
            record.get("commit"),
            int(bool(record.get("dirty"))),
            record.get("diff"),
            record.get("train_command"),
            encode(record["params"]),
            encode(record["metrics"]),
            None if extra is None else encode(extra),
            encode(data),
            encode(record["code"]),
            encode(record["artifacts"]),
            record.get("executor"),
            record.get("host"),
            record.get("started_at"),
            record.get("ended_at"),
            record.get("exit_code"),
            int(bool(record.get("experiment"))),
            record["id"],
            author_text(author),
            remote_name,
            time.time(),
        ],
    )
    remember(db, incoming, None)
    return {"model": record["model"], "version": number, "id": record["id"], "author": author}


def author_text(author: dict[str, Any]) -> str:
    """`Name <email>` of a record's author.

    >>> author_text({"name": "Ada", "email": "ada@example.org"})
    'Ada <ada@example.org>'
    """
    return f"{author.get('name') or '?'} <{author.get('email') or '?'}>"


def _snapshot_for(db: Database, path: Path, lineage: dict[str, Any]) -> int | None:
    """The local snapshot row for a teammate's data fingerprint of `path` (made once)."""
    fingerprint = lineage.get("fingerprint")
    if not fingerprint:
        return None
    source = db.execute("SELECT id FROM data_sources WHERE path = ?", [str(path)]).fetchone()
    if source is None:
        cursor = db.execute(
            "INSERT INTO data_sources (path, kind, added_at) VALUES (?, ?, ?)",
            [str(path), lineage.get("kind") or "folder", time.time()],
        )
        source_id = int(cursor.lastrowid or 0)
    else:
        source_id = int(source[0])
    existing = db.execute(
        "SELECT id FROM data_snapshots WHERE source_id = ? AND fingerprint = ?",
        [source_id, fingerprint],
    ).fetchone()
    if existing is not None:
        return int(existing[0])
    files = lineage.get("files") or []
    cursor = db.execute(
        "INSERT INTO data_snapshots (source_id, fingerprint, n_files, total_bytes, taken_at, "
        "skipped) VALUES (?, ?, ?, ?, ?, ?)",
        [
            source_id,
            fingerprint,
            lineage.get("n_files", len(files)),
            lineage.get("total_bytes"),
            time.time(),
            "[]",
        ],
    )
    snapshot_id = int(cursor.lastrowid or 0)
    db.conn.executemany(
        "INSERT OR IGNORE INTO data_snapshot_files (snapshot_id, path, size, mtime_ns, digest) "
        "VALUES (?, ?, ?, 0, ?)",
        ((snapshot_id, name, size, digest) for name, size, digest in files),
    )
    return snapshot_id


def apply_alias(db: Database, repo_id: int, incoming: Incoming) -> None:
    """Add a teammate's alias setting (or removal) to the alias's history and recompute which
    setting is current: each one lasts until the next, by time."""
    record = incoming.record
    model_row = db.execute(
        "SELECT id FROM models WHERE repo_id = ? AND name = ?", [repo_id, record["model"]]
    ).fetchone()
    if model_row is None:
        raise RecordRefused(f"names model {record['model']!r}, which has no versions here")
    model_id = int(model_row[0])
    if record["version"] is not None:
        version = db.execute(
            "SELECT id FROM model_versions WHERE global_id = ? AND model_id = ?",
            [record["version"], model_id],
        ).fetchone()
        if version is None:
            raise RecordRefused(
                f"points {record['model']}@{record['alias']} at version {record['version']}, "
                "which this ledger does not have"
            )
        db.execute(
            "INSERT INTO version_aliases (model_id, alias, version_id, set_at, moved_at, "
            "global_id) VALUES (?, ?, ?, ?, ?, ?)",
            [
                model_id,
                record["alias"],
                int(version[0]),
                record["set_at"],
                record["set_at"],
                record["id"],
            ],
        )
    remember(db, incoming, None)
    recompute_alias(db, model_id, record["alias"])


def recompute_alias(db: Database, model_id: int, alias: str) -> None:
    """Each setting of an alias ends where the next setting or removal begins."""
    settings = db.execute(
        "SELECT id, set_at, moved_at FROM version_aliases WHERE model_id = ? AND alias = ? "
        "ORDER BY set_at, id",
        [model_id, alias],
    ).fetchall()
    model = db.execute("SELECT name FROM models WHERE id = ?", [model_id]).fetchone()[0]
    removals = [
        float(json.loads(body)["set_at"])
        for (body,) in db.execute(
            "SELECT body FROM shared_records WHERE kind = 'alias' AND "
            "json_extract(body, '$.model') = ? AND json_extract(body, '$.alias') = ? "
            "AND json_extract(body, '$.version') IS NULL",
            [model, alias],
        ).fetchall()
    ]
    local_ends = [float(row[2]) for row in settings if row[2] is not None]
    events = sorted({float(row[1]) for row in settings} | set(removals) | set(local_ends))
    ends: list[tuple[int, float | None]] = []
    for row_id, set_at, _ in settings:
        later = [at for at in events if at > float(set_at)]
        ends.append((int(row_id), later[0] if later else None))
    for row_id, end in sorted(ends, key=lambda item: item[1] is None):
        db.execute(
            "UPDATE version_aliases SET moved_at = ? WHERE id = ?",
            [end if end is not None else -1.0, row_id],
        )
    for row_id, end in ends:
        if end is None:
            db.execute("UPDATE version_aliases SET moved_at = NULL WHERE id = ?", [row_id])
