"""Reading and writing ledger rows: repos, models, versions and runs, with JSON columns decoded."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.runs.states import ACTIVE_RUN_STATES

JSON_COLUMNS = ("params", "metrics", "metrics_extra", "data", "code", "artifacts", "detail")
BUILTIN_REPO_PREFIX = "builtin:"
"""`repos.path` of rows that own built-in models (such as `coding-time`); not a folder."""


def is_builtin_repo(path: str | Path) -> bool:
    """True for the repos row of built-in models, which is a name rather than a folder."""
    return str(path).startswith(BUILTIN_REPO_PREFIX)


def encode(value: Any) -> str:
    """JSON for a TEXT column, with sorted keys so equal values give equal text."""
    return json.dumps(value, sort_keys=True)


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of a row with its JSON columns parsed."""
    decoded = dict(row)
    for column in JSON_COLUMNS:
        if column in decoded and isinstance(decoded[column], str):
            decoded[column] = json.loads(decoded[column])
    return decoded


def register_repo(db: Database, path: Path) -> int:
    """Add a repo (idempotent) and return its id."""
    resolved = str(path.resolve())
    row = db.execute("SELECT id FROM repos WHERE path = ?", [resolved]).fetchone()
    if row:
        return int(row[0])
    cursor = db.execute(
        "INSERT INTO repos (path, name, added_at) VALUES (?, ?, ?)",
        [resolved, path.resolve().name, time.time()],
    )
    return int(cursor.lastrowid or 0)


def forget_repo(db: Database, path: Path) -> list[Path]:
    """Delete a repo with its models, versions, runs, alerts and commits, and the data sources
    under it; returns the run folders of the deleted runs (the caller may remove them)."""
    root = str(path.resolve())
    run_dirs = [
        Path(row[0])
        for row in db.execute(
            "SELECT runs.run_dir FROM runs JOIN models ON models.id = runs.model_id "
            "JOIN repos ON repos.id = models.repo_id WHERE repos.path = ? "
            "AND runs.run_dir IS NOT NULL",
            [root],
        ).fetchall()
    ]
    db.execute("DELETE FROM repos WHERE path = ?", [root])
    db.execute(
        "DELETE FROM data_sources WHERE path = ? OR substr(path, 1, ?) = ?",
        [root, len(root) + 1, root + "/"],
    )
    return run_dirs


def repo_id_for(db: Database, path: Path) -> int | None:
    row = db.execute("SELECT id FROM repos WHERE path = ?", [str(path.resolve())]).fetchone()
    return int(row[0]) if row else None


def list_repos(db: Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM repos ORDER BY path"))


def ensure_model(db: Database, repo_id: int, name: str) -> int:
    """The id of a repo's model, created on first use."""
    row = db.execute(
        "SELECT id FROM models WHERE repo_id = ? AND name = ?", [repo_id, name]
    ).fetchone()
    if row:
        return int(row[0])
    cursor = db.execute("INSERT INTO models (repo_id, name) VALUES (?, ?)", [repo_id, name])
    return int(cursor.lastrowid or 0)


def next_version(db: Database, model_id: int) -> int:
    row = db.execute(
        "SELECT COALESCE(MAX(version), 0) FROM model_versions WHERE model_id = ?", [model_id]
    ).fetchone()
    return int(row[0]) + 1


def insert_row(db: Database, table: str, values: dict[str, Any]) -> int:
    """Insert one row, encoding dict and list values as JSON; returns the rowid."""
    columns = list(values)
    encoded = [encode(v) if isinstance(v, dict | list) else v for v in values.values()]
    cursor = db.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        encoded,
    )
    return int(cursor.lastrowid or 0)


def update_row(
    db: Database,
    table: str,
    key: str,
    key_value: Any,
    values: dict[str, Any],
    *,
    only_if_state_in: tuple[str, ...] | None = None,
    state_column: str = "state",
) -> bool:
    """Update one row; with `only_if_state_in`, only while its state is one of those."""
    assignments = ", ".join(f"{column} = ?" for column in values)
    encoded = [encode(v) if isinstance(v, dict | list) else v for v in values.values()]
    sql = f"UPDATE {table} SET {assignments} WHERE {key} = ?"
    parameters = [*encoded, key_value]
    if only_if_state_in:
        sql += f" AND {state_column} IN ({', '.join('?' for _ in only_if_state_in)})"
        parameters.extend(only_if_state_in)
    return db.execute(sql, parameters).rowcount > 0


VERSION_SELECT = """
SELECT v.*, m.name AS model, r.path AS repo_path, r.id AS repo_id
FROM model_versions v
JOIN models m ON m.id = v.model_id
JOIN repos r ON r.id = m.repo_id
"""


def versions(
    db: Database,
    *,
    repo_id: int | None = None,
    model: str | None = None,
    latest_only: bool = False,
) -> list[dict[str, Any]]:
    """Model versions (newest first per model), JSON decoded, with model name and repo path."""
    where = []
    parameters: list[Any] = []
    if repo_id is not None:
        where.append("r.id = ?")
        parameters.append(repo_id)
    if model is not None:
        where.append("m.name = ?")
        parameters.append(model)
    if latest_only:
        where.append("v.version = (SELECT MAX(version) FROM model_versions WHERE model_id = m.id)")
    sql = VERSION_SELECT + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY r.path, m.name, v.version DESC"
    return [decode_row(row) for row in db.query(sql, parameters)]


def latest_succeeded(db: Database, repo_id: int, model: str) -> dict[str, Any] | None:
    rows = db.query(
        VERSION_SELECT + " WHERE r.id = ? AND m.name = ? AND v.status = 'succeeded'"
        " ORDER BY v.version DESC LIMIT 1",
        [repo_id, model],
    )
    row = next(iter(rows), None)
    return decode_row(row) if row else None


@dataclass(frozen=True)
class ModelRef:
    """`MODEL` or `MODEL@VERSION` as typed on the command line."""

    name: str
    version: int | None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse `churn` or `churn@3`.

        >>> ModelRef.parse("churn@3")
        ModelRef(name='churn', version=3)
        """
        name, at, version = text.partition("@")
        if not name:
            raise WatchkeeperError(f"{text!r} names no model; write MODEL or MODEL@VERSION")
        if not at:
            return cls(name, None)
        if not version.isdigit():
            raise WatchkeeperError(
                f"{text!r}: the version after '@' must be a number such as {name}@3"
            )
        return cls(name, int(version))


def find_version(db: Database, ref: ModelRef, repo_id: int | None) -> dict[str, Any]:
    """The version a reference names (latest when no version), searched in one repo or all."""
    rows = [row for row in versions(db, repo_id=repo_id, model=ref.name)]
    if not rows:
        known = sorted({row["model"] for row in versions(db, repo_id=repo_id)})
        scope = "in this repo" if repo_id is not None else "in the ledger"
        listing = ", ".join(known) if known else "none yet (train one with `watchkeeper train`)"
        raise WatchkeeperError(f"no model named {ref.name!r} {scope}; models: {listing}")
    repos = {row["repo_path"] for row in rows}
    if len(repos) > 1:
        raise WatchkeeperError(
            f"several repos have a model named {ref.name!r} ({', '.join(sorted(repos))}); "
            "run the command inside the repo you mean"
        )
    if ref.version is None:
        return rows[0]
    for row in rows:
        if row["version"] == ref.version:
            return row
    existing = ", ".join(str(row["version"]) for row in reversed(rows))
    raise WatchkeeperError(
        f"model {ref.name!r} has no version {ref.version}; its versions are {existing}"
    )


@dataclass(frozen=True)
class RecordedDataDep:
    """A data dep recorded on some version of a model, as an absolute path."""

    repo: Path
    repo_id: int
    model: str
    path: Path


def recorded_data_deps(db: Database) -> list[RecordedDataDep]:
    """Every data dep recorded on a model version (built-in models have none), each once."""
    found: set[RecordedDataDep] = set()
    for repo_id, repo_path, model, data in db.execute(
        "SELECT r.id, r.path, m.name, v.data FROM model_versions v"
        " JOIN models m ON m.id = v.model_id JOIN repos r ON r.id = m.repo_id"
        " WHERE v.data IS NOT NULL AND v.data != '{}' AND r.path NOT LIKE ?",
        [BUILTIN_REPO_PREFIX + "%"],
    ).fetchall():
        try:
            deps = json.loads(data)
        except (TypeError, json.JSONDecodeError):
            continue
        for dep in deps:
            path = Path(os.path.abspath(Path(repo_path) / dep))  # an absolute dep stays itself
            found.add(RecordedDataDep(Path(repo_path), int(repo_id), str(model), path))
    return sorted(found, key=lambda dep: (dep.model, str(dep.path)))


RUN_SELECT = """
SELECT runs.*, models.name AS model, model_versions.version AS version
FROM runs
LEFT JOIN models ON models.id = runs.model_id
LEFT JOIN model_versions ON model_versions.run_id = runs.id
"""


def runs(db: Database, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Runs, newest first, with the model name and the version they recorded."""
    sql = RUN_SELECT + " ORDER BY runs.created_at DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [decode_row(row) for row in db.query(sql)]


def find_run(db: Database, run_id: str) -> dict[str, Any]:
    """One run by id or unique id prefix."""
    rows = list(db.query(RUN_SELECT + " WHERE runs.id = ?", [run_id]))
    if not rows:
        rows = list(
            db.query(
                RUN_SELECT + " WHERE substr(runs.id, 1, ?) = ? ORDER BY runs.created_at DESC",
                [len(run_id), run_id],
            )
        )
    if len(rows) == 1:
        return decode_row(rows[0])
    if not rows:
        recent = ", ".join(row["id"] for row in runs(db, limit=5)) or "none yet"
        raise WatchkeeperError(f"no run {run_id!r}; recent runs: {recent}")
    raise WatchkeeperError(
        f"{run_id!r} matches several runs ({', '.join(r['id'] for r in rows)}); give more of it"
    )


def active_runs(db: Database) -> Iterator[dict[str, Any]]:
    placeholders = ", ".join("?" for _ in ACTIVE_RUN_STATES)
    for row in db.query(f"SELECT * FROM runs WHERE state IN ({placeholders})", ACTIVE_RUN_STATES):
        yield decode_row(row)
