"""Reading and writing ledger rows: repos, models, versions and runs, with JSON columns decoded."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.runs.states import ACTIVE_RUN_STATES

JSON_COLUMNS = (
    "params",
    "metrics",
    "metrics_extra",
    "data",
    "code",
    "artifacts",
    "detail",
    "reproduction",
    "mlflow",
)
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
    include_deleted: bool = False,
) -> list[dict[str, Any]]:
    """Model versions (newest first per model), JSON decoded, with model name and repo path.

    Versions marked deleted (`watchkeeper models delete`) are left out unless `include_deleted`.
    """
    where = [] if include_deleted else ["v.deleted_at IS NULL"]
    parameters: list[Any] = []
    if repo_id is not None:
        where.append("r.id = ?")
        parameters.append(repo_id)
    if model is not None:
        where.append("m.name = ?")
        parameters.append(model)
    if latest_only:
        where.append(
            "v.version = (SELECT MAX(version) FROM model_versions WHERE model_id = m.id"
            + ("" if include_deleted else " AND deleted_at IS NULL")
            + ")"
        )
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


LATEST = "latest"
CURRENT = "current"
RESERVED_LABELS = (LATEST, CURRENT)
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
GLOBAL_ID_PREFIX = re.compile(r"^[0-9a-f]{4,32}$")
"""A version's global id or a unique start of it (at least 4 hex digits), as git takes a sha."""
MAX_LISTED_VERSIONS = 20


@dataclass(frozen=True)
class ModelRef:
    """`MODEL`, `MODEL@VERSION`, `MODEL@ALIAS`, `MODEL@latest`, `MODEL@current` or
    `MODEL@GLOBALID` as typed.

    A reference without `@` that names no model is tried as a run id (or a unique prefix or
    suffix of one), then as a global id (or a unique start of one) by `find_version`. After
    `@`, a name that is no alias is tried as the start of a global id.
    """

    name: str
    version: int | None = None
    label: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse `churn`, `churn@3`, `churn@champion` or `churn@latest`.

        >>> ModelRef.parse("churn@3")
        ModelRef(name='churn', version=3, label=None)
        >>> ModelRef.parse("churn@champion").label
        'champion'
        """
        name, at, after = text.partition("@")
        if not name:
            raise WatchkeeperError(
                f"{text!r} names no model; write MODEL, MODEL@VERSION or MODEL@ALIAS"
            )
        if not at:
            return cls(name)
        if after.isdigit():
            return cls(name, int(after))
        if not ALIAS_NAME.match(after) and not GLOBAL_ID_PREFIX.match(after):
            raise WatchkeeperError(
                f"{text!r}: after '@' write a version number, an alias or 'latest', such as "
                f"{name}@3 or {name}@champion"
            )
        return cls(name, None, after)

    def __str__(self) -> str:
        after = self.version if self.version is not None else self.label
        return self.name if after is None else f"{self.name}@{after}"


def find_version(db: Database, ref: ModelRef, repo_id: int | None) -> dict[str, Any]:
    """The version a reference names, searched in one repo or all.

    `MODEL` and `MODEL@latest` name the newest version, `MODEL@current` the model's current
    one; a bare reference that names no model is tried as a run id, a unique prefix or suffix.
    """
    model_rows = _models_named(db, ref.name, repo_id)
    if not model_rows:
        if ref.version is None and ref.label is None:
            by_run = _version_of_run(db, ref.name)
            if by_run is not None:
                return by_run
            by_global_id = version_of_global_id(db, ref.name)
            if by_global_id is not None:
                return by_global_id
        known = sorted({str(row[0]) for row in db.execute(_MODELS_WITH_VERSIONS).fetchall()})
        listing = ", ".join(known) if known else "none yet (train one with `watchkeeper train`)"
        scope = "in this repo" if repo_id is not None else "in the ledger"
        raise WatchkeeperError(
            f"no model named {ref.name!r} {scope}, nor a run; models: {listing} (a run id, "
            "or a unique start or end of one, also names a version)"
        )
    repos = {row["repo_path"] for row in model_rows}
    if len(repos) > 1:
        raise WatchkeeperError(
            f"several repos have a model named {ref.name!r} ({', '.join(sorted(repos))}); "
            "run the command inside the repo you mean"
        )
    model_id = int(model_rows[0]["id"])
    if ref.version is not None:
        row = _one_version(db, "v.model_id = ? AND v.version = ?", [model_id, ref.version])
        if row is None:
            raise WatchkeeperError(
                f"model {ref.name!r} has no version {ref.version}; its versions are "
                f"{_version_listing(db, model_id)}"
            )
        return row
    if ref.label in (None, LATEST):
        row = _one_version(db, "v.model_id = ? ORDER BY v.version DESC LIMIT 1", [model_id])
    elif ref.label == CURRENT:
        row = current_version(db, model_id)
        if row is None:
            raise WatchkeeperError(
                f"model {ref.name!r} has no current version yet: none succeeded with its "
                f"declared params; promote one with `watchkeeper models promote {ref.name}@N`"
            )
        return row
    else:
        row = _one_version(
            db,
            "v.id = (SELECT version_id FROM version_aliases WHERE model_id = ? AND alias = ?"
            " AND moved_at IS NULL)",
            [model_id, ref.label],
        )
        if row is None:
            row = version_of_global_id(db, ref.label, model_id)
        if row is None:
            aliases = ", ".join(current_aliases(db, model_id)) or "none"
            raise WatchkeeperError(
                f"model {ref.name!r} has no alias {ref.label!r} (its aliases: {aliases}); set "
                f"one with `watchkeeper models alias {ref.name}@N {ref.label}`"
            )
        return row
    if row is None:
        raise WatchkeeperError(f"model {ref.name!r} has no versions yet")
    return row


_MODELS_WITH_VERSIONS = (
    "SELECT DISTINCT m.name FROM models m WHERE EXISTS "
    "(SELECT 1 FROM model_versions v WHERE v.model_id = m.id)"
)


def _models_named(db: Database, name: str, repo_id: int | None) -> list[dict[str, Any]]:
    sql = (
        "SELECT m.id, r.path AS repo_path FROM models m JOIN repos r ON r.id = m.repo_id "
        "WHERE m.name = ? AND EXISTS (SELECT 1 FROM model_versions v WHERE v.model_id = m.id)"
    )
    parameters: list[Any] = [name]
    if repo_id is not None:
        sql += " AND r.id = ?"
        parameters.append(repo_id)
    return list(db.query(sql, parameters))


def _one_version(db: Database, where: str, parameters: list[Any]) -> dict[str, Any] | None:
    row = next(iter(db.query(VERSION_SELECT + " WHERE " + where, parameters)), None)
    return decode_row(row) if row else None


def _version_listing(db: Database, model_id: int) -> str:
    numbers = [
        int(row[0])
        for row in db.execute(
            "SELECT version FROM model_versions WHERE model_id = ? ORDER BY version LIMIT ?",
            [model_id, MAX_LISTED_VERSIONS + 1],
        ).fetchall()
    ]
    if len(numbers) <= MAX_LISTED_VERSIONS:
        return ", ".join(map(str, numbers))
    newest = db.execute(
        "SELECT MAX(version) FROM model_versions WHERE model_id = ?", [model_id]
    ).fetchone()[0]
    return f"{numbers[0]} to {newest}"


def _version_of_run(db: Database, text: str) -> dict[str, Any] | None:
    """The version recorded by the run `text` names (its id, a unique prefix or suffix)."""
    for where, parameters in (
        ("v.run_id = ?", [text]),
        (
            "substr(v.run_id, 1, ?) = ? OR substr(v.run_id, -?) = ?",
            [len(text), text, len(text), text],
        ),
    ):
        rows = list(db.query(VERSION_SELECT + " WHERE " + where + " LIMIT 6", parameters))
        if len(rows) == 1:
            return decode_row(rows[0])
        if rows:
            raise WatchkeeperError(
                f"{text!r} matches the runs of several versions "
                f"({', '.join(str(row['run_id']) for row in rows[:5])}); give more of the run id"
            )
    return None


def version_of_global_id(
    db: Database, text: str, model_id: int | None = None
) -> dict[str, Any] | None:
    """The version whose global id is `text` or starts with it (None when none does).

    Two or more matches raise an error asking for more digits, as git does for a short sha.
    """
    prefix = text.lower()
    if not GLOBAL_ID_PREFIX.match(prefix):
        return None
    where = "v.global_id >= ? AND v.global_id < ?"
    parameters: list[Any] = [prefix, prefix + "g"]
    if model_id is not None:
        where += " AND v.model_id = ?"
        parameters.append(model_id)
    rows = list(db.query(VERSION_SELECT + " WHERE " + where + " LIMIT 6", parameters))
    if len(rows) > 1:
        raise WatchkeeperError(
            f"{text!r} starts the global ids of several versions "
            f"({', '.join(str(row['global_id'])[:12] for row in rows[:5])}); give more digits"
        )
    return decode_row(rows[0]) if rows else None


def current_aliases(db: Database, model_id: int) -> list[str]:
    """A model's aliases as `alias=vN`, in name order."""
    return [
        f"{alias}=v{version}"
        for alias, version in db.execute(
            "SELECT a.alias, v.version FROM version_aliases a JOIN model_versions v "
            "ON v.id = a.version_id WHERE a.model_id = ? AND a.moved_at IS NULL ORDER BY a.alias",
            [model_id],
        ).fetchall()
    ]


def current_version(db: Database, model_id: int) -> dict[str, Any] | None:
    """The model's current version: what its staleness is judged against.

    It is the newest succeeded version trained with the declared params (not an experiment,
    nor a reproduction of another version),
    unless a version was promoted after that one ended: then it is the promoted version.
    Newest is by end time, so that a teammate's older version pulled later (and numbered
    later here) does not replace a newer one.
    A version marked deleted is never current.
    """
    trained = _one_version(
        db,
        "v.model_id = ? AND v.status = 'succeeded' AND v.experiment = 0 "
        "AND v.reproduction_of IS NULL AND v.deleted_at IS NULL "
        "ORDER BY COALESCE(v.ended_at, 0) DESC, v.version DESC LIMIT 1",
        [model_id],
    )
    promoted = db.execute(
        "SELECT p.version_id, p.at FROM model_promotions p JOIN model_versions v "
        "ON v.id = p.version_id WHERE p.model_id = ? AND v.status = 'succeeded' "
        "AND v.deleted_at IS NULL ORDER BY p.at DESC, p.id DESC LIMIT 1",
        [model_id],
    ).fetchone()
    if promoted is None:
        return trained
    if trained is not None and (trained["ended_at"] or 0) > promoted[1]:
        return trained
    return _one_version(db, "v.id = ?", [promoted[0]])


def current_version_of(db: Database, repo_id: int, model: str) -> dict[str, Any] | None:
    """`current_version` of the named model of a repo (None when it has none)."""
    row = db.execute(
        "SELECT id FROM models WHERE repo_id = ? AND name = ?", [repo_id, model]
    ).fetchone()
    return current_version(db, int(row[0])) if row else None


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
    """One run by id, or by a unique start or end of one."""
    rows = list(db.query(RUN_SELECT + " WHERE runs.id = ?", [run_id]))
    if not rows and run_id:
        rows = list(
            db.query(
                RUN_SELECT + " WHERE substr(runs.id, 1, ?) = ? OR substr(runs.id, -?) = ?"
                " ORDER BY runs.created_at DESC",
                [len(run_id), run_id, len(run_id), run_id],
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
