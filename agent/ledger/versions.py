"""Naming and comparing model versions: aliases with history, tags, notes, promotions."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger.queries import (
    ALIAS_NAME,
    RESERVED_LABELS,
    VERSION_SELECT,
    current_version,
    decode_row,
)

MAX_TAG_KEY = 100


def set_alias(db: Database, version: dict[str, Any], alias: str) -> int | None:
    """Point `alias` at a version; returns the version it named before (None if new).

    The alias moves: its previous target is kept in the history (`alias_history`).
    """
    check_alias_name(alias, version["model"])
    model_id = int(version["model_id"])
    now = time.time()
    before = db.execute(
        "SELECT a.id, v.version, a.version_id FROM version_aliases a JOIN model_versions v "
        "ON v.id = a.version_id WHERE a.model_id = ? AND a.alias = ? AND a.moved_at IS NULL",
        [model_id, alias],
    ).fetchone()
    if before is not None and int(before[2]) == int(version["id"]):
        return int(before[1])
    if before is not None:
        db.execute("UPDATE version_aliases SET moved_at = ? WHERE id = ?", [now, before[0]])
    db.execute(
        "INSERT INTO version_aliases (model_id, alias, version_id, set_at) VALUES (?, ?, ?, ?)",
        [model_id, alias, int(version["id"]), now],
    )
    return int(before[1]) if before is not None else None


def check_alias_name(alias: str, model: str) -> None:
    """Refuse an alias that could be read as something else (a version number, `latest`)."""
    if alias.isdigit():
        raise WatchkeeperError(
            f"alias {alias!r} is a version number, so {model}@{alias} would mean version "
            f"{alias}; choose a name with a letter, such as champion"
        )
    if alias in RESERVED_LABELS:
        raise WatchkeeperError(
            f"alias {alias!r} is reserved ({model}@{alias} already names a version); choose "
            "another name"
        )
    if not ALIAS_NAME.match(alias):
        raise WatchkeeperError(
            f"alias {alias!r}: start with a letter and use letters, digits, '_', '.' and '-'"
        )


def remove_alias(db: Database, model_id: int, model: str, alias: str) -> int:
    """End an alias (its history is kept); returns the version it named."""
    row = db.execute(
        "SELECT a.id, v.version FROM version_aliases a JOIN model_versions v "
        "ON v.id = a.version_id WHERE a.model_id = ? AND a.alias = ? AND a.moved_at IS NULL",
        [model_id, alias],
    ).fetchone()
    if row is None:
        raise WatchkeeperError(f"model {model!r} has no alias {alias!r}")
    db.execute("UPDATE version_aliases SET moved_at = ? WHERE id = ?", [time.time(), row[0]])
    return int(row[1])


def alias_history(db: Database, model_id: int) -> list[dict[str, Any]]:
    """Every alias a model has had, newest first: which version, since when, until when."""
    return [
        {"alias": alias, "version": version, "set_at": set_at, "moved_at": moved_at}
        for alias, version, set_at, moved_at in db.execute(
            "SELECT a.alias, v.version, a.set_at, a.moved_at FROM version_aliases a "
            "JOIN model_versions v ON v.id = a.version_id WHERE a.model_id = ? "
            "ORDER BY a.alias, a.set_at DESC, a.id DESC",
            [model_id],
        ).fetchall()
    ]


def parse_tag(text: str) -> tuple[str, str]:
    """`key=value` as a tag.

    >>> parse_tag("dataset=v2")
    ('dataset', 'v2')
    """
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise WatchkeeperError(f"tag {text!r}: write it as key=value, such as dataset=v2")
    if len(key) > MAX_TAG_KEY:
        raise WatchkeeperError(f"tag key {key[:20]!r}… is longer than {MAX_TAG_KEY} characters")
    return key, value


def set_tag(db: Database, version_id: int, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO version_tags (version_id, key, value, set_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (version_id, key) DO UPDATE SET value = excluded.value, "
        "set_at = excluded.set_at",
        [version_id, key, value, time.time()],
    )


def remove_tag(db: Database, version_id: int, key: str) -> bool:
    cursor = db.execute(
        "DELETE FROM version_tags WHERE version_id = ? AND key = ?", [version_id, key]
    )
    return cursor.rowcount > 0


def add_note(db: Database, version_id: int, text: str) -> None:
    if not text.strip():
        raise WatchkeeperError('the note is empty; write some text, such as "baseline for Q3"')
    db.execute(
        "INSERT INTO version_notes (version_id, at, text) VALUES (?, ?, ?)",
        [version_id, time.time(), text],
    )


def promote(db: Database, version: dict[str, Any], *, params_written: bool = False) -> None:
    """Make a succeeded version the model's current one."""
    if version["status"] != "succeeded":
        raise WatchkeeperError(
            f"{version['model']} v{version['version']} {version['status']}; only a version "
            "that succeeded can become the current one"
        )
    db.execute(
        "INSERT INTO model_promotions (model_id, version_id, at, params_written) "
        "VALUES (?, ?, ?, ?)",
        [int(version["model_id"]), int(version["id"]), time.time(), int(params_written)],
    )


def labels_for(db: Database, version_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Aliases, tags and notes of the given versions: id -> {aliases, tags, notes}."""
    labels: dict[int, dict[str, Any]] = {
        version_id: {"aliases": [], "tags": {}, "notes": []} for version_id in version_ids
    }
    if not version_ids:
        return labels
    for start in range(0, len(version_ids), 500):
        chunk = version_ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for version_id, alias in db.execute(
            f"SELECT version_id, alias FROM version_aliases WHERE moved_at IS NULL "
            f"AND version_id IN ({marks}) ORDER BY alias",
            chunk,
        ).fetchall():
            labels[version_id]["aliases"].append(alias)
        for version_id, key, value in db.execute(
            f"SELECT version_id, key, value FROM version_tags WHERE version_id IN ({marks}) "
            "ORDER BY key",
            chunk,
        ).fetchall():
            labels[version_id]["tags"][key] = value
        for version_id, at, text in db.execute(
            f"SELECT version_id, at, text FROM version_notes WHERE version_id IN ({marks}) "
            "ORDER BY at, id",
            chunk,
        ).fetchall():
            labels[version_id]["notes"].append({"at": at, "text": text})
    return labels


def last_versions(db: Database, model_id: int, count: int) -> list[dict[str, Any]]:
    """A model's newest `count` versions not deleted, newest first (reads only those rows)."""
    return [
        decode_row(row)
        for row in db.query(
            VERSION_SELECT + " WHERE v.model_id = ? AND v.deleted_at IS NULL"
            " ORDER BY v.version DESC LIMIT ?",
            [model_id, count],
        )
    ]


def comparison(db: Database, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Versions side by side: one entry per version, the param and metric columns, and which
    params differ between them (the columns a reader should look at first)."""
    param_names = sorted({name for row in rows for name in (row["params"] or {})})
    metric_names = sorted({name for row in rows for name in (row["metrics"] or {})})
    differing = [
        name
        for name in param_names
        if len({json.dumps((row["params"] or {}).get(name), sort_keys=True) for row in rows}) > 1
    ]
    currents: dict[int, int | None] = {}
    labels = labels_for(db, [int(row["id"]) for row in rows])
    entries = []
    for row in rows:
        model_id = int(row["model_id"])
        if model_id not in currents:
            current = current_version(db, model_id)
            currents[model_id] = int(current["id"]) if current else None
        entries.append(
            {
                "model": row["model"],
                "version": row["version"],
                "run_id": row["run_id"],
                "status": row["status"],
                "experiment": bool(row.get("experiment")),
                "current": currents[model_id] == int(row["id"]),
                "params": row["params"] or {},
                "metrics": row["metrics"] or {},
                "started_at": row["started_at"],
                **labels[int(row["id"])],
            }
        )
    return {
        "params": param_names,
        "metrics": metric_names,
        "differing_params": differing,
        "versions": entries,
    }


def sort_comparison(report: dict[str, Any], key: str) -> None:
    """Sort the versions of a comparison by a metric or param (`-name` for descending);
    versions without it go last."""
    descending = key.startswith("-")
    name = key.lstrip("-")
    if name not in report["metrics"] and name not in report["params"] and name != "version":
        known = ", ".join([*report["metrics"], *report["params"], "version"])
        raise WatchkeeperError(f"--sort {key}: no metric or param named {name!r}; known: {known}")

    def value(entry: dict[str, Any]) -> Any:
        if name == "version":
            return entry["version"]
        return entry["metrics"].get(name, entry["params"].get(name))

    present = [entry for entry in report["versions"] if _sortable(value(entry))]
    missing = [entry for entry in report["versions"] if not _sortable(value(entry))]
    present.sort(key=lambda entry: _sort_key(value(entry)), reverse=descending)
    report["versions"] = present + missing


def _sortable(value: Any) -> bool:
    return value is not None


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, json.dumps(value, sort_keys=True))
