"""The app's wiring: window, tray, agent link and ledger workers, and the `run` entry point."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths
from desktop_app.agent_link import AgentLink
from desktop_app.context import AppContext
from desktop_app.main_window import MainWindow
from desktop_app.notifications import NotificationChoices, notification_for_event
from desktop_app.queries.formatting import format_minutes
from desktop_app.queries.overview import Overview, coding_minutes_since
from desktop_app.queries.runs import run_outcome
from desktop_app.tray import WatchkeeperTray
from desktop_app.workers import LedgerWorkers

log = logging.getLogger(__name__)

STATE_REFRESH_MS = 15_000
PRELOAD_MODELS_MS = 300
GC_YOUNG_THRESHOLD = 20_000
NO_TRAY_MESSAGE = "No system tray is available here: Watchkeeper runs as a window instead."


class WatchkeeperApp(QObject):
    """Owns the window, the tray and the connection to the agent, and routes events between them.

    Example::

        app = WatchkeeperApp(WatchkeeperPaths.from_environment())
        app.start()
    """

    def __init__(
        self, paths: WatchkeeperPaths, *, tray_only: bool = False, use_tray: bool = True
    ) -> None:
        super().__init__()
        self.paths = paths
        self.tray_only = tray_only
        self.workers = LedgerWorkers(paths.ledger, self)
        self.agent = AgentLink(paths.socket, self)
        self.context = AppContext(paths, self.workers, self.agent)
        self.window = MainWindow(self.context)
        self.tray = WatchkeeperTray(self)
        self.tray_available = use_tray and WatchkeeperTray.available()
        self.said_no_tray = False
        self.overview: Overview | None = None
        self.paused = False
        # Pause/resume requests sent but not yet answered: status replies older than them would
        # undo the user's choice, so they are not taken while any is in flight.
        self._pause_requests_in_flight = 0
        self.agent_process_started = False
        self.last_summary_day: date | None = None
        self.tune_gc = False  # `run` turns it on: the process is then the app's alone

        self.workers.error_reported.connect(self.window.show_status)
        self.agent.connection_changed.connect(self._agent_connection_changed)
        self.agent.event_received.connect(self.handle_event)
        self.tray.open_requested.connect(self.show_window)
        self.tray.quit_requested.connect(self.quit)
        self.tray.start_agent_requested.connect(self.start_agent)
        self.tray.pause_toggled.connect(self.set_paused)
        self.window.banner.start_requested.connect(self.start_agent)
        self.state_timer = QTimer(self)
        self.state_timer.setInterval(STATE_REFRESH_MS)
        self.state_timer.timeout.connect(self.refresh_state)
        self.summary_timer = QTimer(self)
        self.summary_timer.setInterval(60_000)
        self.summary_timer.timeout.connect(self.maybe_daily_summary)
        self.offer_timer = QTimer(self)
        self.offer_timer.setSingleShot(True)
        self.offer_timer.setInterval(1500)
        self.offer_timer.timeout.connect(self._offer_agent_if_missing)
        # Build the Models page (and start reading its ids) once the first paint is out, so it
        # is ready when the user gets there.
        self.preload_timer = QTimer(self)
        self.preload_timer.setSingleShot(True)
        self.preload_timer.setInterval(PRELOAD_MODELS_MS)
        self.preload_timer.timeout.connect(self._preload_models)

    # ---------------------------------------------------------------- lifecycle

    def start(self, *, show_window: bool = True) -> None:
        """Show what should be shown, connect to the agent and start the timers."""
        if self.tray_available:
            self.tray.show()
            self.window.keep_in_tray = True
        elif self.tray_only or show_window:
            self.say_no_tray()
        if show_window and (not self.tray_only or not self.tray_available):
            self.window.show()
        overview_page = self.window.show_page("Overview")
        overview_page.overview_loaded.connect(self._show_state)  # type: ignore[attr-defined]
        self.window.set_agent_connected(False)
        self.window.banner.hide()
        self.offer_timer.start()
        self.preload_timer.start()
        self.agent.start()
        self.state_timer.start()
        self.summary_timer.start()

    def say_no_tray(self) -> None:
        """Tell the user once that there is no tray, so the window stays the way in."""
        if self.said_no_tray:
            return
        self.said_no_tray = True
        print(NO_TRAY_MESSAGE, file=sys.stderr)
        self.window.show_status(NO_TRAY_MESSAGE)

    def show_window(self) -> None:
        self.window.show()
        self.window.raise_()
        self.window.activateWindow()

    def quit(self) -> None:
        self.window.keep_in_tray = False
        self.window.close()
        app = QApplication.instance()
        if app is not None:
            app.quit()

    def shutdown(self) -> None:
        """Stop the timers and the link, close the window, and keep the final GC away from Qt.

        PySide6 6.12 with pyqtgraph charts can abort in the interpreter's last garbage
        collection; freezing the surviving objects leaves their teardown to Qt's own order.
        """
        for own_timer in (
            self.state_timer,
            self.summary_timer,
            self.offer_timer,
            self.preload_timer,
        ):
            own_timer.stop()
        for timer in self.window.findChildren(QTimer):
            timer.stop()
        self.agent.stop()
        self.tray.hide()
        self.workers.pool.waitForDone(5000)
        self.window.keep_in_tray = False
        self.window.close()
        gc.collect()
        gc.freeze()

    # ---------------------------------------------------------------- agent

    def _agent_connection_changed(self, connected: bool) -> None:
        self.window.set_agent_connected(connected)
        if connected:
            self.window.show_status("Connected to the agent.")
            self.agent.call("status", {}, self._take_agent_state, lambda _message: None)
            self.window.refresh_all()  # the Overview's answer updates the tray too
        elif self.overview is not None:
            self._show_state(self.overview)

    def _preload_models(self) -> None:
        self.window.page("Models")
        if self.tune_gc:
            # Objects made so far live as long as the app: keep the collector from re-walking
            # them, and collect young objects less often, so no collection lands in a frame.
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)

    def _offer_agent_if_missing(self) -> None:
        self.window.set_agent_connected(self.agent.connected)

    def start_agent(self) -> bool:
        """Start `watchkeeper agent start` in the background; the link connects when it is up."""
        started = QProcess.startDetached(sys.executable, ["-m", "agent", "agent", "start"])
        ok = bool(started[0] if isinstance(started, tuple) else started)
        self.agent_process_started = ok
        self.window.show_status(
            "Starting the agent…"
            if ok
            else "Could not start the agent: run `watchkeeper agent "
            "start` in a terminal to see why."
        )
        return ok

    def _take_agent_state(self, status: object) -> None:
        """Follow the agent's own pause state (it may have been paused by another client)."""
        if isinstance(status, dict) and not self._pause_requests_in_flight:
            self.paused = bool(status.get("paused", False))
            self.tray.set_paused(self.paused)
            if self.overview is not None:
                self._show_state(self.overview)

    def set_paused(self, paused: bool) -> None:
        """Ask the agent to pause or resume watching."""

        def failed(message: str) -> None:
            self._pause_requests_in_flight -= 1
            self.tray.set_paused(self.paused)
            self.window.show_status(
                f"Could not {'pause' if paused else 'resume'} watching: {message}"
            )

        def done(_result: object) -> None:
            self._pause_requests_in_flight -= 1
            self.paused = paused
            self.window.show_status("Watching paused." if paused else "Watching resumed.")
            self.refresh_state()

        self._pause_requests_in_flight += 1
        self.agent.call("pause_watching" if paused else "resume_watching", {}, done, failed)

    # ---------------------------------------------------------------- events and state

    def handle_event(self, kind: str, data: object) -> None:
        """Route one agent event: pages update (the Overview re-reads the state), the tray may
        notify."""
        self.window.dispatch_event(kind, data)
        if kind == "run_state" and isinstance(data, dict) and data.get("state") == "succeeded":
            self._notify_with_outcome(dict(data))
        else:
            self._notify(kind, data)

    def _notify(self, kind: str, data: object) -> None:
        notice = notification_for_event(kind, data, self.notification_choices())
        if notice is not None:
            title, message, notice_kind = notice
            self.tray.notify(title, message, notice_kind)

    def _notify_with_outcome(self, data: dict[str, object]) -> None:
        """A finished run's notice names its main metric: read the version it recorded."""
        run_id = str(data.get("run") or "")

        def arrived(outcome: dict[str, object]) -> None:
            self._notify("run_state", {**data, **outcome})

        self.workers.submit(
            lambda connection: run_outcome(connection, run_id),
            arrived,
            lambda _message: self._notify("run_state", data),
        )

    def notification_choices(self) -> NotificationChoices:
        try:
            return NotificationChoices.from_config(self.context.load_config())
        except (WatchkeeperError, ValueError):
            return NotificationChoices()

    def refresh_state(self) -> None:
        """Re-read the overview in a worker; its answer updates the page and the tray."""
        self.window.page("Overview").refresh()

    def _show_state(self, overview: Overview) -> None:
        self.overview = overview
        if self.agent.connected:
            state, line = overview.tray_state, overview.status_line
            if self.paused:
                line = "watching paused · " + line
        else:
            state, line = "offline", "agent not running · " + overview.status_line
        self.tray.set_state(state, line)

    def maybe_daily_summary(self, now: datetime | None = None) -> bool:
        """Notify today's coding time once a day at the chosen hour, when the user asked for it."""
        now = now or datetime.now()
        choices = self.notification_choices()
        if not choices.daily_summary or now.hour != choices.daily_summary_hour:
            return False
        if self.last_summary_day == now.date():
            return False
        self.last_summary_day = now.date()

        def show(minutes: float) -> None:
            self.tray.notify(
                "Coding time today",
                f"{format_minutes(minutes)} of coding so far",
                "coding_time",
            )

        today = now.date()
        self.workers.submit(lambda connection: coding_minutes_since(connection, today), show)
        return True


def _application(argv: Sequence[str]) -> QApplication:
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        return existing
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
    )
    app = QApplication(list(argv))
    app.setApplicationName("Watchkeeper")
    app.setOrganizationName("watchkeeper")
    app.setDesktopFileName("watchkeeper")
    return app


def run(
    *, tray_only: bool = False, screenshot_dir: Path | None = None, argv: Sequence[str] = ()
) -> int:
    """Start the app (or render every page to PNG files in screenshot_dir and return)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = WatchkeeperPaths.from_environment()
    qt_app = _application([sys.argv[0], *argv])
    if screenshot_dir is not None:
        from desktop_app.screenshots import render_all

        app = WatchkeeperApp(paths, use_tray=False)
        written = render_all(app, screenshot_dir)
        for path in written:
            print(path)
        app.shutdown()
        return 0
    app = WatchkeeperApp(paths, tray_only=tray_only)
    app.tune_gc = True
    qt_app.setQuitOnLastWindowClosed(not app.tray_available)
    app.start()
    started = time.monotonic()
    code = qt_app.exec()
    log.debug("app ran for %.0f s", time.monotonic() - started)
    app.shutdown()
    return int(code)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m desktop_app [--tray] [--screenshot DIR]`."""
    parser = argparse.ArgumentParser(
        prog="python -m desktop_app", description="The Watchkeeper desktop app and tray."
    )
    parser.add_argument("--tray", action="store_true", help="start in the tray only")
    parser.add_argument(
        "--screenshot",
        type=Path,
        metavar="DIR",
        help="render every page to PNG files in DIR and exit",
    )
    arguments = parser.parse_args(argv)
    return run(tray_only=arguments.tray, screenshot_dir=arguments.screenshot)
