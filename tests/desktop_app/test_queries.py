"""The app's ledger queries: SQL formatting of the Models table matches the Python formatters."""

from __future__ import annotations

import json
from pathlib import Path

from agent.ledger import open_ledger
from desktop_app.queries import formatting, models
from desktop_app.queries.connection import connect_readonly


def test_sqlite_formats_rows_exactly_like_the_python_formatters(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    db = open_ledger(ledger)
    cases = [
        # (metrics text, started_at, ended_at, dirty, commit)
        (
            '{"auc": 0.912345, "n": 12, "loss": 1e-05, "extra": 3}',
            1_700_000_000.25,
            1_700_000_042.9,
            1,
            "0123456789abcdef",
        ),
        ('{"name": "best", "acc": 1.0}', 1_700_000_000.0, 1_700_000_185.0, 0, None),
        ("{}", 1_700_000_000.0, 1_700_007_322.0, 0, "abc"),
        (None, None, None, None, ""),
        ("not json", 1_700_000_000.0, 1_699_999_000.0, 0, "f" * 40),
    ]
    with db.conn:
        db.execute("INSERT INTO repos (id, path, name) VALUES (1, '/r', 'r')")
        db.execute("INSERT INTO models (id, repo_id, name) VALUES (1, 1, 'churn')")
        for number, (metrics, started, ended, dirty, commit) in enumerate(cases, start=1):
            db.execute(
                "INSERT INTO model_versions (id, model_id, version, status, commit_sha, dirty,"
                " metrics, executor, host, started_at, ended_at) VALUES"
                " (?, 1, ?, 'succeeded', ?, ?, ?, 'local', NULL, ?, ?)",
                [number, number, commit, dirty, metrics, started, ended],
            )
    db.close()
    connection = connect_readonly(ledger)
    rows = models.version_rows(connection, list(range(1, len(cases) + 1)))
    for number, (metrics, started, ended, dirty, commit) in enumerate(cases, start=1):
        try:
            parsed = json.loads(metrics or "{}")
        except ValueError:
            parsed = {}
        expected = (
            "churn",
            number,
            "succeeded",
            (commit or "")[:10],
            "dirty" if dirty else "",
            formatting.format_metrics(parsed),
            "local",
            "",
            formatting.format_time(started),
            formatting.format_duration(ended - started) if started and ended else "",
            "",  # no experiment mark, no alias
            "you",  # trained here, never pushed
        )
        assert tuple(rows[number]) == expected
    assert rows[1][5] == "auc=0.9123 n=12 loss=1e-05"
    assert rows[3][9] == "2h 02m"


def test_the_models_table_leaves_out_deleted_versions(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    db = open_ledger(ledger)
    with db.conn:
        db.execute("INSERT INTO repos (id, path, name) VALUES (1, '/r', 'r')")
        db.execute("INSERT INTO models (id, repo_id, name) VALUES (1, 1, 'churn')")
        for number in (1, 2, 3):
            db.execute(
                "INSERT INTO model_versions (id, model_id, version, status, deleted_at)"
                " VALUES (?, 1, ?, 'succeeded', ?)",
                [number, number, 1_700_000_000.0 if number == 2 else None],
            )
    db.close()
    connection = connect_readonly(ledger)

    assert models.ordered_version_ids(connection) == [3, 1]
    assert models.ordered_version_ids(connection, status="succeeded", descending=False) == [1, 3]


def test_a_sweep_point_still_waiting_shows_queued_not_running(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    db = open_ledger(ledger)
    with db.conn:
        db.execute("INSERT INTO repos (id, path, name) VALUES (1, '/r', 'r')")
        db.execute("INSERT INTO models (id, repo_id, name) VALUES (1, 1, 'churn')")
        for number, state in ((1, "running"), (2, "queued")):
            db.execute(
                "INSERT INTO runs (id, model_id, state, executor, created_at)"
                " VALUES (?, 1, ?, 'local', 0)",
                [f"run-{number}", state],
            )
            db.execute(
                "INSERT INTO model_versions (id, model_id, version, status, run_id)"
                " VALUES (?, 1, ?, 'running', ?)",
                [number, number, f"run-{number}"],
            )
    db.close()
    rows = models.version_rows(connect_readonly(ledger), [1, 2])

    assert (rows[1][2], rows[2][2]) == ("running", "queued")
