"""`watchkeeper app`: the desktop window and tray (the CLI's only door to the GUI)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("app")
@click.option("--tray", "tray_only", is_flag=True, help="Start in the system tray only.")
@click.option(
    "--screenshot",
    "screenshot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Render every page to PNG files in DIR and exit.",
)
def app(tray_only: bool, screenshot_dir: Path | None) -> None:
    """Open the Watchkeeper desktop app: models, runs, data drift and coding time."""
    from desktop_app.app import run

    raise SystemExit(run(tray_only=tray_only, screenshot_dir=screenshot_dir))
