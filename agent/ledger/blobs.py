"""Which stored blobs each version (artifacts, data content, diffs) and snapshot references."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlite_utils import Database

ARTIFACT = "artifact"
DATA = "data"
DIFF = "diff"


@dataclass(frozen=True)
class VersionBlob:
    """One blob a version needs: its kind, the path it stands for and its store digest."""

    kind: str
    path: str
    digest: str


def record_version_blobs(db: Database, version_id: int, blobs: Iterable[VersionBlob]) -> None:
    """List blobs as referenced by a version (call inside the transaction that writes it).

    Only blobs already complete in the store may be listed: a version never references a
    missing blob.
    """
    db.conn.executemany(
        "INSERT OR REPLACE INTO version_blobs (version_id, kind, path, digest) VALUES (?, ?, ?, ?)",
        [(version_id, blob.kind, blob.path, blob.digest) for blob in blobs],
    )


def blobs_of_version(db: Database, version_id: int, kind: str | None = None) -> dict[str, str]:
    """path -> digest of the blobs a version references (of one kind, when given)."""
    sql = "SELECT path, digest FROM version_blobs WHERE version_id = ?"
    parameters: list[object] = [version_id]
    if kind is not None:
        sql += " AND kind = ?"
        parameters.append(kind)
    return {
        str(path): str(digest) for path, digest in db.execute(sql + " ORDER BY path", parameters)
    }


def referenced_digests(db: Database) -> set[str]:
    """Every digest any version references, whatever its kind.

    >>> from agent.ledger import open_ledger
    >>> isinstance(referenced_digests(open_ledger()), set)
    True
    """
    return {str(row[0]) for row in db.execute("SELECT DISTINCT digest FROM version_blobs")}


def record_snapshot_blobs(db: Database, snapshot_id: int, blobs: Iterable[VersionBlob]) -> None:
    """List kept data blobs as held by a snapshot (path = the file's path in the snapshot).

    Call inside a write transaction, once the blobs are complete in the store: a snapshot
    never references a missing blob.
    """
    db.conn.executemany(
        "INSERT OR REPLACE INTO snapshot_blobs (snapshot_id, path, digest) VALUES (?, ?, ?)",
        [(snapshot_id, blob.path, blob.digest) for blob in blobs],
    )


def blobs_of_snapshot(db: Database, snapshot_id: int) -> dict[str, str]:
    """path -> digest of the blobs a snapshot holds (empty when its content was not kept).

    >>> from agent.ledger import open_ledger
    >>> blobs_of_snapshot(open_ledger(), 1)
    {}
    """
    return {
        str(path): str(digest)
        for path, digest in db.execute(
            "SELECT path, digest FROM snapshot_blobs WHERE snapshot_id = ? ORDER BY path",
            [snapshot_id],
        )
    }
