"""The Models page's queries: ordered version ids, windows of display rows, a version's detail."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from desktop_app.queries.connection import has_tables, parse_json
from desktop_app.queries.formatting import format_time

if TYPE_CHECKING:
    import numpy as np

    from agent.runs.step_queries import StepSeries

MODEL_VERSION_COLUMNS: tuple[tuple[str, str], ...] = (
    # (heading, SQL expression used for sorting)
    ("Model", "m.name"),
    ("Version", "mv.version"),
    ("Status", "mv.status"),
    ("Commit", "mv.commit_sha"),
    ("Dirty", "mv.dirty"),
    ("Metrics", "mv.metrics"),
    ("Executor", "mv.executor"),
    ("Host", "mv.host"),
    ("Started", "mv.started_at"),
    ("Duration", "(mv.ended_at - mv.started_at)"),
    ("Names", "mv.experiment"),
    ("By", "mv.author"),
)
NAMES_COLUMN = 10
BY_COLUMN = 11
"""Who trained the version: you, or a teammate's name marked `(pulled)`."""
COLUMNS_OLDER_LEDGERS_LACK = {NAMES_COLUMN: "experiment", BY_COLUMN: "author"}
"""Experiment mark and current aliases (the table adds `current` for the current version)."""


@dataclass(frozen=True)
class ExtraColumn:
    """A param or metric shown as its own column of the Models table."""

    kind: str  # "param" or "metric"
    name: str

    @property
    def json_column(self) -> str:
        return "mv.params" if self.kind == "param" else "mv.metrics"

    @property
    def path(self) -> str:
        """The JSON path of the value (bound as a parameter, so any name is safe)."""
        return '$."' + self.name.replace('"', "") + '"'

    def sort_sql(self) -> str:
        """The value itself (numbers sort as numbers), NULL where a version lacks it."""
        column = self.json_column
        return f"(CASE WHEN json_valid({column}) THEN json_extract({column}, ?) END)"

    def display_sql(self) -> str:
        """The value as the table shows it: reals as %.4g, booleans as true/false."""
        column = self.json_column
        return (
            f"CASE WHEN json_valid({column}) THEN (CASE json_type({column}, ?)"
            f" WHEN 'real' THEN printf('%.4g', json_extract({column}, ?))"
            " WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'"
            f" ELSE coalesce(json_extract({column}, ?), '') END) ELSE '' END"
        )


def version_columns(connection: sqlite3.Connection | None) -> set[str]:
    """The columns of model_versions (an older ledger lacks the newer ones)."""
    if connection is None:
        return set()
    return {str(row[1]) for row in connection.execute("PRAGMA table_info(model_versions)")}


@dataclass
class ModelChoice:
    """A model with versions, and the param and metric names its versions carry."""

    id: int
    name: str
    repo: str
    params: list[str]
    metrics: list[str]

    @property
    def label(self) -> str:
        return self.name


def model_choices(connection: sqlite3.Connection | None) -> list[ModelChoice]:
    """Every model with at least one version, by name, with its param and metric names."""
    if not has_tables(connection, "models", "model_versions"):
        return []
    assert connection is not None
    has_repos = has_tables(connection, "repos")
    repo = "coalesce(r.path, '')" if has_repos else "''"
    join = " LEFT JOIN repos r ON r.id = m.repo_id" if has_repos else ""
    models = [
        ModelChoice(int(row[0]), str(row[1]), str(row[2]), [], [])
        for row in connection.execute(
            f"SELECT m.id, m.name, {repo} FROM models m{join} WHERE EXISTS"
            " (SELECT 1 FROM model_versions v WHERE v.model_id = m.id) ORDER BY m.name, m.id"
        )
    ]
    for model in models:
        model.params = _json_keys(connection, "params", model.id)
        model.metrics = _json_keys(connection, "metrics", model.id)
    return models


def _json_keys(connection: sqlite3.Connection, column: str, model_id: int) -> list[str]:
    rows = connection.execute(
        f"SELECT DISTINCT j.key FROM model_versions v, json_each(v.{column}) j"
        f" WHERE v.model_id = ? AND json_valid(v.{column}) AND json_type(v.{column}) = 'object'"
        " ORDER BY j.key",
        [model_id],
    )
    return [str(row[0]) for row in rows]


def current_version_ids(connection: sqlite3.Connection | None) -> set[int]:
    """The id of every model's current version, judged as the CLI judges it."""
    if not has_tables(connection, "models", "model_versions", "model_promotions"):
        return set()
    assert connection is not None
    from sqlite_utils import Database

    from agent.ledger.queries import current_version

    db = Database(connection)
    model_ids = [int(row[0]) for row in connection.execute("SELECT id FROM models")]
    currents = (current_version(db, model_id) for model_id in model_ids)
    return {int(version["id"]) for version in currents if version is not None}


def version_filter_clause(
    text: str, status: str, model_id: int | None = None
) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) for the Models table's filter box, status and model
    choices."""
    conditions: list[str] = []
    parameters: list[Any] = []
    if model_id is not None:
        conditions.append("mv.model_id = ?")
        parameters.append(model_id)
    if text.strip():
        pattern = f"%{text.strip()}%"
        conditions.append(
            "(m.name LIKE ? OR mv.commit_sha LIKE ? OR mv.executor LIKE ? OR mv.host LIKE ?)"
        )
        parameters += [pattern] * 4
    if status:
        conditions.append("mv.status = ?")
        parameters.append(status)
    clause = " WHERE " + " AND ".join(conditions) if conditions else ""
    return clause, parameters


def ordered_version_ids(
    connection: sqlite3.Connection | None,
    *,
    text: str = "",
    status: str = "",
    sort_column: int | None = None,
    descending: bool = True,
    limit: int | None = None,
    model_id: int | None = None,
    extra_columns: Sequence[ExtraColumn] = (),
) -> list[int]:
    """Ids of the model versions matching the filter, in display order (ids only: cheap to hold).

    With no sort column the order is the ledger's recording order (newest first), read straight
    from the primary key without sorting.
    """
    if not has_tables(connection, "models", "model_versions"):
        return []
    assert connection is not None
    where, parameters = version_filter_clause(text, status, model_id)
    if "deleted_at" in version_columns(connection):  # versions `models delete` marked
        where += (" AND " if where else " WHERE ") + "mv.deleted_at IS NULL"
    direction = "DESC" if descending else "ASC"
    order = ""
    order_parameters: list[Any] = []
    if sort_column is not None and sort_column >= len(MODEL_VERSION_COLUMNS):
        extra = extra_columns[sort_column - len(MODEL_VERSION_COLUMNS)]
        # Versions without the value go last either way.
        order = f"{extra.sort_sql()} IS NULL, {extra.sort_sql()} {direction}, "
        order_parameters = [extra.path, extra.path]
    elif sort_column in COLUMNS_OLDER_LEDGERS_LACK and (
        COLUMNS_OLDER_LEDGERS_LACK[sort_column] not in version_columns(connection)
    ):
        order = ""
    elif sort_column is not None:
        order = f"{MODEL_VERSION_COLUMNS[sort_column][1]} {direction}, "
    needs_models = bool(text.strip()) or sort_column == 0
    join = " JOIN models m ON m.id = mv.model_id" if needs_models else ""
    sql = f"SELECT mv.id FROM model_versions mv{join}{where} ORDER BY {order}mv.id {direction}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    cursor = connection.cursor()
    cursor.row_factory = None
    return [row[0] for row in cursor.execute(sql, [*parameters, *order_parameters])]


# The Models table's display values, formatted by SQLite itself: a window of rows then costs the
# worker almost no Python, so it hardly competes with the Qt thread for the interpreter lock.
# Same output as format_metrics, format_time and format_duration (a test keeps them in step).
VERSION_ROWS_SQL = """
SELECT mv.id, m.name, mv.version, {state},
  substr(coalesce(mv.commit_sha, ''), 1, 10),
  CASE WHEN mv.dirty THEN 'dirty' ELSE '' END,
  CASE WHEN json_valid(mv.metrics) THEN coalesce((
    SELECT group_concat(key || '=' || CASE WHEN type = 'real' THEN printf('%.4g', value)
                                           ELSE value END, ' ')
    FROM (SELECT key, value, type FROM json_each(mv.metrics) LIMIT 3)), '')
  ELSE '' END,
  coalesce(mv.executor, ''), coalesce(mv.host, ''),
  CASE WHEN mv.started_at THEN strftime('%Y-%m-%d %H:%M', mv.started_at, 'unixepoch',
                                        'localtime') ELSE '' END,
  CASE WHEN mv.started_at AND mv.ended_at THEN (
    SELECT CASE WHEN d < 60 THEN d || 's'
                WHEN d < 3600 THEN (d / 60) || 'm ' || printf('%02d', d % 60) || 's'
                ELSE (d / 3600) || 'h ' || printf('%02d', d % 3600 / 60) || 'm' END
    FROM (SELECT max(0, CAST(mv.ended_at - mv.started_at AS INTEGER)) AS d))
  ELSE '' END,
  {names},
  {by}{extra}
FROM model_versions mv JOIN models m ON m.id = mv.model_id{verdict_join}
WHERE mv.id IN ({marks})
"""
NAMES_SQL = (
    "trim(CASE WHEN mv.experiment THEN 'experiment ' ELSE '' END || coalesce((SELECT"
    " group_concat('@' || a.alias, ' ') FROM (SELECT alias FROM version_aliases"
    " WHERE version_id = mv.id AND moved_at IS NULL ORDER BY alias) a), ''))"
)
# The name part of `Name <email>`, "you" for an own version never pushed, "(pulled)" when it
# came from a teammate (as `watchkeeper models list` shows it).
BY_SQL = (
    "CASE WHEN mv.author IS NULL THEN 'you' WHEN instr(mv.author, ' <') > 0"
    " THEN substr(mv.author, 1, instr(mv.author, ' <') - 1) ELSE mv.author END"
    " || CASE WHEN mv.pulled_at IS NOT NULL THEN ' (pulled)' ELSE '' END"
)
# A succeeded version that the model's verdict is about shows that verdict (fresh, stale), as
# `watchkeeper models list` does; every other version shows its run status.
VERSION_STATE_SQL = (
    "CASE WHEN mv.status = 'succeeded' AND vd.verdict IS NOT NULL THEN vd.verdict"
    " WHEN mv.status = 'running' AND EXISTS (SELECT 1 FROM runs q WHERE q.id = mv.run_id"
    " AND q.state = 'queued') THEN 'queued'"
    " ELSE mv.status END"
)
VERDICT_JOIN_SQL = " LEFT JOIN model_verdicts vd ON vd.version_id = mv.id"


def version_rows(
    connection: sqlite3.Connection | None,
    ids: Sequence[int],
    extra_columns: Sequence[ExtraColumn] = (),
) -> dict[int, tuple]:
    """Display values of the Models table for the given version ids (one window of rows): the
    base columns, then one value per extra column."""
    if connection is None or not ids:
        return {}
    cursor = connection.cursor()
    cursor.row_factory = None
    judged = has_tables(connection, "model_verdicts")
    named = "experiment" in version_columns(connection) and has_tables(
        connection, "version_aliases"
    )
    sql = VERSION_ROWS_SQL.format(
        marks=",".join("?" * len(ids)),
        state=VERSION_STATE_SQL if judged else "mv.status",
        verdict_join=VERDICT_JOIN_SQL if judged else "",
        names=NAMES_SQL if named else "''",
        by=BY_SQL if {"author", "pulled_at"} <= version_columns(connection) else "'you'",
        extra="".join(f",\n  {column.display_sql()}" for column in extra_columns),
    )
    paths = [path for column in extra_columns for path in [column.path] * 3]
    return {row[0]: row[1:] for row in cursor.execute(sql, [*paths, *ids])}


@dataclass
class VersionDetail:
    """Everything the detail pane shows about one model version."""

    id: int
    model: str
    model_id: int
    version: int
    status: str
    repo_path: str
    commit_sha: str
    dirty: bool
    diff_hash: str
    train_command: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    data: dict[str, Any]
    code: dict[str, Any]
    artifacts: dict[str, str]
    executor: str
    host: str
    run_id: str
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    snapshots: dict[str, str] = field(default_factory=dict)  # dep path -> "taken at" text
    experiment: bool = False
    current: bool = False
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)  # {"at": epoch, "text": …}
    metrics_extra: Any = None  # the non-numeric part of the final-metrics file
    step_metrics: list[str] = field(default_factory=list)
    author: str = ""  # `Name <email>` of who trained it ("" for an own version never pushed)
    pulled_from: str = ""  # the git remote it was pulled from ("" for an own version)

    @property
    def label(self) -> str:
        return f"{self.model}@{self.version}"


def version_detail(connection: sqlite3.Connection | None, version_id: int) -> VersionDetail | None:
    """The lineage, metrics and artifacts of one version."""
    if not has_tables(connection, "models", "model_versions"):
        return None
    assert connection is not None
    has_repos = has_tables(connection, "repos")
    repo_select = "r.path AS repo_path" if has_repos else "'' AS repo_path"
    repo_join = " LEFT JOIN repos r ON r.id = m.repo_id" if has_repos else ""
    row = connection.execute(
        f"SELECT mv.*, m.name AS model_name, {repo_select}"
        " FROM model_versions mv JOIN models m ON m.id = mv.model_id"
        f"{repo_join} WHERE mv.id = ?",
        (version_id,),
    ).fetchone()
    if row is None:
        return None
    data = parse_json(row["data"], {})
    columns = set(row.keys())  # an older ledger lacks the newer columns
    detail = VersionDetail(
        id=int(row["id"]),
        model=row["model_name"],
        model_id=int(row["model_id"]),
        version=int(row["version"]),
        status=row["status"] or "",
        repo_path=row["repo_path"] or "",
        commit_sha=row["commit_sha"] or "",
        dirty=bool(row["dirty"]),
        diff_hash=row["diff_hash"] or "",
        train_command=row["train_command"] or "",
        params=parse_json(row["params"], {}),
        metrics=parse_json(row["metrics"], {}),
        data=data,
        code=parse_json(row["code"], {}),
        artifacts=parse_json(row["artifacts"], {}),
        executor=row["executor"] or "",
        host=row["host"] or "",
        run_id=row["run_id"] or "",
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        exit_code=row["exit_code"],
        experiment=bool(row["experiment"]) if "experiment" in columns else False,
        metrics_extra=parse_json(row["metrics_extra"], None)
        if "metrics_extra" in columns
        else None,
        author=(row["author"] or "") if "author" in columns else "",
        pulled_from=(row["pulled_from"] or "") if "pulled_from" in columns else "",
    )
    _add_names(connection, detail)
    snapshot_ids = [entry.get("snapshot_id") for entry in data.values() if isinstance(entry, dict)]
    if snapshot_ids and has_tables(connection, "data_snapshots"):
        taken = {
            int(r["id"]): r["taken_at"]
            for r in connection.execute(
                f"SELECT id, taken_at FROM data_snapshots WHERE id IN "
                f"({','.join('?' * len(snapshot_ids))})",
                snapshot_ids,
            )
        }
        for dep, entry in data.items():
            if isinstance(entry, dict) and entry.get("snapshot_id") in taken:
                detail.snapshots[dep] = format_time(taken[entry["snapshot_id"]])
    return detail


def _add_names(connection: sqlite3.Connection, detail: VersionDetail) -> None:
    """Aliases, tags, notes, the current mark and the step-metric names of a version."""
    if not has_tables(connection, "version_aliases", "version_tags", "version_notes"):
        return
    from sqlite_utils import Database

    from agent.ledger.queries import current_version
    from agent.ledger.versions import labels_for

    db = Database(connection)
    labels = labels_for(db, [detail.id])[detail.id]
    detail.aliases, detail.tags, detail.notes = labels["aliases"], labels["tags"], labels["notes"]
    current = current_version(db, detail.model_id)
    detail.current = current is not None and int(current["id"]) == detail.id
    if has_tables(connection, "step_metrics"):
        from agent.runs.step_queries import step_metric_names

        detail.step_metrics = step_metric_names(connection, detail.id)


@dataclass
class MetricSeries:
    """One metric across a model's versions, as arrays in version order."""

    model: str
    metric: str
    versions: np.ndarray  # version numbers (float64, for plotting)
    values: np.ndarray
    experiment: np.ndarray  # bool per version
    promoted: np.ndarray  # bool per version: ever promoted
    current: int | None  # the current version's number


def metric_series(
    connection: sqlite3.Connection | None, model_id: int, metric: str
) -> MetricSeries:
    """The numeric values of `metric` over every version of a model that recorded it.

    One SQL pass over the model's versions; the arrays go straight to the chart.
    """
    import numpy as np

    empty = np.zeros(0)
    name = ""
    if not has_tables(connection, "models", "model_versions"):
        return MetricSeries(
            name, metric, empty, empty, empty.astype(bool), empty.astype(bool), None
        )
    assert connection is not None
    row = connection.execute("SELECT name FROM models WHERE id = ?", [model_id]).fetchone()
    name = str(row[0]) if row else ""
    path = '$."' + metric.replace('"', "") + '"'
    experiment = "v.experiment" if "experiment" in version_columns(connection) else "0"
    cursor = connection.cursor()
    cursor.row_factory = None
    # Each row's JSON is parsed twice (checked, then read), not three times.
    rows = cursor.execute(
        "SELECT version, value, experiment FROM (SELECT v.version AS version, CASE WHEN"
        f" json_valid(v.metrics) THEN json_extract(v.metrics, ?) END AS value, {experiment}"
        " AS experiment FROM model_versions v WHERE v.model_id = ?)"
        " WHERE typeof(value) IN ('integer', 'real') ORDER BY version",
        [path, model_id],
    ).fetchall()
    table = np.array(rows, dtype=np.float64).reshape(len(rows), 3)
    versions = table[:, 0]
    promoted_numbers: list[int] = []
    current: int | None = None
    if has_tables(connection, "model_promotions"):
        promoted_numbers = [
            int(r[0])
            for r in cursor.execute(
                "SELECT DISTINCT v.version FROM model_promotions p JOIN model_versions v"
                " ON v.id = p.version_id WHERE p.model_id = ?",
                [model_id],
            )
        ]
        from sqlite_utils import Database

        from agent.ledger.queries import current_version

        found = current_version(Database(connection), model_id)
        current = int(found["version"]) if found else None
    return MetricSeries(
        model=name,
        metric=metric,
        versions=versions,
        values=table[:, 1],
        experiment=table[:, 2] != 0,
        promoted=np.isin(versions, np.array(promoted_numbers, dtype=np.float64)),
        current=current,
    )


def step_names(connection: sqlite3.Connection | None, version_ids: Sequence[int]) -> list[str]:
    """The step-metric names any of the versions recorded, sorted."""
    if not version_ids or not has_tables(connection, "step_metrics"):
        return []
    assert connection is not None
    marks = ",".join("?" * len(version_ids))
    rows = connection.execute(
        f"SELECT DISTINCT name FROM step_metrics WHERE version_id IN ({marks}) ORDER BY name",
        list(version_ids),
    )
    return [str(row[0]) for row in rows]


def learning_curves(
    connection: sqlite3.Connection | None, version_ids: Sequence[int], metric: str
) -> dict[int, StepSeries]:
    """The step points of `metric` for each version that has them: version id -> series."""
    if not has_tables(connection, "step_metrics"):
        return {}
    assert connection is not None
    from agent.runs.step_queries import load_step_metrics

    curves = {}
    for version_id in version_ids:
        series = load_step_metrics(connection, version_id, [metric]).get(metric)
        if series is not None:
            curves[version_id] = series
    return curves


def comparison_report(
    connection: sqlite3.Connection | None, version_ids: Sequence[int]
) -> dict[str, Any]:
    """The versions side by side as `watchkeeper models compare --json` reports them."""
    if not version_ids or not has_tables(connection, "models", "model_versions", "repos"):
        return {"params": [], "metrics": [], "differing_params": [], "versions": []}
    assert connection is not None
    from sqlite_utils import Database

    from agent.ledger.queries import VERSION_SELECT, decode_row
    from agent.ledger.versions import comparison

    db = Database(connection)
    marks = ",".join("?" * len(version_ids))
    rows = {
        int(row["id"]): decode_row(row)
        for row in db.query(VERSION_SELECT + f" WHERE v.id IN ({marks})", list(version_ids))
    }
    ordered = [rows[version_id] for version_id in version_ids if version_id in rows]
    return comparison(db, ordered)
