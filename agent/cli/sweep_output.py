"""`watchkeeper train --sweep`: queue the grid, show each point as it starts and ends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from sqlite_utils import Database

from agent.runs.sweeps import SweepPoint, SweepResult, train_sweep


def describe_params(params: dict[str, Any], names: list[str]) -> str:
    """The swept params of a point, as `lr=0.01 epochs=5`.

    >>> describe_params({"lr": 0.01, "epochs": 5, "tag": "a"}, ["lr", "epochs"])
    'lr=0.01 epochs=5'
    """
    return " ".join(
        f"{name}={value if isinstance(value, str) else json.dumps(value)}"
        for name, value in params.items()
        if name in names
    )


def run_sweep(
    console: Console,
    *,
    root: Path,
    model: str,
    sweeps: list[str],
    params: list[str],
    parallel: int | None,
    remote: str | None,
    confirmed: bool,
    allow_concurrent: bool,
    db: Database,
    on_data_progress: Callable[[str, int, int], None],
    stop_progress: Callable[[], None],
) -> int:
    """Train the sweep, one line per point started and ended; returns how many points did not
    succeed. KeyboardInterrupt is raised again once every point is recorded."""
    swept = [text.partition("=")[0].strip() for text in sweeps]
    state: dict[str, Any] = {}

    def on_queued(sweep: SweepResult) -> None:
        stop_progress()
        state["sweep"] = sweep
        first = sweep.points[0].run
        where = first.remote or "here"
        at_once = f"at most {parallel} at once" if parallel else "one at a time"
        if first.executor == "slurm":
            at_once = f"at most {parallel} at once" if parallel else "as many as Slurm allows"
        console.print(
            f"[bold]sweep {sweep.sweep_id}[/]: {len(sweep.points)} points of {model} "
            f"({escape(' x '.join(swept))}) on {escape(where)}, {at_once}"
        )

    def label(point: SweepPoint) -> str:
        total = len(state["sweep"].points)
        return (
            f"[{point.index + 1}/{total}] {model} v{point.version} "
            f"{describe_params(point.params, swept)}"
        )

    def on_point_start(point: SweepPoint) -> None:
        job = f", Slurm job {point.run.remote_job_id}" if point.run.executor == "slurm" else ""
        console.print(f"{escape(label(point))} started (run {point.run.id}{job})")

    def on_point_end(point: SweepPoint) -> None:
        result = point.result
        status = result.status if result else "failed"
        colour = {"succeeded": "green", "cancelled": "yellow"}.get(status, "red")
        detail = ""
        if result and result.metrics:
            detail = ": " + ", ".join(f"{key}={value:g}" for key, value in result.metrics.items())
        elif status == "failed":
            why = (result.problem if result else None) or point.problem
            exit_code = result.exit_code if result else None
            detail = f": {why}" if why else f": exit {exit_code}"
            detail += f" (watchkeeper runs logs {point.run.id})"
        console.print(f"{escape(label(point))} [{colour}]{status}[/]{escape(detail)}")

    try:
        sweep = train_sweep(
            root,
            model,
            sweeps=sweeps,
            param_pairs=params,
            parallel=parallel,
            remote=remote,
            confirmed=confirmed,
            allow_concurrent=allow_concurrent,
            db=db,
            on_queued=on_queued,
            on_point_start=on_point_start,
            on_point_end=on_point_end,
            on_data_progress=on_data_progress,
        )
    except KeyboardInterrupt:
        if "sweep" in state:
            console.print(
                f"[yellow]cancelled[/]: sweep {state['sweep'].sweep_id}; every point not yet "
                "ended was stopped and recorded as cancelled."
            )
        raise
    ended = [point.result.status if point.result else "failed" for point in sweep.points]
    counts = {status: ended.count(status) for status in dict.fromkeys(ended)}
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    console.print(
        f"[bold]sweep {sweep.sweep_id}[/]: {summary}. Compare: watchkeeper models compare "
        f"{model} --sweep {sweep.sweep_id.rsplit('-', 1)[-1]} --sort METRIC"
    )
    return len(ended) - counts.get("succeeded", 0)
