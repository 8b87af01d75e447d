"""Per-column drift of tabular data against a reference sample, with Evidently's default tests."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sqlite_utils import Database

from agent.data.tabular import ColumnProfile, TableProfile, is_tabular, profile_csv
from agent.errors import WatchkeeperError

# Evidently's defaults.
SMALL_SAMPLE_ROWS = 1000  # at most this many reference rows: statistical tests (p-values)
P_VALUE_THRESHOLD = 0.05  # KS and chi-square: drift when p < 0.05
DISTANCE_THRESHOLD = 0.1  # normed Wasserstein and Jensen-Shannon: drift when >= 0.1
PSI_THRESHOLD = 0.1  # population stability index: drift when >= 0.1
MIN_UNIQUE_FOR_NUMERIC = 6  # numeric columns with 5 or fewer distinct values are categorical
DATASET_DRIFT_SHARE = 0.5  # the dataset drifts when at least half its columns do
PSI_BINS = 10
_PSI_FLOOR = 1e-4

TEST_LABELS = {
    "ks": "KS p",
    "chisquare": "chi2 p",
    "wasserstein": "Wasserstein",
    "jensenshannon": "JS",
    "psi": "PSI",
    "type": "type changed",
    "missing": "column removed",
    "added": "column added",
    "empty": "no values",
}


@dataclass(frozen=True)
class ColumnDrift:
    """The drift test of one column: `statistic` is a p-value for ks/chisquare, else a distance."""

    column: str
    kind: str  # 'numeric' or 'categorical'
    test: str  # ks, chisquare, wasserstein, jensenshannon, psi, or a schema change
    statistic: float
    threshold: float
    drifted: bool

    def label(self) -> str:
        """A short description, e.g. 'KS p=0.001' or 'JS 0.21'."""
        name = TEST_LABELS.get(self.test, self.test)
        if self.test in ("ks", "chisquare"):
            return f"{name}={self.statistic:.3g}"
        if self.test in ("wasserstein", "jensenshannon", "psi"):
            return f"{name} {self.statistic:.3g}"
        return name


@dataclass
class DriftReport:
    """Drift of one tabular file: one row per column and the share of columns that drifted."""

    path: str
    columns: list[ColumnDrift]
    drifted_share: float = field(default=0.0)
    reference_rows: int = 0
    current_rows: int = 0
    error: str | None = None  # why drift could not be computed (a malformed CSV), if so

    @property
    def dataset_drift(self) -> bool:
        return bool(self.columns) and self.drifted_share >= DATASET_DRIFT_SHARE

    def summary(self) -> str:
        """One line, e.g. '2/5 columns drifted: age (KS p=0.001), city (JS 0.21)'."""
        if self.error is not None:
            return f"drift not computed: {self.error}"
        drifted = [column for column in self.columns if column.drifted]
        line = f"{len(drifted)}/{len(self.columns)} columns drifted"
        if drifted:
            line += ": " + ", ".join(f"{c.column} ({c.label()})" for c in drifted)
        if self.dataset_drift:
            line += " (dataset drift)"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "drifted_share": self.drifted_share,
            "dataset_drift": self.dataset_drift,
            "error": self.error,
            "columns": [asdict(column) for column in self.columns],
        }


def column_kind(reference: ColumnProfile) -> str:
    """'numeric' for number columns with more than 5 distinct values, else 'categorical'."""
    if reference.numeric and reference.n_unique >= MIN_UNIQUE_FOR_NUMERIC:
        return "numeric"
    return "categorical"


def drift_between_profiles(
    reference: TableProfile, current: TableProfile, path: str, *, method: str | None = None
) -> DriftReport:
    """Compare two profiles column by column; `method='psi'` uses PSI for every column.

    Example::

        report = drift_between_profiles(old_profile, new_profile, "train.csv")
        report.summary()  # '1/3 columns drifted: age (KS p=0.0004)'
    """
    if method not in (None, "psi"):
        raise WatchkeeperError(f"unknown drift method {method!r}; use 'psi' or leave it out")
    large = reference.n_rows > SMALL_SAMPLE_ROWS
    columns: list[ColumnDrift] = []
    for ref_column in reference.columns:
        cur_column = current.column(ref_column.name)
        kind = column_kind(ref_column)
        if cur_column is None:
            columns.append(ColumnDrift(ref_column.name, kind, "missing", 1.0, 0.0, True))
        else:
            columns.append(_column_drift(ref_column, cur_column, kind, large, method))
    for cur_column in current.columns:
        if reference.column(cur_column.name) is None:
            kind = column_kind(cur_column)
            columns.append(ColumnDrift(cur_column.name, kind, "added", 1.0, 0.0, True))
    share = sum(c.drifted for c in columns) / len(columns) if columns else 0.0
    return DriftReport(path, columns, share, reference.n_rows, current.n_rows)


def _column_drift(
    reference: ColumnProfile, current: ColumnProfile, kind: str, large: bool, method: str | None
) -> ColumnDrift:
    name = reference.name
    if reference.numeric and not current.numeric and current.present:
        return ColumnDrift(name, kind, "type", 1.0, 0.0, True)
    ref_values, cur_values = reference.present, current.present
    if not ref_values or not cur_values:
        drifted = bool(ref_values) != bool(cur_values)
        return ColumnDrift(name, kind, "empty", float(drifted), 0.0, drifted)
    if method == "psi":
        value = _psi(ref_values, cur_values, kind)
        return ColumnDrift(name, kind, "psi", value, PSI_THRESHOLD, value >= PSI_THRESHOLD)
    if kind == "numeric":
        ref_array = np.asarray(ref_values, dtype=float)
        cur_array = np.asarray(cur_values, dtype=float)
        if large:
            norm = max(float(np.std(ref_array)), 0.001)
            value = float(stats.wasserstein_distance(ref_array, cur_array)) / norm
            return ColumnDrift(
                name, kind, "wasserstein", value, DISTANCE_THRESHOLD, value >= DISTANCE_THRESHOLD
            )
        p_value = float(stats.ks_2samp(ref_array, cur_array).pvalue)
        return ColumnDrift(
            name, kind, "ks", p_value, P_VALUE_THRESHOLD, p_value < P_VALUE_THRESHOLD
        )
    ref_counts, cur_counts = _category_counts(ref_values, cur_values)
    if large:
        value = _jensen_shannon(ref_counts, cur_counts)
        return ColumnDrift(
            name, kind, "jensenshannon", value, DISTANCE_THRESHOLD, value >= DISTANCE_THRESHOLD
        )
    p_value = _chi_square_p(ref_counts, cur_counts)
    return ColumnDrift(
        name, kind, "chisquare", p_value, P_VALUE_THRESHOLD, p_value < P_VALUE_THRESHOLD
    )


def _category_counts(reference: list[Any], current: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    ref_counter, cur_counter = Counter(reference), Counter(current)
    categories = sorted(set(ref_counter) | set(cur_counter), key=str)
    return (
        np.array([ref_counter[c] for c in categories], dtype=float),
        np.array([cur_counter[c] for c in categories], dtype=float),
    )


def _chi_square_p(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Chi-square test of homogeneity on the 2 x k table of category counts."""
    if len(ref_counts) < 2:
        return 1.0
    result = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
    return float(result.pvalue)


def _jensen_shannon(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    value = float(jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()))
    return 0.0 if math.isnan(value) else value


def _psi(reference: list[Any], current: list[Any], kind: str) -> float:
    if kind == "numeric":
        ref_array = np.asarray(reference, dtype=float)
        cur_array = np.asarray(current, dtype=float)
        edges = np.unique(np.quantile(ref_array, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        ref_counts = np.bincount(
            np.searchsorted(edges, ref_array, side="right"), minlength=len(edges) + 1
        )
        cur_counts = np.bincount(
            np.searchsorted(edges, cur_array, side="right"), minlength=len(edges) + 1
        )
    else:
        ref_counts, cur_counts = _category_counts(reference, current)
    ref_share = np.maximum(ref_counts / ref_counts.sum(), _PSI_FLOOR)
    cur_share = np.maximum(cur_counts / cur_counts.sum(), _PSI_FLOOR)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def load_profile(db: Database, digest: str) -> TableProfile | None:
    """The stored column profile of the file with this content digest, if any."""
    row = db.execute("SELECT profile FROM column_profiles WHERE digest = ?", [digest]).fetchone()
    if row is None:
        return None
    return TableProfile.from_json(json.loads(row[0]))


def drift_between(
    db: Database, reference_digest: str, current_file: Path, *, method: str | None = None
) -> DriftReport:
    """Drift of `current_file` against the stored profile of the file with `reference_digest`."""
    reference = load_profile(db, reference_digest)
    if reference is None:
        raise WatchkeeperError(
            f"no column profile for reference data {reference_digest[:12]}; "
            "record a snapshot of it first (`watchkeeper data snapshot PATH`)"
        )
    current = profile_csv(Path(current_file))
    return drift_between_profiles(reference, current, str(current_file), method=method)


def drift_against_snapshot(
    db: Database, snapshot_id: int, current: Path, *, method: str | None = None
) -> list[DriftReport]:
    """One drift report per CSV file of the data source that changed since the snapshot.

    `current` is the source as it is now (the folder, or the file, the snapshot was taken of),
    or another folder laid out the same way. Files without a stored reference profile are left
    out; a file that cannot be parsed (now or when the snapshot was taken) gets a report whose
    `error` says why.
    """
    from agent.data.fingerprint import fingerprint
    from agent.data.snapshots import diff_fingerprints, load_snapshot

    recorded = load_snapshot(db, snapshot_id)
    now = fingerprint(current)
    difference = diff_fingerprints(recorded, now)
    reports = []
    for relative in difference.modified:
        if not is_tabular(relative):
            continue
        try:
            reference = load_profile(db, recorded.files[relative].digest)
            if reference is None:
                continue
            current_file = now.root / relative if now.kind == "folder" else now.root
            profile = profile_csv(current_file, expected_digest=now.files[relative].digest)
        except WatchkeeperError as error:
            reports.append(DriftReport(relative, [], error=str(error)))
            continue
        reports.append(drift_between_profiles(reference, profile, relative, method=method))
    return reports
