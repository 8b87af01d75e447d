"""The ledger file: schema, pragmas, migrations, read-only mode, corruption and locking."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from agent.cli import main
from agent.errors import WatchkeeperError
from agent.ledger import LedgerLockedError, open_ledger, write_transaction
from agent.ledger import schema as schema_module
from agent.ledger.queries import ensure_model, register_repo
from agent.ledger.schema import MIGRATION_SET
from tests.support import ledger_with_clobbered_pages, require

CONTRACT_COLUMNS = {
    "repos": {"id", "path", "name", "added_at"},
    "commits": {
        "id",
        "repo_id",
        "sha",
        "author_name",
        "author_email",
        "author_time",
        "author_tz_minutes",
        "commit_time",
        "is_merge",
    },
    "activity_events": {"id", "ts", "kind", "repo_id", "path"},
    "data_sources": {"id", "path", "kind", "added_at"},
    "data_snapshots": {"id", "source_id", "fingerprint", "n_files", "total_bytes", "taken_at"},
    "data_snapshot_files": {"snapshot_id", "path", "size", "mtime_ns", "digest"},
    "column_profiles": {"digest", "profile"},
    "models": {"id", "repo_id", "name"},
    "model_versions": {
        "id",
        "model_id",
        "version",
        "status",
        "commit_sha",
        "dirty",
        "diff_hash",
        "train_command",
        "params",
        "metrics",
        "data",
        "code",
        "artifacts",
        "executor",
        "host",
        "remote_job_id",
        "run_id",
        "started_at",
        "ended_at",
        "exit_code",
    },
    "runs": {
        "id",
        "model_id",
        "state",
        "executor",
        "remote",
        "host",
        "remote_job_id",
        "pid",
        "run_dir",
        "log_path",
        "log_offset",
        "exit_code",
        "created_at",
        "started_at",
        "ended_at",
        "detail",
    },
    "alerts": {
        "id",
        "created_at",
        "model_id",
        "kind",
        "message",
        "reasons",
        "versions",
        "drift",
        "dedupe_key",
        "acknowledged_at",
    },
    "coding_time_days": {
        "date",
        "identity",
        "coding_minutes",
        "git_hours_minutes",
        "timeout_minutes",
        "model_version_id",
    },
}


def test_default_location_is_watchkeeper_home(watchkeeper_home: Path) -> None:
    db = open_ledger()
    assert (watchkeeper_home / "ledger.db").is_file()
    db.close()


def test_every_contract_table_and_column_exists(tmp_path: Path) -> None:
    db = open_ledger(tmp_path / "ledger.db")
    for table, columns in CONTRACT_COLUMNS.items():
        assert table in db.table_names(), table
        assert columns <= set(db[table].columns_dict), (
            table,
            columns - set(db[table].columns_dict),
        )


def test_wal_foreign_keys_and_busy_timeout_are_on(tmp_path: Path) -> None:
    db = open_ledger(tmp_path / "ledger.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO models (repo_id, name) VALUES (999, 'orphan')")


def test_migrations_are_applied_once_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    open_ledger(path).close()
    db = open_ledger(path)
    applied = list(
        db.query("SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [MIGRATION_SET])
    )
    assert [row["name"] for row in applied] == [
        "m001_initial_schema",
        "m002_alert_lifecycle",
        "m003_data_snapshot_skipped",
        "m004_coding_time_views",
        "m005_experiments_and_version_names",
        "m006_step_metrics",
        "m007_sweeps",
        "m008_version_blobs_and_reproductions",
        "m010_shared_versions",
        "m011_deleted_versions",
        "m012_mlflow_capture",
        "m013_mlflow_exports",
        "m014_snapshot_blobs",
        "m015_step_metric_times",
    ]


def test_a_ledger_of_the_first_schema_gains_the_skipped_column_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    old = Database(path)
    first_only = Migrations(MIGRATION_SET)
    first_only(name="m001_initial_schema")(schema_module.m001_initial_schema)
    first_only.apply(old)
    old.execute("INSERT INTO data_sources (path, kind) VALUES ('/data', 'folder')")
    old.execute("INSERT INTO data_snapshots (source_id, fingerprint, n_files) VALUES (1, 'abc', 3)")
    old.conn.commit()
    old.close()
    db = open_ledger(path)
    rows = list(db.query("SELECT fingerprint, n_files, skipped FROM data_snapshots"))
    assert rows == [{"fingerprint": "abc", "n_files": 3, "skipped": None}]


def test_unique_constraints_keep_rows_single(tmp_path: Path) -> None:
    db = open_ledger(tmp_path / "ledger.db")
    with write_transaction(db):
        repo_id = register_repo(db, tmp_path)
        assert register_repo(db, tmp_path) == repo_id
        assert ensure_model(db, repo_id, "churn") == ensure_model(db, repo_id, "churn")
    db.execute("INSERT INTO commits (repo_id, sha) VALUES (?, 'abc')", [repo_id])
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO commits (repo_id, sha) VALUES (?, 'abc')", [repo_id])
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO activity_events (ts, kind) VALUES (1.0, 'typing')")


def test_readonly_mode_applies_nothing_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with pytest.raises(WatchkeeperError, match="no ledger"):
        open_ledger(path, readonly=True)
    assert not path.exists()
    open_ledger(path).close()
    db = open_ledger(path, readonly=True)
    assert "runs" in db.table_names()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.execute("INSERT INTO repos (path) VALUES ('/x')")


def test_a_file_that_is_not_sqlite_is_reported_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    garbage = b"this is not a database at all\n" * 100
    path.write_bytes(garbage)
    with pytest.raises(WatchkeeperError) as raised:
        open_ledger(path)
    assert str(path) in str(raised.value)
    assert "not overwrite" in str(raised.value)
    assert path.read_bytes() == garbage


def test_a_damaged_sqlite_file_is_reported_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    data = ledger_with_clobbered_pages(path, first_page=1, pages=2)  # the schema's pages
    with pytest.raises(WatchkeeperError) as raised:
        open_ledger(path)
    assert str(path) in str(raised.value)
    assert path.read_bytes() == data


def test_a_locked_ledger_waits_the_busy_timeout_then_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.db"
    open_ledger(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    monkeypatch.setenv("WATCHKEEPER_BUSY_TIMEOUT_MS", "400")
    db = open_ledger(path)
    started = time.monotonic()
    with pytest.raises(LedgerLockedError) as raised, write_transaction(db):
        register_repo(db, tmp_path)
    waited = time.monotonic() - started
    assert waited >= 0.35
    assert str(path) in str(raised.value) and "locked by another writer" in str(raised.value)
    holder.execute("ROLLBACK")
    with write_transaction(db):
        register_repo(db, tmp_path)
    assert db["repos"].count == 1


def test_a_writer_that_finishes_within_the_timeout_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    open_ledger(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(0.5)\n"
            "c.execute('COMMIT')",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    db = open_ledger(path)
    with write_transaction(db):
        register_repo(db, tmp_path)
    holder.wait(timeout=10)
    assert db["repos"].count == 1


def test_sqlite3_and_sqlite_utils_command_line_tools_read_the_ledger(tmp_path: Path) -> None:
    require(
        shutil.which("sqlite3") is not None,
        "the sqlite3 command-line tool",
        "apt-get install -y sqlite3",
    )
    path = tmp_path / "ledger.db"
    db = open_ledger(path)
    with write_transaction(db):
        repo_id = register_repo(db, tmp_path)
        ensure_model(db, repo_id, "churn")
    db.close()
    output = subprocess.run(
        ["sqlite3", str(path), "SELECT name FROM models; PRAGMA integrity_check;"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert output == ["churn", "ok"]
    sqlite_utils_cli = Path(sys.executable).with_name("sqlite-utils")
    tables = json.loads(
        subprocess.run(
            [str(sqlite_utils_cli), "tables", str(path), "--counts"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    counts = {row["table"]: row["count"] for row in tables}
    assert counts["models"] == 1 and counts["repos"] == 1 and counts["model_versions"] == 0
    rows = json.loads(
        subprocess.run(
            [str(sqlite_utils_cli), "rows", str(path), "models"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert rows == [{"id": 1, "repo_id": repo_id, "name": "churn"}]


def test_commands_report_a_corrupt_ledger_and_leave_it_alone(watchkeeper_home: Path) -> None:
    path = watchkeeper_home / "ledger.db"
    path.write_bytes(b"\x00garbage" * 512)
    for command in (["status"], ["models", "list"], ["runs", "list"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, command
        assert f"error: {path} is not a SQLite database" in result.output
    assert path.read_bytes() == b"\x00garbage" * 512


def test_commands_wait_for_a_locked_ledger_then_say_so_while_readers_go_on(
    tmp_path: Path, watchkeeper_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    path = watchkeeper_home / "ledger.db"
    open_ledger(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    monkeypatch.setenv("WATCHKEEPER_BUSY_TIMEOUT_MS", "300")
    result = CliRunner().invoke(main, ["init", str(repo)])
    assert result.exit_code == 2
    assert f"the ledger {path} is locked by another writer (waited 0.3 s)" in result.output
    reader = CliRunner().invoke(main, ["status", "--json"])
    assert reader.exit_code == 2 and "no repo declares models" in reader.stderr  # not "locked"
    assert json.loads(reader.stdout)["repos"] == []
    holder.execute("ROLLBACK")
    assert CliRunner().invoke(main, ["init", str(repo)]).exit_code == 0
