"""The ledger schema, as sqlite-utils migrations applied in order and recorded once each."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATION_SET = "watchkeeper-ledger"

migrations = Migrations(MIGRATION_SET)

RUN_STATES = (
    "queued",
    "starting",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
    "lost",
)
VERSION_STATUSES = ("running", "succeeded", "failed", "cancelled", "interrupted", "lost")
ALERT_KINDS = ("stale", "drift", "run_failed", "watch")


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
def m002_data_snapshot_skipped(db: Database) -> None:
    """Data snapshots list the entries left out of their fingerprint (JSON: path and reason)."""
    db.execute("ALTER TABLE data_snapshots ADD COLUMN skipped TEXT")


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
    "coding_time_days",
)
