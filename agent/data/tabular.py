"""Read CSV files strictly and keep a bounded reference sample of their columns (a profile)."""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from agent.errors import WatchkeeperError

TABULAR_SUFFIXES = {".csv": ",", ".tsv": "\t"}
SAMPLE_ROWS = 10_000
# Wide tables keep fewer rows, so that a profile stays under about a million values.
SAMPLE_CELLS = 1_000_000
MIN_SAMPLE_ROWS = 1_000
PROFILE_VERSION = 1
MISSING_VALUES = frozenset({"", "na", "n/a", "nan", "null", "none"})


def is_tabular(path: str | Path) -> bool:
    """True for files whose columns Watchkeeper profiles (.csv and .tsv)."""
    return Path(path).suffix.lower() in TABULAR_SUFFIXES


@dataclass
class ColumnProfile:
    """A column's reference sample: floats (None when missing) if every value is a number."""

    name: str
    numeric: bool
    values: list[Any]

    @property
    def present(self) -> list[Any]:
        return [value for value in self.values if value is not None]

    @property
    def n_unique(self) -> int:
        return len(set(self.present))


@dataclass
class TableProfile:
    """A bounded, reproducible sample of a table's rows, column by column.

    `n_rows` counts every data row of the file; `columns` hold at most SAMPLE_ROWS of them,
    chosen by reservoir sampling seeded from the file name (so a profile is reproducible).
    """

    file: str
    n_rows: int
    columns: list[ColumnProfile]

    def column(self, name: str) -> ColumnProfile | None:
        for column in self.columns:
            if column.name == name:
                return column
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PROFILE_VERSION,
            "file": self.file,
            "n_rows": self.n_rows,
            "columns": [
                {"name": c.name, "numeric": c.numeric, "values": c.values} for c in self.columns
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableProfile:
        if "error" in data:
            raise WatchkeeperError(str(data["error"]))
        return cls(
            file=str(data["file"]),
            n_rows=int(data["n_rows"]),
            columns=[
                ColumnProfile(c["name"], bool(c["numeric"]), list(c["values"]))
                for c in data["columns"]
            ],
        )


def _decoded_lines(path: Path, hasher: Any, line_numbers: list[int]) -> Iterator[str]:
    """Lines of a UTF-8 file, each checked; feeds the bytes to `hasher` as they are read."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            hasher.update(raw)
            line_numbers[0] = number
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise WatchkeeperError(
                    f"{path}:{number}: not UTF-8 text (byte {error.start + 1} of the line); "
                    "save the file as UTF-8"
                ) from error
            if number == 1:
                text = text.removeprefix("\ufeff")
            yield text


def sample_size(n_columns: int) -> int:
    """Rows kept in a profile: SAMPLE_ROWS, fewer for tables wider than 100 columns."""
    return max(MIN_SAMPLE_ROWS, min(SAMPLE_ROWS, SAMPLE_CELLS // max(1, n_columns)))


def _parse_number(text: str) -> float | None:
    """The value as a float; None when missing; raises ValueError when it is not a number."""
    stripped = text.strip()
    if stripped.lower() in MISSING_VALUES:
        return None
    value = float(stripped)
    return value if math.isfinite(value) else None


def profile_csv(path: Path, *, expected_digest: str | None = None) -> TableProfile:
    """Read a CSV (or TSV) file and sample up to SAMPLE_ROWS rows of it (see `sample_size`).

    Raises WatchkeeperError naming the file and line for a row with the wrong number of fields,
    text that is not UTF-8 or a quoting error; and when `expected_digest` is given and the bytes
    read do not have that BLAKE3 digest (the file changed since it was fingerprinted).

    Example::

        profile_csv(Path("data/train.csv")).n_rows  # 1200
    """
    delimiter = TABULAR_SUFFIXES.get(path.suffix.lower(), ",")
    hasher = blake3.blake3()
    line_number = [0]
    rows = csv.reader(_decoded_lines(path, hasher, line_number), delimiter=delimiter, strict=True)
    try:
        header = next(rows, None)
        if header is None:
            raise WatchkeeperError(f"{path}: empty file; a CSV file needs a header row")
        names = [name.strip() for name in header]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise WatchkeeperError(
                f"{path}:1: duplicate column names {', '.join(duplicates)}; rename them"
            )
        limit = sample_size(len(names))
        sample: list[list[str]] = []
        rng = random.Random(path.name)
        n_rows = 0
        for row in rows:
            if not row:
                continue
            if len(row) != len(names):
                raise WatchkeeperError(
                    f"{path}:{line_number[0]}: row has {len(row)} fields but the header has "
                    f"{len(names)}; fix the row (quote fields that contain '{delimiter}')"
                )
            n_rows += 1
            if len(sample) < limit:
                sample.append(row)
            else:
                slot = rng.randrange(n_rows)
                if slot < limit:
                    sample[slot] = row
    except csv.Error as error:
        raise WatchkeeperError(f"{path}:{line_number[0]}: malformed CSV: {error}") from error
    except OSError as error:
        raise WatchkeeperError(f"{path}: cannot read: {error.strerror}") from error
    if expected_digest is not None and hasher.hexdigest() != expected_digest:
        raise WatchkeeperError(f"{path}: changed while it was being read; try again")
    return TableProfile(file=path.name, n_rows=n_rows, columns=_columns(names, sample))


def _columns(names: list[str], sample: list[list[str]]) -> list[ColumnProfile]:
    columns = []
    for index, name in enumerate(names):
        raw = [row[index] for row in sample]
        try:
            numbers = [_parse_number(value) for value in raw]
        except ValueError:
            text = [None if value.strip().lower() in MISSING_VALUES else value for value in raw]
            columns.append(ColumnProfile(name, numeric=False, values=text))
            continue
        columns.append(ColumnProfile(name, numeric=True, values=numbers))
    return columns
