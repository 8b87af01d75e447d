"""`watchkeeper app`: the desktop window and tray (the CLI's only door to the GUI)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from agent.errors import WatchkeeperError

# Qt platforms that draw without a display server.
HEADLESS_PLATFORMS = ("offscreen", "minimal", "minimalegl", "linuxfb", "eglfs", "vnc")
PROBE_TIMEOUT_SECONDS = 30.0
PROBE = "import sys\nfrom PySide6.QtGui import QGuiApplication\nQGuiApplication(sys.argv[:1])\n"
HOW_TO_GET_A_DISPLAY = (
    "run it in a desktop session, or start a virtual screen (`Xvfb :99 &` then "
    "`export DISPLAY=:99`); `app --screenshot DIR` also works with QT_QPA_PLATFORM=offscreen"
)


def debian_package(soname: str) -> str:
    """The Debian package that ships a shared library, by Debian's naming rule.

    >>> debian_package("libxcb-cursor.so.0"), debian_package("libxkbcommon-x11.so.0")
    ('libxcb-cursor0', 'libxkbcommon-x11-0')
    >>> debian_package("libEGL.so.1"), debian_package("libdbus-1.so.3")
    ('libegl1', 'libdbus-1-3')
    """
    name, _, version = soname.partition(".so.")
    name = name.lower()
    major = version.split(".")[0]
    if not major:
        return name
    return f"{name}-{major}" if name[-1].isdigit() else f"{name}{major}"


def _qt_platforms(environ: Mapping[str, str]) -> list[str]:
    chosen = environ.get("QT_QPA_PLATFORM", "")
    return [entry.split(":")[0].strip().lower() for entry in chosen.split(";") if entry.strip()]


def _xcb_plugin() -> Path | None:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugin = Path(next(iter(spec.submodule_search_locations))) / "Qt/plugins/platforms/libqxcb.so"
    return plugin if plugin.is_file() else None


def missing_xcb_libraries() -> list[str]:
    """Shared libraries Qt's xcb platform plugin needs that the system lacks (by `ldd`)."""
    plugin = _xcb_plugin()
    ldd = shutil.which("ldd")
    if plugin is None or ldd is None:
        return []
    listing = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, check=False)
    missing = re.findall(r"^\s*(\S+) => not found", listing.stdout, flags=re.MULTILINE)
    return sorted(set(missing))


def _probe_reason(environ: Mapping[str, str]) -> str | None:
    """Start a QGuiApplication in a child process; the first line of its complaint, if any."""
    try:
        probe = subprocess.run(
            [sys.executable, "-c", PROBE],
            env=dict(environ),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"Qt did not start within {PROBE_TIMEOUT_SECONDS:.0f} s"
    if probe.returncode == 0:
        return None
    lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
    for line in lines:
        if "could not connect to display" in line or "Could not load the Qt platform" in line:
            return line.removeprefix("qt.qpa.xcb: ").removeprefix("qt.qpa.plugin: ")
    return lines[0] if lines else f"Qt exited with status {probe.returncode}"


def display_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the desktop app could not open a window here (None when it can), with the fix.

    It checks, without starting Qt in this process (Qt aborts the process on failure): that
    PySide6 is installed, that a display is set, that Qt's xcb plugin finds its libraries,
    and finally that a QGuiApplication starts in a child process.
    """
    environ = os.environ if environ is None else environ
    if importlib.util.find_spec("PySide6") is None:
        return "PySide6 is not installed; install the app with `pip install PySide6`."
    platforms = _qt_platforms(environ)
    if platforms and platforms[0] in HEADLESS_PLATFORMS:
        return None
    display = environ.get("DISPLAY", "")
    wayland = environ.get("WAYLAND_DISPLAY", "")
    if not display and not wayland:
        return f"no display: neither DISPLAY nor WAYLAND_DISPLAY is set; {HOW_TO_GET_A_DISPLAY}."
    uses_xcb = platforms[0] == "xcb" if platforms else not wayland
    if uses_xcb:
        missing = missing_xcb_libraries()
        if missing:
            packages = " ".join(debian_package(name) for name in missing)
            return (
                f"Qt's xcb plugin cannot load: {', '.join(missing)} missing; install with "
                f"`sudo apt-get install {packages}` (or set QT_QPA_PLATFORM=offscreen "
                "for `app --screenshot DIR`)."
            )
    reason = _probe_reason(environ)
    if reason is None:
        return None
    where = f"DISPLAY={display}" if uses_xcb else f"WAYLAND_DISPLAY={wayland}"
    return f"Qt cannot open a window on {where}: {reason}; {HOW_TO_GET_A_DISPLAY}."


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
    problem = display_problem()
    if problem is not None:
        raise WatchkeeperError(problem)
    # The app is the layer above the agent: start it as its own program rather than import it.
    argv = [sys.executable, "-m", "desktop_app"]
    if tray_only:
        argv.append("--tray")
    if screenshot_dir is not None:
        argv += ["--screenshot", str(screenshot_dir)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
