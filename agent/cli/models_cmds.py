"""The `models` commands that name, promote, compare and export versions."""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlite_utils import Database

from agent.cli import common
from agent.errors import WatchkeeperError
from agent.ledger import write_transaction
from agent.ledger.queries import ModelRef, find_version, repo_id_for
from agent.ledger.versions import (
    add_note,
    alias_history,
    comparison,
    last_versions,
    parse_tag,
    promote,
    remove_alias,
    remove_tag,
    set_alias,
    set_tag,
    sort_comparison,
)
from agent.project.git import repo_root

MAX_COMPARED = 100_000


def current_repo_id(db: Database) -> int | None:
    """The ledger id of the repo the command runs in (None outside one, or unregistered)."""
    try:
        return repo_id_for(db, repo_root(Path.cwd()))
    except WatchkeeperError:
        return None


def resolve(db: Database, reference: str) -> dict[str, Any]:
    """The version a reference names: MODEL[@VERSION|@ALIAS|@latest|@current] or a run id."""
    return find_version(db, ModelRef.parse(reference), current_repo_id(db))


def _label(version: dict[str, Any]) -> str:
    return f"{version['model']} v{version['version']}"


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


@click.command("promote")
@click.argument("reference", metavar="MODEL@VERSION")
@click.option(
    "--write-params",
    is_flag=True,
    help="Also write the version's params into watchkeeper.toml (comments are kept).",
)
def models_promote(reference: str, write_params: bool) -> None:
    """Make a version the model's current one: its staleness is judged against it."""
    from agent.project.spec import load_project, with_declared_params

    console = common.console()
    with common.ledger_session() as db:
        version = resolve(db, reference)
        params = version["params"] or {}
        new_text: str | None = None
        if write_params:
            project = load_project(Path(version["repo_path"]))
            project.model(version["model"])
            new_text = with_declared_params(project, version["model"], params)
        with write_transaction(db):
            promote(db, version, params_written=new_text is not None)
        if new_text is not None:
            _replace_file(Path(version["repo_path"]) / "watchkeeper.toml", new_text)
        console.print(
            f"{_label(version)} is now the current version of {version['model']}.", markup=False
        )
        if new_text is not None:
            console.print(
                f"wrote its params into {version['repo_path']}/watchkeeper.toml: "
                f"{json.dumps(params, sort_keys=True)}",
                markup=False,
            )
        elif version.get("experiment"):
            console.print(
                f"note: {_label(version)} is an experiment; watchkeeper.toml still declares "
                "other params, so the model shows stale (params changed) until you run "
                f"`watchkeeper models promote {reference} --write-params` or retrain.",
                markup=False,
            )


def _replace_file(path: Path, text: str) -> None:
    """Write a file through a temporary one in the same folder, keeping its mode."""
    temporary = path.with_name(f".{path.name}.wk-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    try:
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@click.command("alias")
@click.argument("reference", metavar="MODEL@VERSION")
@click.argument("alias")
@click.option("--remove", is_flag=True, help="Remove ALIAS from MODEL (its history is kept).")
def models_alias(reference: str, alias: str, remove: bool) -> None:
    """Name a version MODEL@ALIAS (such as churn@champion); the alias moves if it exists."""
    with common.ledger_session() as db:
        if remove:
            ref = ModelRef.parse(reference)
            version = find_version(db, ModelRef(ref.name), current_repo_id(db))
            with write_transaction(db):
                was = remove_alias(db, int(version["model_id"]), ref.name, alias)
            click.echo(f"removed alias {ref.name}@{alias} (it named v{was})")
            return
        version = resolve(db, reference)
        with write_transaction(db):
            before = set_alias(db, version, alias)
    moved = "" if before in (None, version["version"]) else f" (moved from v{before})"
    click.echo(f"{version['model']}@{alias} -> v{version['version']}{moved}")


@click.command("aliases")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True)
def models_aliases(model: str, as_json: bool) -> None:
    """List a model's aliases with their history: where each pointed, and when."""
    with common.ledger_session() as db:
        version = find_version(db, ModelRef(ModelRef.parse(model).name), current_repo_id(db))
        history = alias_history(db, int(version["model_id"]))
    if as_json:
        click.echo(json.dumps(history, indent=2))
        return
    if not history:
        click.echo(
            f"{version['model']} has no aliases; set one with "
            f"`watchkeeper models alias {version['model']}@N NAME`"
        )
        return
    table = Table("alias", "version", "since", "until")
    for entry in history:
        table.add_row(
            entry["alias"],
            f"v{entry['version']}",
            _when(entry["set_at"]),
            _when(entry["moved_at"]) if entry["moved_at"] else "now",
        )
    common.console().print(table)


@click.command("tag")
@click.argument("reference", metavar="MODEL@VERSION")
@click.argument("tags", nargs=-1, metavar="KEY=VALUE...")
@click.option("--remove", "removals", multiple=True, metavar="KEY", help="Remove a tag.")
def models_tag(reference: str, tags: tuple[str, ...], removals: tuple[str, ...]) -> None:
    """Tag a version with KEY=VALUE pairs (a key set again takes the new value)."""
    if not tags and not removals:
        raise WatchkeeperError("give KEY=VALUE tags to set (or --remove KEY), such as dataset=v2")
    pairs = [parse_tag(tag) for tag in tags]
    with common.ledger_session() as db:
        version = resolve(db, reference)
        with write_transaction(db):
            for key, value in pairs:
                set_tag(db, int(version["id"]), key, value)
            missing = [key for key in removals if not remove_tag(db, int(version["id"]), key)]
    if missing:
        raise WatchkeeperError(f"{_label(version)} had no tag {', '.join(missing)}")
    for key, value in pairs:
        click.echo(f"{_label(version)}: {key}={value}")
    for key in removals:
        click.echo(f"{_label(version)}: removed {key}")


@click.command("note")
@click.argument("reference", metavar="MODEL@VERSION")
@click.argument("text")
def models_note(reference: str, text: str) -> None:
    """Add a dated note to a version (shown by `models show`)."""
    with common.ledger_session() as db:
        version = resolve(db, reference)
        with write_transaction(db):
            add_note(db, int(version["id"]), text)
    click.echo(f"noted on {_label(version)}")


@click.command("compare")
@click.argument("references", nargs=-1, metavar="REF...")
@click.option(
    "--last",
    "last",
    type=click.IntRange(1, MAX_COMPARED),
    metavar="N",
    help="Compare the newest N versions of the model REF names.",
)
@click.option(
    "--sort", "sort_key", metavar="NAME", help="Sort by a metric or param (-NAME for descending)."
)
@click.option(
    "--sweep",
    "sweep_id",
    metavar="ID",
    help="Compare the versions of a sweep (its id, or a unique start or end of it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (one row per version).")
def models_compare(
    references: tuple[str, ...],
    last: int | None,
    sort_key: str | None,
    sweep_id: str | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Versions side by side: params and metrics as columns, the params that differ in bold.

    REF is MODEL@VERSION, MODEL@ALIAS, a run id... With --last N, one REF names the model;
    with --sweep ID, the versions of that sweep (a REF, if given, names its model).
    """
    if not references and sweep_id is None:
        raise WatchkeeperError(
            "name versions to compare (churn@3 churn@champion), a model "
            "with --last N (churn --last 10), or a sweep (churn --sweep ID)"
        )
    with common.ledger_session(settle_runs=False) as db:
        if sweep_id is not None:
            rows = _sweep_versions(db, sweep_id, references, last)
        elif last is not None:
            if len(references) != 1:
                raise WatchkeeperError("--last N compares one model's versions: give one MODEL")
            newest = find_version(
                db, ModelRef(ModelRef.parse(references[0]).name), current_repo_id(db)
            )
            rows = last_versions(db, int(newest["model_id"]), last)
        else:
            rows = [resolve(db, reference) for reference in references]
        report = comparison(db, rows)
    if sort_key:
        sort_comparison(report, sort_key)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    elif as_csv:
        _write_csv(report)
    else:
        _print_comparison(report)


def _sweep_versions(
    db: Database, sweep_id: str, references: tuple[str, ...], last: int | None
) -> list[dict[str, Any]]:
    """The versions of the sweep `sweep_id` names, in grid order."""
    from agent.ledger.queries import VERSION_SELECT, decode_row
    from agent.runs.sweeps import find_sweep

    if last is not None or len(references) > 1:
        raise WatchkeeperError(
            "--sweep ID compares the versions of one sweep: give at most one MODEL and no --last"
        )
    sweep = find_sweep(db, sweep_id)
    if sweep is None:
        recent = [
            row[0] for row in db.execute("SELECT id FROM sweeps ORDER BY created_at DESC LIMIT 5")
        ]
        listed = ", ".join(recent) or "none yet (watchkeeper train MODEL --sweep NAME=A,B)"
        raise WatchkeeperError(f"--sweep {sweep_id}: no sweep has that id; recent sweeps: {listed}")
    rows = [
        decode_row(row)
        for row in db.query(
            VERSION_SELECT + " WHERE v.sweep_id = ? ORDER BY v.version", [sweep["id"]]
        )
    ]
    if references:
        model = ModelRef.parse(references[0]).name
        named = {row["model"] for row in rows}
        if named and model not in named:
            raise WatchkeeperError(
                f"sweep {sweep['id']} trained {', '.join(sorted(named))}, not {model}"
            )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value)


def _marks(entry: dict[str, Any]) -> str:
    marks = [*(f"@{alias}" for alias in entry["aliases"])]
    if entry["current"]:
        marks.insert(0, "current")
    if entry["experiment"]:
        marks.append("experiment")
    return " ".join(marks)


BOLD, CYAN, RESET = "\x1b[1m", "\x1b[36m", "\x1b[0m"


def _print_comparison(report: dict[str, Any]) -> None:
    """Aligned columns, the differing params bold (on a terminal or with FORCE_COLOR).

    Written directly rather than through a rich Table, which takes seconds for 1,000 rows.
    """
    differing = set(report["differing_params"])
    header = ["version", "status", "", *report["params"], *report["metrics"]]
    styles = ["", "", ""]
    styles += [BOLD if name in differing else "" for name in report["params"]]
    styles += [CYAN] * len(report["metrics"])
    right = [False] * (3 + len(report["params"])) + [True] * len(report["metrics"])
    rows = [
        [
            f"{entry['model']} v{entry['version']}",
            entry["status"],
            _marks(entry),
            *(_cell(entry["params"].get(name)) for name in report["params"]),
            *(_cell(entry["metrics"].get(name)) for name in report["metrics"]),
        ]
        for entry in report["versions"]
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    console = common.console()
    coloured = console.color_system is not None
    lines = [_line(header, widths, styles, right, coloured, header=True)]
    lines.append("  ".join("─" * width for width in widths))
    lines.extend(_line(row, widths, styles, right, coloured) for row in rows)
    if differing:
        lines.append(f"params that differ (bold): {', '.join(sorted(differing))}")
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def _line(
    cells: list[str],
    widths: list[int],
    styles: list[str],
    right: list[bool],
    coloured: bool,
    *,
    header: bool = False,
) -> str:
    parts = []
    for cell, width, style, align_right in zip(cells, widths, styles, right, strict=True):
        padding = " " * (width - len(cell))
        if coloured and style and (style == BOLD or header):
            cell = f"{style}{cell}{RESET}"
        parts.append(padding + cell if align_right else cell + padding)
    return "  ".join(parts).rstrip()


def _write_csv(report: dict[str, Any]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(
        ["model", "version", "run_id", "status", "current", "experiment", "aliases"]
        + [f"param:{name}" for name in report["params"]]
        + [f"metric:{name}" for name in report["metrics"]]
    )
    for entry in report["versions"]:
        writer.writerow(
            [
                entry["model"],
                entry["version"],
                entry["run_id"],
                entry["status"],
                int(entry["current"]),
                int(entry["experiment"]),
                " ".join(entry["aliases"]),
            ]
            + [_csv_value(entry["params"].get(name)) for name in report["params"]]
            + [_csv_value(entry["metrics"].get(name)) for name in report["metrics"]]
        )


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


@click.command("get")
@click.argument("reference", metavar="REF")
@click.argument("wanted", nargs=-1, metavar="[PATH]...")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The folder to copy into.",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist in the folder.")
def models_get(reference: str, wanted: tuple[str, ...], out_dir: Path, force: bool) -> None:
    """Copy a version's artifacts (all, or the PATHs named) out of the artifact store.

    Each file is checked against the digest the ledger recorded; existing files are kept
    unless --force.
    """
    from agent.ledger.artifacts import ArtifactStore, export_artifacts, select_artifacts
    from agent.paths import WatchkeeperPaths

    with common.ledger_session(settle_runs=False) as db:
        version = resolve(db, reference)
    artifacts = version["artifacts"] or {}
    if not artifacts:
        raise WatchkeeperError(
            f"{_label(version)} ({version['status']}) has no artifacts to copy; "
            f"`watchkeeper models show {version['model']}@{version['version']}` says why"
        )
    chosen = select_artifacts(artifacts, list(wanted), _label(version))
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    _fetch_shared(version, chosen, store)
    written = export_artifacts(store, chosen, out_dir, force=force)
    for path in written:
        click.echo(str(path))
    click.echo(f"copied {len(written)} artifacts of {_label(version)} into {out_dir}", err=True)


@click.command("delete")
@click.argument("references", nargs=-1, required=True, metavar="REF...")
@click.option(
    "--force", is_flag=True, help="Delete aliased or current versions too (never running ones)."
)
def models_delete(references: tuple[str, ...], force: bool) -> None:
    """Mark versions deleted: hidden from listings, their blobs freed by `watchkeeper gc`.

    A running version is refused; an aliased or current one unless --force. Nothing is
    marked unless every REF can be.
    """
    from agent.ledger.gc import delete_version

    with common.ledger_session() as db, write_transaction(db):
        chosen = [resolve(db, reference) for reference in references]
        marked = [version for version in chosen if delete_version(db, version, force=force)]
    for version in chosen:
        done = "deleted" if version in marked else "was already deleted"
        click.echo(f"{_label(version)} {done}")
    if marked:
        click.echo("run `watchkeeper gc` to free what only deleted versions held", err=True)


def _fetch_shared(version: dict[str, Any], chosen: dict[str, str], store: Any) -> None:
    """Bring the chosen artifacts the local store lacks from the shared store, or fail naming
    the ones nobody has."""
    from agent.ledger.blobs import ARTIFACT, VersionBlob
    from agent.share.blob_store import fetch_blobs, missing_blobs_message

    wanted = [VersionBlob(ARTIFACT, path, digest) for path, digest in chosen.items()]
    with common.ledger_session(settle_runs=False) as db:
        report = fetch_blobs(db, store, version, wanted)
    if report.fetched:
        click.echo(f"fetched {len(report.fetched)} artifacts from {report.store}", err=True)
    if report.missing:
        raise WatchkeeperError(missing_blobs_message(_label(version), report))


# Commands of the `models` group defined elsewhere, imported when used (`compare` stays fast).
ELSEWHERE = {
    "list": "agent.cli.ledger_cmds:models_list",
    "show": "agent.cli.ledger_cmds:models_show",
    "diff": "agent.cli.ledger_cmds:models_diff",
}


class _ModelsGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *ELSEWHERE])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in ELSEWHERE:
            module_name, attribute = ELSEWHERE[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module_name), attribute)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_ModelsGroup)
def models() -> None:
    """Model versions recorded in the ledger.

    A version is named MODEL (the newest), MODEL@N, MODEL@ALIAS, MODEL@latest, MODEL@current,
    or by its run id (or a unique start or end of it).
    """


for _command in (
    models_promote,
    models_alias,
    models_aliases,
    models_tag,
    models_note,
    models_compare,
    models_get,
    models_delete,
):
    models.add_command(_command)
