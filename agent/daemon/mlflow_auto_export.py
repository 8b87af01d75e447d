"""Exports new versions to the MLflow server of `[share] mlflow` on the agent's run polls.

The queue is the ledger itself: a finished version with no `mlflow_exports` row for the server
is still to go, so it survives restarts and outages. Each export runs as a child
`watchkeeper export mlflow` (MLflow's client stays out of the agent); after a failure the next
try waits twice as long as the last, up to ten minutes.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time

from sqlite_utils import Database

from agent.config import UserConfig
from agent.paths import WatchkeeperPaths

log = logging.getLogger(__name__)

FIRST_WAIT_SECONDS = 5.0
LONGEST_WAIT_SECONDS = 600.0
OUTPUT_FILE = "mlflow-export.log"


class MlflowAutoExport:
    """One child export at a time; called on every run poll, it starts one when versions wait."""

    def __init__(self, tracking_uri: str | None, paths: WatchkeeperPaths) -> None:
        self.tracking_uri = tracking_uri
        self.output = paths.logs / OUTPUT_FILE
        self.child: subprocess.Popen[bytes] | None = None
        self.wait_seconds = FIRST_WAIT_SECONDS
        self.next_try = 0.0

    @classmethod
    def from_config(cls, config: UserConfig, paths: WatchkeeperPaths) -> MlflowAutoExport:
        return cls(config.share_mlflow, paths)

    def tick(self, db: Database) -> None:
        if self.tracking_uri is None:
            return
        if self.child is not None:
            if self.child.poll() is None:
                return
            self._finished(self.child.returncode)
        if time.monotonic() < self.next_try:
            return
        from agent.interop.mlflow_export import pending_count
        from agent.interop.mlflow_import import without_credentials

        shown = without_credentials(self.tracking_uri)
        waiting = pending_count(db, shown)
        if waiting:
            log.info("exporting %d version(s) to MLflow at %s", waiting, shown)
            self._start()

    def _start(self) -> None:
        assert self.tracking_uri is not None
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with open(self.output, "wb") as output:
            self.child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "export",
                    "mlflow",
                    "--tracking-uri",
                    self.tracking_uri,
                    "--retries",
                    "2",
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _finished(self, returncode: int) -> None:
        self.child = None
        lines = self.output.read_text(errors="replace").strip().splitlines()
        said = lines[-1] if lines else f"exit status {returncode}"
        if returncode == 0:
            log.info("MLflow export: %s", said)
            self.wait_seconds = FIRST_WAIT_SECONDS
            self.next_try = 0.0
            return
        log.warning("MLflow export failed, next try in %.0f s: %s", self.wait_seconds, said)
        self.next_try = time.monotonic() + self.wait_seconds
        self.wait_seconds = min(self.wait_seconds * 2, LONGEST_WAIT_SECONDS)

    def stop(self) -> None:
        """Stop a child export; what it finished is recorded, the rest goes next time."""
        child, self.child = self.child, None
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
