"""The `init`, `train`, `status`, `models list/show/diff` and `runs` commands, over the ledger."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn
from rich.table import Table
from sqlite_utils import Database

from agent.cli import common
from agent.errors import WatchkeeperError
from agent.ledger import write_transaction
from agent.ledger.queries import (
    ModelRef,
    find_run,
    find_version,
    is_builtin_repo,
    list_repos,
    register_repo,
    repo_id_for,
)
from agent.ledger.queries import (
    runs as list_runs,
)
from agent.paths import WatchkeeperPaths
from agent.project.git import repo_root
from agent.project.spec import SPEC_FILE, TEMPLATE, load_project, repos_declaring
from agent.reports import list_versions, run_json, status_report, version_diff
from agent.runs.executor import LocalExecutor, Run, RunState, executor_for
from agent.runs.training import TrainResult, reconcile_runs
from agent.runs.training import train as train_model
from agent.staleness import (
    RepoScan,
    StalenessChecker,
    builtin_findings,
    registered_roots,
    scan_repos,
)

EXIT_CANCELLED = 130
CANCEL_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _duration(start: float | None, end: float | None) -> str:
    if not start:
        return "-"
    seconds = (end or time.time()) - start
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _current_repo_id(db: Database) -> int | None:
    try:
        return repo_id_for(db, repo_root(Path.cwd()))
    except WatchkeeperError:
        return None


@click.command()
@click.argument("path", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--from-dvc",
    is_flag=True,
    help="Translate the repo's dvc.yaml stages (and params.yaml) into models, saying what "
    "could not be translated.",
)
def init(path: Path | None, from_dvc: bool) -> None:
    """Write a commented watchkeeper.toml at the repo root (if none) and register the repo."""
    root = repo_root((path or Path.cwd()).resolve())
    spec_path = root / SPEC_FILE
    if from_dvc:
        message = _init_from_dvc(root)
    elif spec_path.exists():
        project = load_project(root)
        message = f"{spec_path} already exists ({len(project.models)} models); kept it."
    else:
        spec_path.write_text(TEMPLATE, encoding="utf-8")
        message = f"wrote {spec_path}; declare your models there."
    with common.ledger_session() as db, write_transaction(db):
        register_repo(db, root)
    click.echo(message)
    click.echo(f"registered {root} in the ledger.")


def _init_from_dvc(root: Path) -> str:
    """Add the models of dvc.yaml to watchkeeper.toml; print what was not translated."""
    from agent.interop.dvc import convert_dvc, spec_text_with

    spec_path = root / SPEC_FILE
    conversion = convert_dvc(root)
    existing = spec_path.read_text(encoding="utf-8") if spec_path.exists() else None
    text = spec_text_with(root, existing, conversion)
    spec_path.write_text(text, encoding="utf-8")
    for note in conversion.notes:
        click.echo(note)
    names = ", ".join(conversion.models) or "none"
    return f"wrote {spec_path} with the models of dvc.yaml: {names}."


@click.command()
@click.argument("model")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a declared param for this run (repeatable).",
)
@click.option("--remote", metavar="NAME", help="Train on this configured remote instead.")
@click.option(
    "--repo",
    "repo",
    type=click.Path(file_okay=False, path_type=Path),
    help="The repo declaring MODEL. Default: the current repo, else the registered repo that "
    "declares MODEL.",
)
@click.option(
    "--allow-concurrent",
    is_flag=True,
    help="Train even while another run of MODEL is active.",
)
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    metavar="NAME=VALUES",
    help="Sweep a param: NAME=A,B,C, NAME=log:LOW:HIGH:COUNT or NAME=lin:LOW:HIGH:COUNT "
    "(repeatable; every combination is trained, as versions sharing a sweep id).",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 10_000),
    metavar="N",
    help="With --sweep: at most N points run at once. Default: 1 here and over SSH; on Slurm "
    "the job array runs as many tasks as Slurm allows.",
)
@click.option("--yes", is_flag=True, help="With --sweep: queue a grid of more than 1,000 points.")
@click.pass_context
def train(
    ctx: click.Context,
    model: str,
    params: tuple[str, ...],
    remote: str | None,
    repo: Path | None,
    allow_concurrent: bool,
    sweeps: tuple[str, ...],
    parallel: int | None,
    yes: bool,
) -> None:
    """Train MODEL of this repo and record a model version; the log streams here.

    With --sweep, every combination of the swept values is trained (a grid), each as its own
    version; progress is shown per point, and each point's log is in `watchkeeper runs logs
    RUN`. Ctrl-C, or `watchkeeper runs cancel SWEEP_ID`, cancels every point not yet ended.
    """
    if not sweeps and (parallel is not None or yes):
        raise WatchkeeperError("--parallel and --yes go with --sweep NAME=VALUES")
    out = sys.stdout.buffer
    console = common.console(err=True)

    def on_log(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    progress = Progress(
        TextColumn("fingerprinting {task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def on_data_progress(dep: str, done: int, total: int) -> None:
        if not tasks:
            progress.start()
        if dep not in tasks:
            tasks[dep] = progress.add_task(dep, total=total)
        progress.update(tasks[dep], completed=done, total=total)

    def stop_progress() -> None:
        if tasks:
            progress.stop()
            tasks.clear()

    def on_start(run: Run, version: int) -> None:
        stop_progress()
        console.print(f"[bold]training {model} v{version}[/] run {run.id} ({run.executor})")

    if sweeps:
        from agent.cli.sweep_output import run_sweep

        with common.ledger_session() as db, _signals_cancel():
            root = _training_repo(db, model, repo, console)
            try:
                failed = run_sweep(
                    console,
                    root=root,
                    model=model,
                    sweeps=list(sweeps),
                    params=list(params),
                    parallel=parallel,
                    remote=remote,
                    confirmed=yes,
                    allow_concurrent=allow_concurrent,
                    db=db,
                    on_data_progress=on_data_progress,
                    stop_progress=stop_progress,
                )
            except KeyboardInterrupt:
                ctx.exit(EXIT_CANCELLED)
            finally:
                stop_progress()
        _tell_the_agent(root)
        ctx.exit(1 if failed else 0)
    with common.ledger_session() as db, _signals_cancel():
        root = _training_repo(db, model, repo, console)
        try:
            result = train_model(
                root,
                model,
                param_pairs=list(params),
                remote=remote,
                allow_concurrent=allow_concurrent,
                db=db,
                on_log=on_log,
                on_start=on_start,
                on_data_progress=on_data_progress,
            )
        except KeyboardInterrupt:
            console.print(
                f"[yellow]cancelled[/]: the run of {model} was stopped and recorded as cancelled."
            )
            ctx.exit(EXIT_CANCELLED)
        finally:
            stop_progress()
    _tell_the_agent(root)
    _report_training(ctx, console, result)


def _tell_the_agent(root: Path) -> None:
    """Ask a running agent to judge the repo's models now (a new version may resolve alerts)."""
    from agent.client import AgentClient
    from agent.daemon.lifecycle import running_pid

    paths = WatchkeeperPaths.from_environment()
    if running_pid(paths) is None:
        return
    client = AgentClient.connect_or_none(paths.socket)
    if client is None:
        return
    with client, contextlib.suppress(Exception):  # the agent's rescan catches up anyway
        client.call("check", repo=str(root))


def _training_repo(db: Database, model: str, given: Path | None, console: Console) -> Path:
    """The repo to train in: --repo, else the current one, else the registered one with MODEL."""
    if given is not None:
        return repo_root(given.expanduser().resolve())
    try:
        here: Path | None = repo_root(Path.cwd())
    except WatchkeeperError:
        here = None
    if here is not None and (here / SPEC_FILE).is_file():
        return here
    registered = [Path(row["path"]) for row in list_repos(db) if not is_builtin_repo(row["path"])]
    declaring = repos_declaring(registered, model)
    if len(declaring) == 1:
        console.print(f"training {model} in {declaring[0]} (declared there)", markup=False)
        return declaring[0]
    if declaring:
        raise WatchkeeperError(
            f"several registered repos declare a model named {model!r}: "
            f"{', '.join(map(str, declaring))}; pass --repo PATH to choose one."
        )
    if here is None:
        raise WatchkeeperError(
            f"{Path.cwd()} is not inside a git repository and no registered repo declares a "
            f"model named {model!r}; cd into the model's repo or pass --repo PATH."
        )
    return here


@contextmanager
def _signals_cancel() -> Iterator[None]:
    """While training, SIGTERM and SIGHUP cancel the run like Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in CANCEL_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _report_training(ctx: click.Context, console: Console, result: TrainResult) -> None:
    label = f"{result.model} v{result.version}"
    for note in result.notes:
        console.print(f"[yellow]note[/]: {escape(note)}")
    if result.step_warning:
        console.print(f"[yellow]warning[/]: {escape(result.step_warning)}")
    if result.status == "succeeded":
        metrics = ", ".join(f"{key}={value:g}" for key, value in result.metrics.items())
        console.print(
            f"[green]{label} succeeded[/] (run {result.run_id}); "
            f"{len(result.artifacts)} artifacts" + (f"; {metrics}" if metrics else "")
        )
        return
    if result.problem and result.exit_code == 0:
        raise WatchkeeperError(f"{label} was recorded as failed: {result.problem}")
    if result.problem:
        raise WatchkeeperError(f"{label} was recorded as {result.status}: {result.problem}")
    if result.exit_code is None:
        raise WatchkeeperError(
            f"{label} was recorded as {result.status}: the run ended without an exit code (its "
            f"process was killed). Log: watchkeeper runs logs {result.run_id}"
        )
    exit_code = result.exit_code
    hint = ""
    if exit_code == 127:
        hint = " (command not found: check the train command in watchkeeper.toml)"
    elif exit_code == 126:
        hint = " (the command is not executable)"
    console.print(
        f"[red]{label} failed[/]: the train command exited {exit_code}{hint}; "
        f"recorded as {result.status}. Last lines of the log:"
    )
    console.print(result.log_tail, markup=False)
    ctx.exit(exit_code)


def _status_roots(db: Database, repo_option: Path | None) -> list[tuple[Path, int | None]]:
    """The repos `status` checks: --repo alone, else the registered ones plus the current repo.

    The current repo counts when its watchkeeper.toml declares models, even if it is not
    registered (a fresh CI clone): its models are then `never trained`.
    """
    if repo_option is not None:
        root = repo_root(repo_option)
        if not (root / SPEC_FILE).exists():
            raise WatchkeeperError(
                f"{root / SPEC_FILE} does not exist; --repo needs a repo that "
                "declares models (`watchkeeper init` writes one)."
            )
        return [(root, repo_id_for(db, root))]
    roots = registered_roots(db)
    try:
        here = repo_root(Path.cwd())
    except WatchkeeperError:
        return roots
    if (here / SPEC_FILE).exists() and all(root != here for root, _ in roots):
        roots.append((here, repo_id_for(db, here)))
    return roots


def _where_looked(roots: list[tuple[Path, int | None]]) -> str:
    places = ", ".join(str(root) for root, _ in roots) or "no registered repos"
    return f"looked in {places} and in {Path.cwd()}"


@click.command()
@click.argument("model_names", nargs=-1, metavar="[MODEL]...")
@click.option(
    "--repo",
    "repo_option",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Check only the models of this repo.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON report.")
@click.pass_context
def status(
    ctx: click.Context, model_names: tuple[str, ...], repo_option: Path | None, as_json: bool
) -> None:
    """Say which models are fresh, stale or never trained, with every reason.

    Exit 0 when every model checked is fresh, 1 when one is stale or never trained, 2 on an
    error or when no model was found.
    """
    with common.ledger_session() as db:
        roots = _status_roots(db, repo_option)
        scans = scan_repos(db, roots, names=model_names or None)
        builtin = [] if model_names or repo_option else builtin_findings(db)
        if model_names:
            found = {finding.model for scan in scans for finding in scan.findings}
            unknown = [name for name in model_names if name not in found]
            if unknown:
                known = sorted({name for scan in scan_repos(db, roots) for name in _declared(scan)})
                raise WatchkeeperError(
                    f"no model named {', '.join(unknown)} is declared; models: "
                    f"{', '.join(known) or 'none'} ({_where_looked(roots)})"
                )
        logged_otherwise = _mlflow_mismatches(db, scans)
    report = status_report(scans, builtin)
    for repo in report["repos"]:
        for entry in repo["models"]:
            entry["mlflow_mismatch"] = logged_otherwise.get((repo["path"], entry["model"]))
    checked = any(repo["models"] or repo["error"] for repo in report["repos"])
    if as_json:
        _echo_json(report)
    else:
        _print_status(report)
    if not checked and not report["builtin"]:
        click.echo(
            f"error: no repo declares models ({_where_looked(roots)}); run `watchkeeper init` "
            "in a git repo, or `watchkeeper demo` for an example.",
            err=True,
        )
        ctx.exit(2)
    if report["errors"]:
        ctx.exit(2)
    ctx.exit(1 if report["stale"] or report["never_trained"] else 0)


def _mlflow_mismatches(db: Database, scans: list[RepoScan]) -> dict[tuple[str, str], str]:
    """(repo, model) -> the line about params its version's code logged otherwise."""
    from agent.interop.mlflow_capture import describe_mismatches

    found: dict[tuple[str, str], str] = {}
    for scan in scans:
        for finding in scan.findings:
            if not finding.version:
                continue
            row = db.execute(
                "SELECT v.mlflow FROM model_versions v JOIN models m ON m.id = v.model_id "
                "JOIN repos r ON r.id = m.repo_id WHERE r.path = ? AND m.name = ? "
                "AND v.version = ?",
                [str(scan.root), finding.model, finding.version],
            ).fetchone()
            line = describe_mismatches(json.loads(row[0])) if row and row[0] else None
            if line:
                found[(str(scan.root), finding.model)] = line
    return found


def _declared(scan: RepoScan) -> list[str]:
    return [finding.model for finding in scan.findings]


STATE_COLOURS = {"fresh": "green", "stale": "red", "never trained": "yellow", "error": "red"}


def _print_status(report: dict[str, Any]) -> None:
    console = common.console()
    for repo in report["repos"]:
        console.print(f"[bold]{repo['path']}[/]")
        if repo["error"]:
            console.print(f"  [red]error[/]: {escape(repo['error'])}")
        if not repo["models"] and not repo["error"]:
            console.print(f"  no models declared in {SPEC_FILE}")
        for entry in repo["models"]:
            version = f"v{entry['version']}" if entry["version"] else "-"
            colour = STATE_COLOURS.get(entry["state"], "white")
            latest = entry["latest_status"]
            attempt = f" (newest run {latest})" if latest not in (None, "succeeded") else ""
            console.print(f"  [{colour}]{entry['state']}[/] {entry['model']} {version}{attempt}")
            if entry["error"]:
                console.print(f"        - {entry['error']}", markup=False)
            if entry.get("mlflow_mismatch"):
                console.print(f"        - {entry['mlflow_mismatch']}", markup=False)
            for reason in entry["reasons"]:
                console.print(f"        - {reason['message']}", markup=False)
                for drift in reason["drift"]:
                    console.print(f"          drift: {drift}", markup=False)
    if report["builtin"]:
        console.print("[bold]built-in models[/]")
    for entry in report["builtin"]:
        version = f"v{entry['version']}" if entry["version"] else "not fitted yet"
        refit = f", last refit {_when(entry['refitted_at'])}" if entry["refitted_at"] else ""
        console.print(f"  built-in {entry['model']} {version}{refit}", markup=False)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON list.")
@click.option(
    "--all",
    "all_versions",
    is_flag=True,
    help="Every version (deleted ones too), not just the newest.",
)
def models_list(as_json: bool, all_versions: bool) -> None:
    """List each model's newest version (or all versions) with its state.

    A version's state is its run status unless it succeeded, then fresh or stale; the
    "model is" column is the model's verdict, the one `status` gives.
    """
    with common.ledger_session() as db:
        rows = list_versions(db, StalenessChecker(db), all_versions=all_versions)
    if as_json:
        _echo_json(rows)
        return
    table = Table("model", "version", "state", "commit", "metrics", "model is", "trained", "by")
    for row in rows:
        commit = (row["commit"] or "-")[:10] + ("+dirty" if row["dirty"] else "")
        metrics = ", ".join(f"{k}={v:g}" for k, v in row["metrics"].items()) or "-"
        table.add_row(
            row["model"],
            str(row["version"]) + _version_marks(row),
            row["state"],
            commit,
            metrics,
            row["model_state"],
            _when(row["started_at"]),
            _author(row),
        )
    common.console().print(table)


def _version_marks(row: dict[str, Any]) -> str:
    marks = [
        *(["deleted"] if row.get("deleted") else []),
        *(["experiment"] if row["experiment"] else []),
        *([f"sweep {_short_sweep(row['sweep_id'])}"] if row.get("sweep_id") else []),
    ]
    return f" ({', '.join(marks)})" if marks else ""


def _author(row: dict[str, Any]) -> str:
    """Who trained a version: its author's name, marked when it was pulled from a teammate."""
    name = str(row.get("author") or "").split(" <")[0]
    return f"{name} (pulled)" if row.get("pulled") else name or "you"


@click.command("show")
@click.argument("model_ref", metavar="REF")
@click.option("--json", "as_json", is_flag=True)
@click.option("--diff", "show_diff", is_flag=True, help="Print its kept uncommitted changes.")
def models_show(model_ref: str, as_json: bool, show_diff: bool) -> None:
    """Show one version: commit, params, metrics, data, artifacts and why it is stale."""
    with common.ledger_session() as db:
        row = find_version(db, ModelRef.parse(model_ref), _current_repo_id(db))
        version = list_versions_one(db, row)
        version["step_metrics"] = _step_metrics_json(db, row["id"])
        version["kept"] = _kept_json(db, row)
    if show_diff:
        _print_kept_diff(row, version["kept"])
        return
    if as_json:
        _echo_json(version)
        return
    console = common.console()
    marks = " ".join(
        [
            *(["current"] if version["current"] else []),
            *(["experiment"] if version["experiment"] else []),
            *(f"@{alias}" for alias in version["aliases"]),
        ]
    )
    console.print(
        f"[bold]{version['model']} v{version['version']}[/] {version['status']}"
        + (f" ({escape(marks)})" if marks else "")
    )
    fields = [
        ("repo", version["repo"]),
        ("id", version["id"]),
        ("by", (version["author"] or "you") + (" (pulled)" if version["pulled"] else "")),
        ("commit", (version["commit"] or "-") + (" (dirty)" if version["dirty"] else "")),
        ("train", version["train_command"]),
        ("run", f"{version['run_id']} on {version['executor']} {version['host'] or ''}"),
        ("started", _when(version["started_at"])),
        ("took", _duration(version["started_at"], version["ended_at"])),
        ("exit code", str(version["exit_code"])),
        *([("sweep", version["sweep_id"])] if version.get("sweep_id") else []),
    ]
    for name, value in fields:
        console.print(f"  {name:10} {value}", markup=False)
    for title, mapping in (
        ("params", version["params"]),
        ("metrics", version["metrics"]),
        ("code", version["code"]),
        ("data", version["data"]),
        ("dvc md5 (dvc checkout)", version.get("dvc_md5")),
        ("artifacts", version["artifacts"]),
        ("tags", version["tags"]),
    ):
        if mapping:
            console.print(f"  [bold]{title}[/]")
            for key, value in mapping.items():
                console.print(f"    {key} = {json.dumps(value)}", markup=False)
    for note in version["notes"]:
        console.print(f"  note {_when(note['at'])}: {note['text']}", markup=False)
    _print_extra_and_steps(console, version)
    _print_kept(console, version)
    console.print(f"  [bold]{version['state']}[/]")
    for reason in version["stale_reasons"]:
        console.print(f"    - {reason}", markup=False)


def _kept_json(db: Database, row: dict[str, Any]) -> dict[str, Any]:
    """What the store keeps for a version: its diff blobs, how many data files, reproduction."""
    from agent.ledger.blobs import DATA, DIFF, blobs_of_version

    return {
        "diff": blobs_of_version(db, int(row["id"]), DIFF),
        "data_files": len(blobs_of_version(db, int(row["id"]), DATA)),
        "reproduction": row.get("reproduction"),
    }


def _print_kept(console: Console, version: dict[str, Any]) -> None:
    kept = version["kept"]
    if version["dirty"]:
        where = "kept (models show --diff prints it)" if kept["diff"] else "not kept"
        console.print(f"  uncommitted changes {where}", markup=False)
    if version["data"]:
        console.print(f"  data content kept for {kept['data_files']} file(s)", markup=False)
    reproduction = kept["reproduction"]
    if reproduction:
        console.print(
            f"  reproduction of {reproduction['of']}: {reproduction['verdict']}", markup=False
        )


def _print_kept_diff(row: dict[str, Any], kept: dict[str, Any]) -> None:
    from agent.ledger.artifacts import ArtifactStore
    from agent.runs.code_diff import code_diff_text

    name = f"{row['model']}@{row['version']}"
    if not row["dirty"]:
        raise WatchkeeperError(
            f"{name} was trained from a clean tree: it has no uncommitted changes"
        )
    if not kept["diff"]:
        raise WatchkeeperError(
            f"{name} was trained with uncommitted changes, but they were not kept (it predates "
            "kept diffs, or its blobs were removed)"
        )
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    sys.stdout.write(code_diff_text(store, kept["diff"]))


def _step_metrics_json(db: Database, version_id: int) -> dict[str, Any] | None:
    from agent.runs.step_queries import step_summary

    summary = step_summary(db, version_id)
    if summary is None:
        return None
    return {
        "names": summary.names,
        "points": summary.points,
        "lines": summary.lines,
        "skipped": summary.skipped,
        "first_skipped": summary.first_skipped,
        "last": {k: v if v == v else None for k, v in summary.last_values.items()},
    }


def _print_extra_and_steps(console: Console, version: dict[str, Any]) -> None:
    """The non-numeric part of the metrics file, and the step metrics in one or two lines."""
    extra = version.get("metrics_extra")
    if extra is not None:
        console.print("  [bold]metrics file, not numbers[/]")
        entries = extra.items() if isinstance(extra, dict) else [("(whole file)", extra)]
        for key, value in entries:
            console.print(f"    {key} = {json.dumps(value)}", markup=False)
    _print_mlflow(console, version.get("mlflow"))
    steps = version.get("step_metrics")
    if steps:
        names = ", ".join(steps["names"]) or "none"
        console.print(
            f"  [bold]step metrics[/] {steps['lines']} lines, {steps['points']} points: "
            f"{escape(names)}"
        )
        if steps["skipped"]:
            console.print(
                f"    skipped lines: {steps['skipped']} (first: {steps['first_skipped']})",
                markup=False,
            )


def _print_mlflow(console: Console, record: dict[str, Any] | None) -> None:
    """What the run logged with MLflow: its run id, and what does not match the ledger."""
    from agent.interop.mlflow_capture import describe_mismatches

    if not record:
        return
    if record.get("run_id"):
        console.print(
            f"  [bold]mlflow[/] run {record['run_id']} in experiment "
            f"{escape(str(record.get('experiment')))}, {len(record.get('params') or {})} params, "
            f"{len(record.get('tags') or {})} tags"
        )
    if record.get("imported_from"):
        console.print(f"    imported from {record['imported_from']}", markup=False)
    if record.get("partial"):
        console.print(f"    partial capture: {record.get('problem')}", markup=False)
    mismatch = describe_mismatches(record)
    if mismatch:
        console.print(f"    [yellow]warning[/]: {escape(mismatch)}")


def list_versions_one(db: Database, row: dict[str, Any]) -> dict[str, Any]:
    from agent.ledger.queries import current_version
    from agent.ledger.versions import labels_for
    from agent.reports import version_json

    staleness = StalenessChecker(db).check(row) if row["status"] == "succeeded" else None
    shown = version_json(row, staleness)
    current = current_version(db, int(row["model_id"]))
    shown["current"] = current is not None and int(current["id"]) == int(row["id"])
    shown.update(labels_for(db, [int(row["id"])])[int(row["id"])])
    return shown


@click.command("diff")
@click.argument("first", metavar="REF_A")
@click.argument("second", metavar="REF_B")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--patch",
    is_flag=True,
    help="Print the code change from A to B, uncommitted changes included (as a git diff).",
)
def models_diff(first: str, second: str, as_json: bool, patch: bool) -> None:
    """Compare two versions: params, metrics, code diff stat and data files."""
    with common.ledger_session() as db:
        repo_id = _current_repo_id(db)
        old = find_version(db, ModelRef.parse(first), repo_id)
        new = find_version(db, ModelRef.parse(second), repo_id)
        if patch:
            sys.stdout.write(_code_patch(db, old, new))
            return
        report = version_diff(db, old, new)
    if as_json:
        _echo_json(report)
        return
    console = common.console()
    console.print(f"[bold]{report['model']} v{report['a']} → v{report['b']}[/]")
    for title in ("params", "metrics", "artifacts"):
        if report[title]:
            table = Table(title, f"v{report['a']}", f"v{report['b']}", title_justify="left")
            for key, (a, b) in report[title].items():
                table.add_row(key, json.dumps(a), json.dumps(b))
            console.print(table)
        else:
            console.print(f"{title}: same")
    code = report["code"]
    console.print(f"code: {code['commits'][0] or '-'} → {code['commits'][1] or '-'}")
    if code["dirty"][0] or code["dirty"][1]:
        console.print(f"  uncommitted changes: {code['diff_hashes'][0]} → {code['diff_hashes'][1]}")
    for dep, (a, b) in code["paths"].items():
        console.print(f"  {dep}: {a} → {b}", markup=False)
    if code["stat"]:
        console.print(code["stat"].rstrip(), markup=False)
    if not report["data"]:
        console.print("data: same")
    for dep, change in report["data"].items():
        console.print(
            f"data {dep}: {change['fingerprints'][0]} → {change['fingerprints'][1]}", markup=False
        )
        for word in ("added", "removed", "modified"):
            for name in change[word]:
                console.print(f"  {word:8} {name}", markup=False)


def _code_patch(db: Database, old: dict[str, Any], new: dict[str, Any]) -> str:
    from agent.ledger.artifacts import ArtifactStore
    from agent.ledger.blobs import DIFF, blobs_of_version
    from agent.runs.code_diff import code_patch_between

    sides = []
    for row in (old, new):
        blobs = blobs_of_version(db, int(row["id"]), DIFF)
        if row["dirty"] and not blobs:
            raise WatchkeeperError(
                f"{row['model']}@{row['version']} was trained with uncommitted changes that "
                "were not kept; its code cannot be shown whole"
            )
        sides.append((str(row["commit_sha"]), blobs))
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    return code_patch_between(Path(new["repo_path"]), store, sides)


@click.group()
def runs() -> None:
    """Training runs: their state, details and logs."""


@runs.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=50, show_default=True)
def runs_list(as_json: bool, limit: int) -> None:
    """List runs, newest first."""
    with common.ledger_session() as db:
        rows = [run_json(row) for row in list_runs(db, limit=limit)]
    if as_json:
        _echo_json(rows)
        return
    table = Table("run", "model", "version", "state", "executor", "exit", "started", "took")
    if any(row.get("sweep_id") for row in rows):
        table.add_column("sweep")
    for row in rows:
        sweep = [_short_sweep(row["sweep_id"])] if len(table.columns) > 8 else []
        table.add_row(
            row["id"],
            row["model"] or "-",
            str(row["version"] or "-"),
            row["state"],
            row["executor"],
            str(row["exit_code"] if row["exit_code"] is not None else "-"),
            _when(row["started_at"]),
            _duration(row["started_at"], row["ended_at"]),
            *sweep,
        )
    common.console().print(table)


def _short_sweep(sweep_id: str | None) -> str:
    """The end of a sweep id that names it (commands accept a unique end)."""
    return sweep_id.rsplit("-", 1)[-1] if sweep_id else "-"


def _run_or_version_run(db: Database, text: str) -> dict[str, Any]:
    """The run `text` names: a run id (prefix or suffix), else the run of a version reference."""
    try:
        return find_run(db, text)
    except WatchkeeperError as run_error:
        try:
            version = find_version(db, ModelRef.parse(text), _current_repo_id(db))
        except WatchkeeperError:
            raise run_error from None
    if not version["run_id"]:
        raise WatchkeeperError(f"{version['model']} v{version['version']} has no run recorded")
    return find_run(db, version["run_id"])


@runs.command("show")
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True)
def runs_show(run_id: str, as_json: bool) -> None:
    """Show one run (an id or a unique prefix of one)."""
    with common.ledger_session() as db:
        row = run_json(find_run(db, run_id))
    if as_json:
        _echo_json(row)
        return
    console = common.console()
    for key, value in row.items():
        if key.endswith("_at"):
            value = _when(value)
        console.print(f"{key:14} {value if value is not None else '-'}", markup=False)


def _is_run_id(db: Database, text: str) -> bool:
    return db.execute("SELECT 1 FROM runs WHERE id = ?", [text]).fetchone() is not None


@runs.command("cancel")
@click.argument("run_id", metavar="RUN|SWEEP")
def runs_cancel(run_id: str) -> None:
    """Cancel a run: stop its process group, here or on the remote, or `scancel` its Slurm job.

    Given a sweep id (or a unique start or end of one), cancel every point of the sweep not
    yet ended: queued points are dropped, running ones stopped (`scancel` of the job array on
    Slurm).
    """
    from agent.client import AgentClient
    from agent.runs.sweeps import cancel_sweep, find_sweep

    with common.ledger_session() as db:
        sweep = find_sweep(db, run_id) if not _is_run_id(db, run_id) else None
        if sweep is not None:
            counts = cancel_sweep(db, sweep, WatchkeeperPaths.from_environment())
            click.echo(
                f"cancelled sweep {sweep['id']}: {counts['queued']} queued points dropped, "
                f"{counts['running']} running points stopped, {counts['ended']} had ended"
            )
            return
        row = find_run(db, run_id)
        if RunState(row["state"]).is_final:
            raise WatchkeeperError(f"run {row['id']} has already ended ({row['state']}).")
        socket = WatchkeeperPaths.from_environment().socket
        client = AgentClient.connect_or_none(socket, timeout=10)
        if client is not None:
            client.call("cancel", run=row["id"])
        else:
            run = Run.from_row(row)
            executor_for(run.remote).cancel(run)
            reconcile_runs(db)
    click.echo(f"cancelled run {row['id']}")


@runs.command("logs")
@click.argument("run_id", metavar="RUN")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run ends.")
def runs_logs(run_id: str, follow: bool) -> None:
    """Print a run's log; with --follow, keep streaming it until the run ends.

    RUN is a run id (or a unique start or end of one) or a version such as churn@champion.

    Step metrics the run appends to $WK_METRICS are shown between the log's lines, as
    `[steps] step N: name=value ...` lines: with --follow, the newest point as they arrive;
    otherwise one line with the newest point after the log.
    """
    out = sys.stdout.buffer
    with common.ledger_session() as db:
        row = _run_or_version_run(db, run_id)
        run = Run.from_row(row)
        executor = LocalExecutor() if run.executor == "local" else executor_for(run.remote)
        steps = StepFollower(run, executor, out)
        offset = 0
        while True:
            chunk = executor.read_log(run, offset)
            if chunk:
                offset += len(chunk)
                out.write(chunk)
            steps.show(final=False)
            out.flush()
            if not follow:
                steps.show(final=True)
                out.flush()
                return
            current = find_run(db, row["id"])
            recorded = RunState(current["state"])
            if run.pid is None and run.remote_job_id is None:  # a sweep's point, waiting
                run = steps.run = Run.from_row(current)
            waiting = recorded in (RunState.QUEUED, RunState.STARTING)
            ended = recorded if recorded.is_final or waiting else executor.poll(run)
            if ended.is_final:
                break
            time.sleep(0.2)
        if not recorded.is_final and run.executor == "local":
            reconcile_runs(db)
            _wait_for_its_train_to_record(db, row["id"])
        while chunk := executor.read_log(run, offset):
            offset += len(chunk)
            out.write(chunk)
        steps.show(final=True)
        out.flush()
        if not RunState(find_run(db, row["id"])["state"]).is_final:
            common.console(err=True).print(
                f"run {run.id} has ended ({ended.value}); the agent records its outs and "
                "metrics (start it with `watchkeeper agent start`).",
                markup=False,
            )


def _wait_for_its_train_to_record(db: Database, run_id: str, timeout: float = 30.0) -> None:
    """Give the live `watchkeeper train` that follows an ended run time to record it."""
    from agent.runs.training import _supervised

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = find_run(db, run_id)
        if RunState(current["state"]).is_final or not _supervised(current.get("detail") or {}):
            return
        time.sleep(0.1)


class StepFollower:
    """Reads a run's $WK_METRICS by offset and writes `[steps]` lines: the newest point of
    each batch, and a note for each line that is not JSON."""

    def __init__(self, run: Run, executor: Any, out: Any) -> None:
        self.run, self.executor, self.out = run, executor, out
        self.offset = self.file_lines = self.accepted = 0

    def show(self, *, final: bool) -> None:
        from agent.runs.step_metrics import complete_part, describe_batch, parse_step_lines

        data = complete_part(self.executor.read_steps(self.run, self.offset), final)
        if not data:
            return
        batch = parse_step_lines(data, self.file_lines + 1, self.accepted)
        self.offset += len(data)
        self.file_lines += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        self.accepted += batch.lines
        if batch.skipped:
            single = batch.skipped == 1
            what = "line is not a JSON object" if single else "lines are not JSON objects"
            self.out.write(
                f"[steps] warning: {batch.skipped} {what} with a numeric step; skipped "
                f"(first: {batch.first_skipped})\n".encode()
            )
        if batch.lines:
            self.out.write(f"[steps] {describe_batch(batch)}\n".encode())
