"""The rows added, removed and changed between two contents of a tabular (or text) file."""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.data.tabular import TABULAR_SUFFIXES
from agent.errors import WatchkeeperError

# Bytes looked at for a NUL, which marks a file as binary (as git and diff do).
BINARY_PROBE_BYTES = 64 << 10
# Larger files are not diffed row by row (both sides are held in memory).
MAX_DIFF_BYTES = 1 << 30


class NotTextError(WatchkeeperError):
    """A file whose rows cannot be shown: binary, or too large."""


@dataclass(frozen=True)
class ChangedRow:
    """A row whose key is on both sides with other values: the key and each changed cell."""

    key: str
    cells: list[tuple[str, str, str]]  # (column, old value, new value)
    old: str
    new: str

    def describe(self, key_column: str) -> str:
        """`id=7: amount 10 → 12`"""
        cells = ", ".join(f"{column} {old} → {new}" for column, old, new in self.cells)
        return f"{key_column}={self.key}: {cells or 'same values, written differently'}"


@dataclass
class RowDiff:
    """Counts and a bounded sample (in file order) of rows added, removed and changed.

    `key` is the column rows were matched by; None when whole lines were compared (then a
    changed row counts as one removed and one added).
    """

    path: str
    key: str | None
    added: int = 0
    removed: int = 0
    changed: int = 0
    sample_added: list[str] = field(default_factory=list)
    sample_removed: list[str] = field(default_factory=list)
    sample_changed: list[ChangedRow] = field(default_factory=list)
    old_header: str | None = None
    new_header: str | None = None

    @property
    def header_changed(self) -> bool:
        return self.old_header != self.new_header

    def summary(self) -> str:
        """`1 added, 2 removed, 3 changed (rows matched by id)`"""
        counts = f"{self.added} added, {self.removed} removed"
        if self.key is None:
            return f"{counts} (whole lines compared; --key COLUMN matches rows by a key)"
        return f"{counts}, {self.changed} changed (rows matched by {self.key})"

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "key": self.key,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "header_changed": self.header_changed,
            "sample_added": self.sample_added,
            "sample_removed": self.sample_removed,
            "sample_changed": [
                {"key": row.key, "cells": [list(cell) for cell in row.cells]}
                for row in self.sample_changed
            ],
        }


@dataclass
class _Side:
    """One content split into rows: its header, its rows (raw lines) and their hashes."""

    name: str
    header: str | None
    columns: list[str]
    rows: list[bytes]
    quoted: bool


def diff_rows(
    old: Path, new: Path, name: str, *, key: str | None = None, sample: int = 10
) -> RowDiff:
    """Compare two contents of the file `name` row by row.

    CSV and TSV files have a header; rows are matched by the `key` column when given, else by
    a column named `id` or ending in `_id` when it is unique on both sides, else as whole
    lines (each as many times as it occurs); `key=""` compares whole lines. Other text files
    are compared as whole lines.
    Rows are compared by hash, a million rows in about a second; only the sampled rows are
    split into cells. Raises NotTextError for a binary file, and WatchkeeperError naming the
    file and column for a `key` that is not a column or not unique.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.csv").write_text("id,v\\n1,a\\n2,b\\n3,c\\n")
    >>> _ = (folder / "b.csv").write_text("id,v\\n1,a\\n2,B\\n4,d\\n")
    >>> found = diff_rows(folder / "a.csv", folder / "b.csv", "t.csv")
    >>> found.summary(), found.sample_added, found.sample_removed
    ('1 added, 1 removed, 1 changed (rows matched by id)', ['4,d'], ['3,c'])
    >>> found.sample_changed[0].describe("id")
    'id=2: v b → B'
    """
    delimiter = TABULAR_SUFFIXES.get(Path(name).suffix.lower())
    before = _read(old, name, delimiter)
    after = _read(new, name, delimiter)
    result = RowDiff(name, None, old_header=before.header, new_header=after.header)
    if delimiter is not None:
        chosen = (key or None) if key is not None else _obvious_key(before, after)
        if chosen is not None:
            for side in (before, after):
                if chosen not in side.columns:
                    raise WatchkeeperError(_no_column(side, chosen))
            keyed = _diff_by_key(before, after, chosen, delimiter, sample, explicit=key is not None)
            if keyed is not None:
                return keyed
    _diff_lines(before, after, sample, result)
    return result


def _read(path: Path, name: str, delimiter: str | None) -> _Side:
    size = path.stat().st_size
    if size > MAX_DIFF_BYTES:
        raise NotTextError(f"{name} is {size} bytes, too large to compare row by row")
    with path.open("rb") as reader:
        content = reader.read(BINARY_PROBE_BYTES)
        if b"\0" in content:  # found before reading the rest
            raise NotTextError(f"{name} is a binary file; rows cannot be shown")
        content += reader.read()
    if content.startswith(b"\xef\xbb\xbf"):
        content = content[3:]
    lines = content.splitlines()
    if b"" in lines:  # blank lines are not rows
        lines = [line for line in lines if line]
    if delimiter is None or not lines:
        return _Side(name, None, [], lines, False)
    header = lines[0].decode(errors="replace")
    columns = next(csv.reader([header], delimiter=delimiter), [])
    return _Side(name, header, columns, lines[1:], b'"' in content)


def _obvious_key(before: _Side, after: _Side) -> str | None:
    for column in before.columns:
        lowered = column.lower()
        if (lowered == "id" or lowered.endswith("_id")) and column in after.columns:
            return column
    return None


def _no_column(side: _Side, column: str) -> str:
    close = difflib.get_close_matches(column, side.columns, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(side.columns) or "none"
    return f"{side.name} has no column {column!r} to match rows by (its columns: {listing}){hint}"


def _hashes(values: list[bytes] | list[tuple[str, ...]] | list[str]) -> np.ndarray:
    return np.fromiter(map(hash, values), dtype=np.int64, count=len(values))


def _diff_lines(before: _Side, after: _Side, sample: int, result: RowDiff) -> None:
    """Whole lines as a multiset: what one side has more often than the other."""
    old_hashes, new_hashes = _hashes(before.rows), _hashes(after.rows)
    old_values, old_counts = np.unique(old_hashes, return_counts=True)
    new_values, new_counts = np.unique(new_hashes, return_counts=True)
    _, in_old, in_new = np.intersect1d(
        old_values, new_values, assume_unique=True, return_indices=True
    )
    old_extra, new_extra = old_counts.copy(), new_counts.copy()
    common = np.minimum(old_counts[in_old], new_counts[in_new])
    old_extra[in_old] -= common
    new_extra[in_new] -= common
    result.removed = int(old_extra.sum())
    result.added = int(new_extra.sum())
    result.sample_removed = _first_extra(
        before.rows, old_hashes, old_values, old_counts, old_extra, sample
    )
    result.sample_added = _first_extra(
        after.rows, new_hashes, new_values, new_counts, new_extra, sample
    )


def _first_extra(
    rows: list[bytes],
    hashes: np.ndarray,
    values: np.ndarray,
    all_counts: np.ndarray,
    extra: np.ndarray,
    sample: int,
) -> list[str]:
    """The first `sample` rows (in file order) that are extra occurrences; of a value that
    both sides have, the last occurrences are the extra ones (a row appended again)."""
    if sample <= 0 or not extra.any():
        return []
    wanted = values[extra > 0]
    counts = all_counts[extra > 0]
    skip = dict(zip(wanted.tolist(), (counts - extra[extra > 0]).tolist(), strict=True))
    chosen = []
    for index in np.flatnonzero(np.isin(hashes, wanted)).tolist():
        value = int(hashes[index])
        if skip[value] > 0:
            skip[value] -= 1
            continue
        chosen.append(rows[index].decode(errors="replace"))
        if len(chosen) == sample:
            break
    return chosen


def _keys_and_rows(
    side: _Side, column: str, delimiter: str, parse: bool, common: list[str]
) -> tuple[list[str] | list[bytes], list[tuple[str, ...]] | list[bytes], list[bytes]]:
    """Each row's key cell, what its identity is (its line, or its cells of `common`) and
    its line as shown."""
    index = side.columns.index(column)
    if parse:
        text = b"\n".join(side.rows).decode(errors="replace")
        records = list(csv.reader(io.StringIO(text), delimiter=delimiter))
        picks = [side.columns.index(name) for name in common]
        keys = [record[index] if index < len(record) else "" for record in records]
        cells = [tuple(record[i] if i < len(record) else "" for i in picks) for record in records]
        return keys, cells, [_line(record, delimiter) for record in records]
    separator = delimiter.encode()
    if common == side.columns:
        # Only the cells up to the key are split off: a row's identity is its line.
        try:
            key_cells = [row.split(separator, index + 1)[index] for row in side.rows]
        except IndexError:  # a short row: its missing cells are empty
            key_cells = [
                (row.split(separator, index + 1) + [b""] * index)[index] for row in side.rows
            ]
        return key_cells, side.rows, side.rows
    split = [row.split(separator) for row in side.rows]
    key_cells = [cells[index] if index < len(cells) else b"" for cells in split]
    picks = [side.columns.index(name) for name in common]
    return (
        key_cells,
        [separator.join(cells[i] if i < len(cells) else b"" for i in picks) for cells in split],
        side.rows,
    )


def _line(record: list[str], delimiter: str) -> bytes:
    """A parsed row written back as one CSV line (quoted where needed)."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerow(record)
    return out.getvalue().removesuffix("\r\n").encode()


def _diff_by_key(
    before: _Side, after: _Side, column: str, delimiter: str, sample: int, *, explicit: bool
) -> RowDiff | None:
    """Rows matched by `column`; None when it is not unique and was only guessed."""
    parse = before.quoted or after.quoted  # quoted cells may hold the delimiter or newlines
    common = [name for name in after.columns if name in before.columns]
    old_keys, old_rows, old_lines = _keys_and_rows(before, column, delimiter, parse, common)
    new_keys, new_rows, new_lines = _keys_and_rows(after, column, delimiter, parse, common)
    old_key_hashes, new_key_hashes = _hashes(old_keys), _hashes(new_keys)
    old_order, new_order = np.argsort(old_key_hashes), np.argsort(new_key_hashes)
    sides = (
        (before, old_keys, old_key_hashes, old_order),
        (after, new_keys, new_key_hashes, new_order),
    )
    for side, keys, hashes, order in sides:
        repeated = _repeated(hashes, order)
        if repeated is not None:
            if not explicit:
                return None
            value = keys[repeated]
            shown = value.decode(errors="replace") if isinstance(value, bytes) else value
            raise WatchkeeperError(
                f"{side.name}: column {column!r} is not a key: {shown!r} is on more than one "
                "row; give a column whose values are unique with --key, or leave --key out "
                "to compare whole lines"
            )
    _, in_old, in_new = np.intersect1d(
        old_key_hashes[old_order],
        new_key_hashes[new_order],
        assume_unique=True,
        return_indices=True,
    )
    old_both, new_both = old_order[in_old], new_order[in_new]
    removed = np.ones(len(old_keys), dtype=bool)
    removed[old_both] = False
    added = np.ones(len(new_keys), dtype=bool)
    added[new_both] = False
    differs = _hashes(old_rows)[old_both] != _hashes(new_rows)[new_both]
    result = RowDiff(
        after.name,
        column,
        added=int(added.sum()),
        removed=int(removed.sum()),
        changed=int(differs.sum()),
        old_header=before.header,
        new_header=after.header,
    )
    if sample > 0:
        result.sample_removed = [_text(old_lines[i]) for i in np.flatnonzero(removed)[:sample]]
        result.sample_added = [_text(new_lines[i]) for i in np.flatnonzero(added)[:sample]]
        pairs = sorted(zip(new_both[differs].tolist(), old_both[differs].tolist(), strict=True))
        for new_index, old_index in pairs[:sample]:
            old_line, new_line = _text(old_lines[old_index]), _text(new_lines[new_index])
            result.sample_changed.append(
                _changed_row(before, after, column, delimiter, old_line, new_line)
            )
    return result


def _repeated(hashes: np.ndarray, order: np.ndarray) -> int | None:
    """The index of a value that occurs twice (None when all are unique); `order` sorts
    `hashes`."""
    if len(hashes) < 2:
        return None
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    return None if len(same) == 0 else int(order[same[0] + 1])


def _text(row: bytes) -> str:
    return row.decode(errors="replace")


def _changed_row(
    before: _Side, after: _Side, column: str, delimiter: str, old_line: str, new_line: str
) -> ChangedRow:
    old_cells = next(csv.reader([old_line], delimiter=delimiter), [])
    new_cells = next(csv.reader([new_line], delimiter=delimiter), [])
    old_values = dict(zip(before.columns, old_cells, strict=False))
    new_values = dict(zip(after.columns, new_cells, strict=False))
    cells = [
        (name, old_values.get(name, ""), new_values.get(name, ""))
        for name in after.columns
        if name in old_values and old_values.get(name) != new_values.get(name)
    ]
    return ChangedRow(new_values.get(column, ""), cells, old_line, new_line)
