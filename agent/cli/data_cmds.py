"""`watchkeeper data`: snapshot a data file or folder, diff two of them, and show column drift."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from sqlite_utils import Database

from agent.cli import common
from agent.data.drift import (
    DriftReport,
    drift_against_snapshot,
    drift_between_profiles,
    load_profile,
)
from agent.data.fingerprint import DataFingerprint, StatCache, fingerprint, resolve_data_path
from agent.data.row_diff import RowDiff
from agent.data.snapshots import FingerprintDiff, diff_fingerprints, load_snapshot, record_snapshot
from agent.data.tabular import TableProfile, is_tabular, profile_csv
from agent.errors import WatchkeeperError
from agent.formatting import format_size
from agent.paths import WatchkeeperPaths

# Show a progress bar when at least this much has to be read.
PROGRESS_BYTES = 64 << 20
EXIT_DIFFERENT = 1
# At most this many skipped entries are named one per line; the rest are counted.
SKIPPED_SHOWN = 10


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _fingerprint_with_progress(path: Path, cache: StatCache | None = None) -> DataFingerprint:
    """Fingerprint `path` with the user's stat cache, showing a bar when much must be read."""
    if cache is None:
        cache = StatCache.open(WatchkeeperPaths.from_environment())
    progress: Progress | None = None
    task = None

    def on_progress(done: int, total: int) -> None:
        nonlocal progress, task
        if progress is None:
            if total < PROGRESS_BYTES or not sys.stderr.isatty():
                return
            progress = Progress(
                TextColumn(f"hashing {path}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            progress.start()
            task = progress.add_task("hash", total=total)
        if task is not None:
            progress.update(task, completed=done, total=total)

    try:
        return fingerprint(path, cache=cache, on_progress=on_progress)
    finally:
        if progress is not None:
            progress.stop()


@click.group()
def data() -> None:
    """Fingerprint data, record snapshots in the ledger, and compare them."""


@data.command("snapshot")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
@click.option(
    "--keep-data",
    "keep_data",
    type=click.Choice(("always", "small", "never")),
    default=None,
    help="Keep the files' content in the blob store (default: [watch] keep_data, else never).",
)
def snapshot_command(path: Path, as_json: bool, keep_data: str | None) -> None:
    """Fingerprint PATH (a file or folder) and record it as a snapshot in the ledger.

    Only files whose size, times or inode changed since the last check are read. The column
    profile of every CSV/TSV file is stored too, so that drift can later be computed against it.
    With `[watch] keep_data` (or --keep-data) the content is kept too, so that `data diff` can
    show changed rows.
    """
    from agent.config import UserConfig
    from agent.daemon.settings import snapshot_keep
    from agent.ledger.artifacts import ArtifactStore
    from agent.ledger.blobs import blobs_of_snapshot
    from agent.runs.data_cache import keep_snapshot

    paths = WatchkeeperPaths.from_environment()
    keep, limit = snapshot_keep(UserConfig.load(paths.config))
    keep = keep_data or keep
    cache = StatCache.open(paths)
    fp = _fingerprint_with_progress(path, cache)
    with common.ledger_session(settle_runs=False) as db:
        existed = _existing_snapshot(db, fp)
        snapshot_id = record_snapshot(db, fp)
        problems = _profile_problems(db, fp)
        kept = keep_snapshot(
            db, ArtifactStore(paths.artifacts, cache), snapshot_id, fp, keep, limit
        )
        kept_files = len(blobs_of_snapshot(db, snapshot_id))
    result = {
        "snapshot_id": snapshot_id,
        "source": str(fp.root),
        "kind": fp.kind,
        "fingerprint": fp.digest,
        "n_files": fp.n_files,
        "total_bytes": fp.total_bytes,
        "new": existed is None,
        "profile_errors": problems,
        "skipped": [entry.to_json() for entry in fp.skipped],
        "files_read": cache.stats.files_hashed,
        "bytes_read": cache.stats.bytes_hashed,
        "kept_files": kept_files,
        "kept_bytes_copied": kept.copied_bytes + kept.cloned_bytes,
        "keep_notes": kept.notes,
    }
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    console = common.console()
    state = "recorded" if existed is None else "already recorded"
    console.print(
        f"snapshot {snapshot_id} {state}: {fp.root} ({fp.kind}, {_count(fp.n_files, 'file')}, "
        f"{format_size(fp.total_bytes)})",
        markup=False,
    )
    console.print(f"  fingerprint {fp.digest}", markup=False)
    unchanged = fp.n_files - cache.stats.files_hashed
    console.print(
        f"  read {_count(cache.stats.files_hashed, 'file')} "
        f"({format_size(cache.stats.bytes_hashed)}); {unchanged} unchanged, known from the "
        "stat cache",
        markup=False,
    )
    if kept_files:
        console.print(
            f"  content kept: {_count(kept_files, 'file')} "
            f"({format_size(kept.copied_bytes + kept.cloned_bytes)} newly stored)",
            markup=False,
        )
    for problem in problems:
        console.print(f"  warning: no column profile: {problem}", markup=False)
    for note in kept.notes:
        console.print(f"  note: {note}", markup=False)
    for line in skipped_warnings(fp):
        console.print(f"  {line}", markup=False)


@data.command("delete")
@click.argument("snapshot_ids", metavar="SNAPSHOT...", nargs=-1, required=True, type=int)
def delete_command(snapshot_ids: tuple[int, ...]) -> None:
    """Mark snapshots deleted, so that `watchkeeper gc` frees the content only they kept.

    Versions trained on a snapshot keep their own data (and still name the snapshot).
    """
    from agent.data.snapshots import delete_snapshot
    from agent.ledger import write_transaction

    console = common.console()
    with common.ledger_session(settle_runs=False) as db, write_transaction(db):
        marked = {snapshot_id: delete_snapshot(db, snapshot_id) for snapshot_id in snapshot_ids}
    for snapshot_id, newly in marked.items():
        state = "deleted" if newly else "was already deleted"
        console.print(f"snapshot {snapshot_id} {state}", markup=False)
    console.print(
        "`watchkeeper gc` frees the content that only deleted snapshots and versions kept",
        markup=False,
    )


def skipped_warnings(fp: DataFingerprint) -> list[str]:
    """One warning per entry left out of the fingerprint, the first SKIPPED_SHOWN of them."""
    lines = [
        f"warning: skipped {fp.root / entry.path}: {entry.reason}"
        for entry in fp.skipped[:SKIPPED_SHOWN]
    ]
    if len(fp.skipped) > SKIPPED_SHOWN:
        lines.append(
            f"warning: and {len(fp.skipped) - SKIPPED_SHOWN} more skipped entries "
            "(`watchkeeper data snapshot --json` lists them all)"
        )
    return lines


def _existing_snapshot(db: Database, fp: DataFingerprint) -> int | None:
    row = db.execute(
        "SELECT s.id FROM data_snapshots s JOIN data_sources d ON d.id = s.source_id"
        " WHERE d.path = ? AND s.fingerprint = ?",
        [str(fp.root), fp.digest],
    ).fetchone()
    return None if row is None else int(row[0])


def _profile_problems(db: Database, fp: DataFingerprint) -> list[str]:
    problems = []
    for entry in fp.files.values():
        if not is_tabular(entry.path):
            continue
        row = db.execute(
            "SELECT profile FROM column_profiles WHERE digest = ?", [entry.digest]
        ).fetchone()
        if row is not None and "error" in (stored := json.loads(row[0])):
            problems.append(str(stored["error"]))
    return problems


class _Side:
    """One side of `data diff`: a snapshot, a version's data dep, or a path on disk."""

    def __init__(self, db: Database, text: str) -> None:
        self.text = text
        self.snapshot_id: int | None = None
        if text.isdigit() and not Path(text).exists():
            self.snapshot_id = int(text)
        elif "@" in text and not Path(text).exists():
            self.snapshot_id = _snapshot_of_version(db, text)
        if self.snapshot_id is not None:
            self.fingerprint = load_snapshot(db, self.snapshot_id)
        else:
            self.fingerprint = _fingerprint_with_progress(Path(text))

    def describe(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "source": str(self.fingerprint.root),
            "kind": self.fingerprint.kind,
            "fingerprint": self.fingerprint.digest,
        }

    def label(self) -> str:
        if self.snapshot_id is not None:
            named = "" if self.text.isdigit() else f"{self.text}: "
            return f"{named}snapshot {self.snapshot_id} ({self.fingerprint.root})"
        return str(self.fingerprint.root)

    def content_path(self, store: Any, relative: str) -> Path | None:
        """Where the bytes of one file are: its kept blob (checked against its digest) for a
        snapshot, None when not kept; the file itself for a path."""
        entry = self.fingerprint.files[relative]
        if self.snapshot_id is not None:
            return store.checked_path("blake3:" + entry.digest, relative)
        fp = self.fingerprint
        return fp.root / relative if fp.kind == "folder" else fp.root

    def profile(self, db: Database, relative: str) -> TableProfile | None:
        """The column profile of one file of this side: stored for a snapshot, read for a path."""
        entry = self.fingerprint.files[relative]
        if self.snapshot_id is not None:
            return load_profile(db, entry.digest)
        fp = self.fingerprint
        path = fp.root / relative if fp.kind == "folder" else fp.root
        return profile_csv(path, expected_digest=entry.digest)


def _snapshot_of_version(db: Database, text: str) -> int:
    """The snapshot of a version's data dep: `churn@3` (its only data dep) or `churn@3:data/`."""
    from agent.ledger.queries import ModelRef, find_version

    reference, _, dep = text.partition(":")
    version = find_version(db, ModelRef.parse(reference), None)
    data_deps: dict[str, Any] = version.get("data") or {}
    label = f"{version['model']}@{version['version']}"
    wanted = dep.rstrip("/")
    chosen = [name for name in data_deps if not dep or name.rstrip("/") == wanted]
    if len(chosen) != 1:
        listing = ", ".join(sorted(data_deps)) or "none"
        problem = f"has no data dep {dep!r}" if dep else "has more than one data dep"
        if not data_deps:
            problem = "recorded no data deps"
        raise WatchkeeperError(
            f"{label} {problem} (its data deps: {listing}); write {label}:DEP to choose one"
        )
    return int(data_deps[chosen[0]]["snapshot_id"])


@data.command("diff")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print the difference as JSON.")
@click.option("--psi", is_flag=True, help="Use PSI for the drift of every column.")
@click.option(
    "--rows",
    "show_rows",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    metavar="N",
    help="Show up to N added, removed and changed rows of each changed file (0: counts only).",
)
@click.option(
    "--key",
    "key",
    default=None,
    metavar="COLUMN",
    help="Match the rows of CSV/TSV files by this column (default: an id column, else whole "
    'lines; "" for whole lines).',
)
@click.option("--no-rows", is_flag=True, help="List the changed files only; read no content.")
@click.pass_context
def diff_command(
    ctx: click.Context,
    a: str,
    b: str,
    as_json: bool,
    psi: bool,
    show_rows: int,
    key: str | None,
    no_rows: bool,
) -> None:
    """Files added, removed and modified from A to B, the rows changed in each modified file
    whose content is at hand, and column drift for CSV files.

    A and B are paths, snapshot ids (as printed by `watchkeeper data snapshot`) or a version's
    data (`churn@3`, or `churn@3:data/` for one of several data deps). Rows can be shown when
    both contents are at hand: a path's, or a snapshot's kept in the blob store. Exits 0 when
    they hold the same data and 1 when they differ.
    """
    with common.ledger_session(settle_runs=False) as db:
        old, new = _Side(db, a), _Side(db, b)
        difference = diff_fingerprints(old.fingerprint, new.fingerprint)
        modified = list(difference.modified)
        single = old.fingerprint.kind == new.fingerprint.kind == "file"
        if single and difference.changed:
            # Two single files compare with each other whatever their names.
            difference = FingerprintDiff([], [], [])
            changed = True
            old_name, new_name = (
                next(iter(old.fingerprint.files)),
                next(iter(new.fingerprint.files)),
            )
            modified = [f"{old_name} -> {new_name}"]
            pairs = [(old_name, new_name)]
            reports = [_drift_of_files(db, old, new)]
        else:
            changed = difference.changed
            pairs = [(path, path) for path in modified]
            reports = [
                _drift_of(db, old, new, relative, "psi" if psi else None)
                for relative in modified
                if is_tabular(relative)
            ]
    rows = RowsShown() if no_rows else _changed_rows(old, new, pairs, key, show_rows)
    drift = [report for report in reports if report is not None]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "a": old.describe(),
                    "b": new.describe(),
                    "same": not changed,
                    "added": difference.added,
                    "removed": difference.removed,
                    "modified": modified if changed else [],
                    "drift": [report.to_json() for report in drift],
                    "rows": [found.to_json() for found in rows.diffs],
                    "rows_not_shown": rows.not_shown,
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        console = common.console()
        if not changed:
            console.print(f"same data: {old.label()} and {new.label()}", markup=False)
        else:
            console.print(f"--- {old.label()}\n+++ {new.label()}", markup=False)
            for title, paths in (
                ("added", difference.added),
                ("removed", difference.removed),
                ("modified", modified),
            ):
                for path in paths:
                    console.print(f"  {title:9}{path}", markup=False)
            for report in drift:
                console.print(f"  drift    {report.path}: {report.summary()}", markup=False)
            _print_rows(console, rows, show_rows)
    ctx.exit(EXIT_DIFFERENT if changed else 0)


@dataclass
class RowsShown:
    """The row diffs of the changed files, and why rows of others cannot be shown."""

    diffs: list[RowDiff] = field(default_factory=list)
    not_shown: dict[str, str] = field(default_factory=dict)  # file -> why
    not_kept: list[str] = field(default_factory=list)  # files whose content was not kept
    not_kept_sides: list[str] = field(default_factory=list)


def _changed_rows(
    old: _Side, new: _Side, pairs: list[tuple[str, str]], key: str | None, limit: int
) -> RowsShown:
    """Compare each changed file's two contents row by row, where both are at hand."""
    from agent.data.row_diff import NotTextError, diff_rows
    from agent.ledger.artifacts import ArtifactStore

    shown = RowsShown()
    if not pairs:
        return shown
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    for old_name, new_name in pairs:
        before, after = old.content_path(store, old_name), new.content_path(store, new_name)
        if before is None or after is None:
            shown.not_kept.append(new_name)
            shown.not_shown[new_name] = "content not kept"
            for side, path in ((old, before), (new, after)):
                if path is None and side.label() not in shown.not_kept_sides:
                    shown.not_kept_sides.append(side.label())
            continue
        try:
            shown.diffs.append(diff_rows(before, after, new_name, key=key, sample=limit))
        except NotTextError as error:
            shown.not_shown[new_name] = str(error)
    return shown


def _print_rows(console: Any, rows: RowsShown, limit: int) -> None:
    for found in rows.diffs:
        console.print(f"  rows     {found.path}: {found.summary()}", markup=False)
        if found.header_changed:
            console.print(f"    header {found.old_header} → {found.new_header}", markup=False)
        for mark, lines, count in (
            ("+", found.sample_added, found.added),
            ("-", found.sample_removed, found.removed),
        ):
            for line in lines:
                console.print(f"    {mark} {line}", markup=False)
            if count > len(lines) and limit > 0:
                console.print(f"    {mark} … {count - len(lines)} more", markup=False)
        for changed_row in found.sample_changed:
            console.print(f"    ~ {changed_row.describe(found.key or '')}", markup=False)
        if found.changed > len(found.sample_changed) and limit > 0:
            console.print(f"    ~ … {found.changed - len(found.sample_changed)} more", markup=False)
    for name, why in rows.not_shown.items():
        if name not in rows.not_kept:
            console.print(f"  rows     {why}", markup=False)
    if rows.not_kept:
        console.print(
            f"  rows     not shown for {', '.join(rows.not_kept)}: the content of "
            f"{' and '.join(rows.not_kept_sides)} was not kept (keep it with [watch] "
            "keep_data in config.toml for snapshots, keep_data in watchkeeper.toml for "
            "training)",
            markup=False,
        )


def _drift_of(
    db: Database, old: _Side, new: _Side, relative: str, method: str | None
) -> DriftReport | None:
    try:
        reference = old.profile(db, relative)
        current = new.profile(db, relative)
    except WatchkeeperError as error:
        return DriftReport(relative, [], error=str(error))
    if reference is None or current is None:
        return None
    return drift_between_profiles(reference, current, relative, method=method)


def _drift_of_files(db: Database, old: _Side, new: _Side) -> DriftReport | None:
    old_name = next(iter(old.fingerprint.files))
    new_name = next(iter(new.fingerprint.files))
    if not (is_tabular(old_name) and is_tabular(new_name)):
        return None
    try:
        reference = old.profile(db, old_name)
        current = new.profile(db, new_name)
    except WatchkeeperError as error:
        return DriftReport(new_name, [], error=str(error))
    if reference is None or current is None:
        return None
    return drift_between_profiles(reference, current, new_name)


@data.command("drift")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--against",
    "model_ref",
    required=True,
    metavar="MODEL[@VERSION]",
    help="The model version whose training data is the reference (default: its newest version).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the drift reports as JSON.")
@click.option("--psi", is_flag=True, help="Use PSI for every column instead of the defaults.")
@click.pass_context
def drift_command(ctx: click.Context, path: Path, model_ref: str, as_json: bool, psi: bool) -> None:
    """Per-column drift of the CSV files in PATH against the data a model version trained on.

    Numeric columns (more than 5 distinct values): KS test on up to 1,000 reference rows,
    normed Wasserstein distance above that; other columns: chi-square, then Jensen-Shannon.
    Exits 1 when a file shows dataset drift (at least half of its columns drifted).
    """
    from agent.ledger.queries import ModelRef

    method = "psi" if psi else None
    target = resolve_data_path(path)
    with common.ledger_session(settle_runs=False) as db:
        version = _find_version(db, ModelRef.parse(model_ref))
        reports, reference = _drift_against_version(db, version, target, method)
    label = f"{version['model']}@{version['version']}"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "model": version["model"],
                    "version": version["version"],
                    "path": str(target),
                    "reference": reference,
                    "reports": [report.to_json() for report in reports],
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        _print_drift(common.console(), reports, label, reference)
    failures = [report.error for report in reports if report.error]
    if failures:
        raise WatchkeeperError(failures[0])
    ctx.exit(EXIT_DIFFERENT if any(report.dataset_drift for report in reports) else 0)


def _find_version(db: Database, ref: Any) -> dict[str, Any]:
    """The version named; without a version, the newest that succeeded (else the newest)."""
    from agent.ledger.queries import find_version, versions

    if ref.version is not None:
        return find_version(db, ref, None)
    rows = versions(db, model=ref.name)
    if not rows:
        return find_version(db, ref, None)  # raises the error listing the models there are
    succeeded = [row for row in rows if row["status"] == "succeeded"]
    return (succeeded or rows)[0]


def _drift_against_version(
    db: Database, version: dict[str, Any], target: Path, method: str | None
) -> tuple[list[DriftReport], str]:
    """Drift reports of `target` and a description of the reference data used."""
    data_deps: dict[str, Any] = version.get("data") or {}
    label = f"{version['model']}@{version['version']}"
    if not data_deps:
        raise WatchkeeperError(f"{label} recorded no data deps, so there is nothing to compare")
    repo = Path(version.get("repo_path") or version.get("repo") or ".")
    deps = {dep: (repo / dep).resolve() for dep in data_deps}
    for dep, dep_path in deps.items():
        if target == dep_path or target.is_relative_to(dep_path):
            snapshot_id = int(data_deps[dep]["snapshot_id"])
            reports = drift_against_snapshot(db, snapshot_id, dep_path, method=method)
            inside = [
                report
                for report in reports
                if (dep_path / report.path if dep_path.is_dir() else dep_path).is_relative_to(
                    target
                )
                or target == dep_path
            ]
            return inside, f"{dep} (snapshot {snapshot_id})"
    if target.is_file():
        return _drift_of_other_file(db, data_deps, target, label, method)
    folder_deps = [dep for dep, dep_path in deps.items() if dep_path.is_dir()]
    if len(folder_deps) == 1:
        dep = folder_deps[0]
        snapshot_id = int(data_deps[dep]["snapshot_id"])
        return (
            drift_against_snapshot(db, snapshot_id, target, method=method),
            f"{dep} (snapshot {snapshot_id})",
        )
    raise WatchkeeperError(
        f"{target} is not one of the data deps of {label} ({', '.join(sorted(deps))}); "
        "give a path inside one of them, or a CSV file named like one of its files"
    )


def _drift_of_other_file(
    db: Database, data_deps: dict[str, Any], target: Path, label: str, method: str | None
) -> tuple[list[DriftReport], str]:
    """Compare a file outside the deps with the training CSV of the same name (or the only one)."""
    candidates: list[tuple[str, int, str, str]] = []
    for dep, record in data_deps.items():
        snapshot_id = int(record["snapshot_id"])
        for relative, entry in load_snapshot(db, snapshot_id).files.items():
            if is_tabular(relative):
                candidates.append((dep, snapshot_id, relative, entry.digest))
    same_name = [c for c in candidates if Path(c[2]).name == target.name]
    chosen = same_name if same_name else candidates
    if len(chosen) != 1:
        names = ", ".join(f"{dep}:{relative}" for dep, _, relative, _ in candidates) or "none"
        raise WatchkeeperError(
            f"cannot tell which training file {target.name} should be compared with; "
            f"the CSV files of {label} are: {names}. Name the file like one of them."
        )
    dep, snapshot_id, relative, digest = chosen[0]
    reference = load_profile(db, digest)
    if reference is None:
        raise WatchkeeperError(f"{dep}:{relative} of {label} has no stored column profile")
    current = profile_csv(target)
    report = drift_between_profiles(reference, current, str(target), method=method)
    return [report], f"{dep}:{relative} (snapshot {snapshot_id})"


def _print_drift(console: Console, reports: list[DriftReport], label: str, reference: str) -> None:
    console.print(f"drift against {label}: {reference}", markup=False)
    if not reports:
        console.print("  no CSV file changed since that snapshot", markup=False)
        return
    for report in reports:
        if report.error is not None:
            console.print(f"{report.path}: {report.summary()}", markup=False)
            continue
        table = Table(title=f"{report.path}: {report.summary()}", title_justify="left")
        for heading in ("column", "kind", "test", "statistic", "threshold", "drift"):
            table.add_column(
                heading, justify="right" if heading in ("statistic", "threshold") else "left"
            )
        for column in report.columns:
            table.add_row(
                column.column,
                column.kind,
                column.test,
                f"{column.statistic:.4g}",
                f"{column.threshold:g}",
                "DRIFT" if column.drifted else "-",
            )
        console.print(table)
