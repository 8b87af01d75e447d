"""Every version has a global id; references accept a unique start of one, as git takes a sha."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger import open_ledger, write_transaction
from agent.ledger.queries import (
    ModelRef,
    ensure_model,
    find_version,
    insert_row,
    register_repo,
)
from agent.ledger.versions import set_alias


def _version(db: Database, model_id: int, number: int, global_id: str | None = None) -> int:
    values: dict[str, object] = {"model_id": model_id, "version": number, "status": "succeeded"}
    if global_id is not None:
        values["global_id"] = global_id
    return insert_row(db, "model_versions", values)


def test_new_versions_and_aliases_get_a_unique_global_id(tmp_path: Path) -> None:
    db = open_ledger(tmp_path / "ledger.db")
    with write_transaction(db):
        model_id = ensure_model(db, register_repo(db, tmp_path), "churn")
        for number in range(1, 51):
            _version(db, model_id, number)
        row = find_version(db, ModelRef("churn", 3), None)
        set_alias(db, row, "champion")
    ids = [r[0] for r in db.execute("SELECT global_id FROM model_versions")]
    assert len(set(ids)) == 50 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    [alias_id] = [r[0] for r in db.execute("SELECT global_id FROM version_aliases")]
    assert alias_id and len(alias_id) == 32


def test_a_reference_by_global_id_prefix(tmp_path: Path) -> None:
    db = open_ledger(tmp_path / "ledger.db")
    with write_transaction(db):
        model_id = ensure_model(db, register_repo(db, tmp_path), "churn")
        _version(db, model_id, 1, "3f9a2c10" + "0" * 24)
        _version(db, model_id, 2, "3f9a2c11" + "0" * 24)
        _version(db, model_id, 3, "abcdef12" + "0" * 24)
    assert find_version(db, ModelRef.parse("3f9a2c10"), None)["version"] == 1
    assert find_version(db, ModelRef.parse("churn@3f9a2c11"), None)["version"] == 2
    assert find_version(db, ModelRef.parse("churn@abcdef1"), None)["version"] == 3
    assert find_version(db, ModelRef.parse("churn@2"), None)["global_id"].startswith("3f9a2c11")
    with pytest.raises(WatchkeeperError, match="starts the global ids of several versions"):
        find_version(db, ModelRef.parse("3f9a2c1"), None)
    with pytest.raises(WatchkeeperError, match="has no alias 'ffff0'"):
        find_version(db, ModelRef.parse("churn@ffff0"), None)
