"""The ledger schema, as sqlite-utils migrations applied in order and recorded once each."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from agent.runs.states import RUN_STATES, VERSION_STATUSES

MIGRATION_SET = "watchkeeper-ledger"

migrations = Migrations(MIGRATION_SET)

ALERT_KINDS = ("stale", "drift", "run_failed", "watch")
BLOB_KINDS = ("artifact", "data", "diff")


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


@migrations()
def m001_initial_schema(db: Database) -> None:
    """Every table of the ledger: repos, git activity, data, models, runs, alerts, coding time."""
    statements = [
        """
        CREATE TABLE repos (
            id INTEGER PRIMARY KEY,
            path TEXT UNIQUE NOT NULL,
            name TEXT,
            added_at REAL
        )""",
        """
        CREATE TABLE commits (
            id INTEGER PRIMARY KEY,
            repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
            sha TEXT NOT NULL,
            author_name TEXT,
            author_email TEXT,
            author_time INTEGER,
            author_tz_minutes INTEGER,
            commit_time INTEGER,
            is_merge INTEGER,
            UNIQUE (repo_id, sha)
        )""",
        "CREATE INDEX idx_commits_author_time ON commits(author_time)",
        """
        CREATE TABLE activity_events (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('commit', 'save')),
            repo_id INTEGER REFERENCES repos(id) ON DELETE CASCADE,
            path TEXT,
            UNIQUE (kind, ts, repo_id, path)
        )""",
        "CREATE INDEX idx_activity_events_ts ON activity_events(ts)",
        """
        CREATE TABLE data_sources (
            id INTEGER PRIMARY KEY,
            path TEXT UNIQUE NOT NULL,
            kind TEXT CHECK (kind IN ('file', 'folder')),
            added_at REAL
        )""",
        """
        CREATE TABLE data_snapshots (
            id INTEGER PRIMARY KEY,
            source_id INTEGER NOT NULL REFERENCES data_sources(id) ON DELETE CASCADE,
            fingerprint TEXT NOT NULL,
            n_files INTEGER,
            total_bytes INTEGER,
            taken_at REAL,
            UNIQUE (source_id, fingerprint)
        )""",
        """
        CREATE TABLE data_snapshot_files (
            snapshot_id INTEGER NOT NULL REFERENCES data_snapshots(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            size INTEGER,
            mtime_ns INTEGER,
            digest TEXT,
            PRIMARY KEY (snapshot_id, path)
        )""",
        "CREATE INDEX idx_data_snapshot_files_digest ON data_snapshot_files(digest)",
        """
        CREATE TABLE column_profiles (
            digest TEXT PRIMARY KEY,
            profile TEXT
        )""",
        """
        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            UNIQUE (repo_id, name)
        )""",
        f"""
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            model_id INTEGER REFERENCES models(id) ON DELETE CASCADE,
            state TEXT NOT NULL CHECK (state IN ({_sql_list(RUN_STATES)})),
            executor TEXT,
            remote TEXT,
            host TEXT,
            remote_job_id TEXT,
            pid INTEGER,
            run_dir TEXT,
            log_path TEXT,
            log_offset INTEGER DEFAULT 0,
            exit_code INTEGER,
            created_at REAL,
            started_at REAL,
            ended_at REAL,
            detail TEXT
        )""",
        "CREATE INDEX idx_runs_model ON runs(model_id)",
        "CREATE INDEX idx_runs_state ON runs(state)",
        f"""
        CREATE TABLE model_versions (
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ({_sql_list(VERSION_STATUSES)})),
            commit_sha TEXT,
            dirty INTEGER,
            diff_hash TEXT,
            train_command TEXT,
            params TEXT,
            metrics TEXT,
            data TEXT,
            code TEXT,
            artifacts TEXT,
            executor TEXT,
            host TEXT,
            remote_job_id TEXT,
            run_id TEXT REFERENCES runs(id) ON DELETE SET NULL,
            started_at REAL,
            ended_at REAL,
            exit_code INTEGER,
            UNIQUE (model_id, version)
        )""",
        "CREATE INDEX idx_model_versions_run ON model_versions(run_id)",
        f"""
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            created_at REAL,
            model_id INTEGER REFERENCES models(id) ON DELETE CASCADE,
            kind TEXT CHECK (kind IN ({_sql_list(ALERT_KINDS)})),
            message TEXT,
            reasons TEXT,
            versions TEXT,
            drift TEXT,
            dedupe_key TEXT UNIQUE,
            acknowledged_at REAL
        )""",
        "CREATE INDEX idx_alerts_model ON alerts(model_id)",
        """
        CREATE TABLE coding_time_days (
            date TEXT NOT NULL,
            identity TEXT NOT NULL,
            coding_minutes REAL,
            git_hours_minutes REAL,
            timeout_minutes REAL,
            model_version_id INTEGER REFERENCES model_versions(id) ON DELETE SET NULL,
            PRIMARY KEY (date, identity)
        )""",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m002_alert_lifecycle(db: Database) -> None:
    """Alerts get a cause, a resolution and dated updates; models get their latest verdict.

    An unresolved alert is unique per model and cause. Stale alerts raised before causes
    existed are resolved: the next check raises them again under their cause.
    """
    statements = [
        "ALTER TABLE alerts ADD COLUMN cause TEXT",
        "ALTER TABLE alerts ADD COLUMN version_id INTEGER",
        "ALTER TABLE alerts ADD COLUMN updated_at REAL",
        "ALTER TABLE alerts ADD COLUMN resolved_at REAL",
        "ALTER TABLE alerts ADD COLUMN resolution TEXT",
        "UPDATE alerts SET resolved_at = created_at, resolution = 'rechecked after an upgrade'"
        " WHERE kind IN ('stale', 'drift')",
        "CREATE UNIQUE INDEX idx_alerts_open_cause ON alerts(model_id, cause)"
        " WHERE resolved_at IS NULL AND cause IS NOT NULL",
        """
        CREATE TABLE alert_updates (
            id INTEGER PRIMARY KEY,
            alert_id INTEGER NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
            at REAL NOT NULL,
            message TEXT NOT NULL,
            reasons TEXT,
            drift TEXT
        )""",
        "CREATE INDEX idx_alert_updates_alert ON alert_updates(alert_id)",
        """
        CREATE TABLE model_verdicts (
            repo TEXT NOT NULL,
            model TEXT NOT NULL,
            verdict TEXT NOT NULL,
            version INTEGER,
            version_id INTEGER,
            latest_status TEXT,
            reasons TEXT,
            error TEXT,
            checked_at REAL NOT NULL,
            PRIMARY KEY (repo, model)
        )""",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m003_data_snapshot_skipped(db: Database) -> None:
    """Data snapshots list the entries left out of their fingerprint (JSON: path and reason)."""
    if "skipped" not in db["data_snapshots"].columns_dict:  # added once under another name
        db.execute("ALTER TABLE data_snapshots ADD COLUMN skipped TEXT")


@migrations()
def m004_coding_time_views(db: Database) -> None:
    """The stored coding-time estimate every view reads: its report and its minutes per repo."""
    db.execute(
        """
        CREATE TABLE coding_time_repo_days (
            date TEXT NOT NULL,
            identity TEXT NOT NULL,
            repo TEXT NOT NULL,
            coding_minutes REAL,
            PRIMARY KEY (date, identity, repo)
        )"""
    )
    db.execute(
        """
        CREATE TABLE coding_time_estimate (
            identity TEXT PRIMARY KEY,
            computed_at REAL NOT NULL,
            trigger TEXT,
            events_through_id INTEGER,
            fingerprint TEXT,
            zone TEXT,
            model_version_id INTEGER,
            report TEXT
        )"""
    )


@migrations()
def m005_experiments_and_version_names(db: Database) -> None:
    """Experiment versions, promotions (the model's current version), aliases with their
    history, tags and notes.

    An experiment is a version trained with params that differ from the declared ones; it does
    not replace the model's current version. The current version is the one promoted last,
    unless a non-experiment version succeeded after that promotion.
    """
    statements = [
        "ALTER TABLE model_versions ADD COLUMN experiment INTEGER NOT NULL DEFAULT 0",
        """
        CREATE TABLE model_promotions (
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            version_id INTEGER NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            at REAL NOT NULL,
            params_written INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX idx_model_promotions_model ON model_promotions(model_id, at)",
        """
        CREATE TABLE version_aliases (
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            alias TEXT NOT NULL,
            version_id INTEGER NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            set_at REAL NOT NULL,
            moved_at REAL
        )""",
        "CREATE UNIQUE INDEX idx_version_aliases_current ON version_aliases(model_id, alias)"
        " WHERE moved_at IS NULL",
        "CREATE INDEX idx_version_aliases_version ON version_aliases(version_id)",
        """
        CREATE TABLE version_tags (
            version_id INTEGER NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            set_at REAL NOT NULL,
            PRIMARY KEY (version_id, key)
        )""",
        """
        CREATE TABLE version_notes (
            id INTEGER PRIMARY KEY,
            version_id INTEGER NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            at REAL NOT NULL,
            text TEXT NOT NULL
        )""",
        "CREATE INDEX idx_version_notes_version ON version_notes(version_id)",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m006_step_metrics(db: Database) -> None:
    """Step metrics of each version in chunks of float64 arrays; extra final-metrics JSON.

    `step_metrics` holds, per run and metric name, chunks of points: `steps_f8` and
    `values_f8` are little-endian float64 arrays of `points` items each, in the order the
    lines were written (from `first_line` on). `step_metric_reads` is how far each run's
    `$WK_METRICS` file has been read, with its line counts.
    """
    statements = [
        """
        CREATE TABLE step_metrics (
            id INTEGER PRIMARY KEY,
            version_id INTEGER NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            run_id TEXT NOT NULL,
            name TEXT NOT NULL,
            first_line INTEGER NOT NULL,
            points INTEGER NOT NULL,
            steps_f8 BLOB NOT NULL,
            values_f8 BLOB NOT NULL
        )""",
        "CREATE INDEX idx_step_metrics_version ON step_metrics(version_id, name, first_line)",
        "CREATE INDEX idx_step_metrics_run ON step_metrics(run_id)",
        """
        CREATE TABLE step_metric_reads (
            run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
            version_id INTEGER REFERENCES model_versions(id) ON DELETE CASCADE,
            byte_offset INTEGER NOT NULL DEFAULT 0,
            lines INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            first_skipped TEXT,
            last_values TEXT,
            file_lines INTEGER NOT NULL DEFAULT 0
        )""",
        "ALTER TABLE model_versions ADD COLUMN metrics_extra TEXT",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m007_sweeps(db: Database) -> None:
    """Sweeps: a grid of param sets trained as versions sharing a sweep id.

    `sweeps` holds each sweep's axes, size, parallelism, target and (on Slurm) its job array;
    `runs.sweep_id` and `model_versions.sweep_id` name the sweep a run and its version belong
    to (NULL outside sweeps).
    """
    statements = [
        """
        CREATE TABLE sweeps (
            id TEXT PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            axes TEXT NOT NULL,
            points INTEGER NOT NULL,
            parallel INTEGER,
            executor TEXT,
            remote TEXT,
            array_job_id TEXT,
            cancelled_at REAL
        )""",
        "CREATE INDEX idx_sweeps_model ON sweeps(model_id)",
        "ALTER TABLE runs ADD COLUMN sweep_id TEXT",
        "CREATE INDEX idx_runs_sweep ON runs(sweep_id) WHERE sweep_id IS NOT NULL",
        "ALTER TABLE model_versions ADD COLUMN sweep_id TEXT",
        "CREATE INDEX idx_model_versions_sweep ON model_versions(sweep_id)"
        " WHERE sweep_id IS NOT NULL",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m008_version_blobs_and_reproductions(db: Database) -> None:
    """Which stored blobs each version references, and which versions reproduce another.

    `version_blobs` has one row per blob a version needs: its artifacts (kind `artifact`, path
    = the out's path), the content of its data deps (kind `data`, path = the repo-relative file)
    and its uncommitted changes (kind `diff`, path `tracked.patch` or `untracked.patch`).
    Digests are `blake3:<hex>`, the name of the blob in the artifact store. Existing versions'
    artifacts are listed from their `artifacts` column.
    """
    statements = [
        f"""
        CREATE TABLE version_blobs (
            version_id INTEGER NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ({_sql_list(BLOB_KINDS)})),
            path TEXT NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY (version_id, kind, path)
        )""",
        "CREATE INDEX idx_version_blobs_digest ON version_blobs(digest)",
        "INSERT OR IGNORE INTO version_blobs (version_id, kind, path, digest) "
        "SELECT v.id, 'artifact', a.key, a.value FROM model_versions v, json_each(v.artifacts) a "
        "WHERE json_valid(v.artifacts) AND json_type(v.artifacts) = 'object' "
        "AND a.type = 'text'",
        "ALTER TABLE model_versions ADD COLUMN reproduction_of INTEGER "
        "REFERENCES model_versions(id) ON DELETE SET NULL",
        "ALTER TABLE model_versions ADD COLUMN reproduction TEXT",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m010_shared_versions(db: Database) -> None:
    """Global ids for versions and alias settings, who trained a version, pulled versions, and
    the shared records exchanged with a git remote.

    Every version and alias row gets a random 32-hex-digit `global_id` (rows made before get one
    here; a trigger gives one to every new row). `author` is the git identity of whoever
    trained it; `pulled_from` and `pulled_at` mark a version that came from a teammate.
    `shared_records` holds each record exactly as it travelled (canonical JSON and its sha256),
    so that a record is immutable once shared and an id clash can be told from a repeat.
    """
    statements = [
        "ALTER TABLE model_versions ADD COLUMN global_id TEXT",
        "ALTER TABLE model_versions ADD COLUMN author TEXT",
        "ALTER TABLE model_versions ADD COLUMN pulled_from TEXT",
        "ALTER TABLE model_versions ADD COLUMN pulled_at REAL",
        "UPDATE model_versions SET global_id = lower(hex(randomblob(16)))",
        "CREATE UNIQUE INDEX idx_model_versions_global_id ON model_versions(global_id)",
        """
        CREATE TRIGGER model_versions_global_id AFTER INSERT ON model_versions
        WHEN NEW.global_id IS NULL BEGIN
            UPDATE model_versions SET global_id = lower(hex(randomblob(16))) WHERE id = NEW.id;
        END""",
        "ALTER TABLE version_aliases ADD COLUMN global_id TEXT",
        "UPDATE version_aliases SET global_id = lower(hex(randomblob(16)))",
        "CREATE UNIQUE INDEX idx_version_aliases_global_id ON version_aliases(global_id)",
        """
        CREATE TRIGGER version_aliases_global_id AFTER INSERT ON version_aliases
        WHEN NEW.global_id IS NULL BEGIN
            UPDATE version_aliases SET global_id = lower(hex(randomblob(16))) WHERE id = NEW.id;
        END""",
        """
        CREATE TABLE shared_records (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            body TEXT NOT NULL,
            pushed_to TEXT,
            received_at REAL NOT NULL
        )""",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m011_deleted_versions(db: Database) -> None:
    """Versions can be marked deleted (`deleted_at`): hidden from listings, their blobs
    collectable by `watchkeeper gc`."""
    db.execute("ALTER TABLE model_versions ADD COLUMN deleted_at REAL")
    db.execute("CREATE INDEX idx_model_versions_deleted ON model_versions(model_id, deleted_at)")


@migrations()
def m012_mlflow_capture(db: Database) -> None:
    """What a version's run logged with MLflow (`mlflow`, JSON): its MLflow run id,
    experiment, params, tags, the declared params it logged otherwise, and whether the
    capture is partial."""
    db.execute("ALTER TABLE model_versions ADD COLUMN mlflow TEXT")


@migrations()
def m013_mlflow_exports(db: Database) -> None:
    """Which versions went to which MLflow tracking server (`mlflow_exports`): the server's
    URI (without credentials), the MLflow experiment and run ids, and the registered model
    version. A finished version with no row for a server is still to be exported there."""
    db.execute(
        """
        CREATE TABLE mlflow_exports (
            version_id INTEGER NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            tracking_uri TEXT NOT NULL,
            experiment_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            model_version TEXT,
            exported_at REAL NOT NULL,
            PRIMARY KEY (tracking_uri, version_id)
        )"""
    )


@migrations()
def m014_snapshot_blobs(db: Database) -> None:
    """Which kept data blobs each snapshot holds (`snapshot_blobs`, filled when `[watch]
    keep_data` keeps a snapshot's content), and snapshots marked deleted (`deleted_at`), whose
    blobs `watchkeeper gc` may then collect."""
    statements = [
        """
        CREATE TABLE snapshot_blobs (
            snapshot_id INTEGER NOT NULL REFERENCES data_snapshots(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY (snapshot_id, path)
        )""",
        "CREATE INDEX idx_snapshot_blobs_digest ON snapshot_blobs(digest)",
        "ALTER TABLE data_snapshots ADD COLUMN deleted_at REAL",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m015_step_metric_times(db: Database) -> None:
    """When each step-metric point was logged (`times_f8`, seconds since the epoch as
    little-endian float64, one per point), where the source gives it (MLflow); NULL when not."""
    db.execute("ALTER TABLE step_metrics ADD COLUMN times_f8 BLOB")


TABLES = (
    "repos",
    "commits",
    "activity_events",
    "data_sources",
    "data_snapshots",
    "data_snapshot_files",
    "column_profiles",
    "models",
    "runs",
    "model_versions",
    "alerts",
    "alert_updates",
    "model_verdicts",
    "coding_time_days",
    "coding_time_repo_days",
    "coding_time_estimate",
    "model_promotions",
    "version_aliases",
    "version_tags",
    "version_notes",
    "step_metrics",
    "step_metric_reads",
    "sweeps",
    "version_blobs",
    "shared_records",
    "mlflow_exports",
    "snapshot_blobs",
)
