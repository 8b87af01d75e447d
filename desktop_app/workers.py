"""Ledger queries off the Qt thread: a thread pool whose results come back as queued signals."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThreadPool, Signal, Slot

from desktop_app.queries.connection import connect_readonly

log = logging.getLogger(__name__)

LedgerQuery = Callable[[sqlite3.Connection | None], Any]


class _ThreadConnections:
    """One read-only connection per worker thread, reopened when the ledger file appears."""

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self._local = threading.local()

    def get(self) -> sqlite3.Connection | None:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = connect_readonly(self.ledger)
            self._local.connection = connection
        return connection

    def drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None


class _LedgerTask(QRunnable):
    def __init__(
        self, owner: LedgerWorkers, task_id: int, query: LedgerQuery, with_ledger: bool
    ) -> None:
        super().__init__()
        self.owner = owner
        self.task_id = task_id
        self.query = query
        self.with_ledger = with_ledger

    def run(self) -> None:
        connections = self.owner.connections
        try:
            try:
                result = self.query(connections.get() if self.with_ledger else None)
            except sqlite3.DatabaseError:
                if not self.with_ledger:
                    raise
                # A connection opened before the agent's writer appeared (or across a file
                # replacement) can fail once; a fresh connection sees the file as it is now.
                connections.drop()
                result = self.query(connections.get())
        except sqlite3.DatabaseError as error:
            connections.drop()
            self.owner.task_failed.emit(self.task_id, f"{self.owner.ledger}: {error}")
            return
        except Exception as error:  # reported to the page, never lost in the thread
            log.exception("ledger query failed")
            self.owner.task_failed.emit(self.task_id, f"{type(error).__name__}: {error}")
            return
        self.owner.task_done.emit(self.task_id, result)


class LedgerWorkers(QObject):
    """Runs ledger queries in a thread pool and calls back on the Qt thread.

    Example::

        workers = LedgerWorkers(paths.ledger)
        workers.submit(queries.overview.overview, page.show_overview)
    """

    task_done = Signal(int, object)
    task_failed = Signal(int, str)
    error_reported = Signal(str)  # a failed query whose caller gave no error callback

    def __init__(self, ledger: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ledger = ledger
        self.connections = _ThreadConnections(ledger)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self._ids = itertools.count(1)
        self._callbacks: dict[int, tuple[Callable[[Any], None], Callable[[str], None] | None]] = {}
        self.task_done.connect(self._deliver)
        self.task_failed.connect(self._deliver_error)
        self.last_error = ""

    def submit(
        self,
        query: LedgerQuery,
        on_done: Callable[[Any], None],
        on_error: Callable[[str], None] | None = None,
        *,
        with_ledger: bool = True,
    ) -> int:
        """Run query(connection) in a worker; on_done(result) runs later on the Qt thread."""
        task_id = next(self._ids)
        self._callbacks[task_id] = (on_done, on_error)
        self.pool.start(_LedgerTask(self, task_id, query, with_ledger))
        return task_id

    @property
    def pending(self) -> int:
        """Tasks submitted whose callbacks have not run yet."""
        return len(self._callbacks)

    @Slot(int, object)
    def _deliver(self, task_id: int, result: object) -> None:
        callbacks = self._callbacks.pop(task_id, None)
        if callbacks is not None:
            callbacks[0](result)

    @Slot(int, str)
    def _deliver_error(self, task_id: int, message: str) -> None:
        self.last_error = message
        callbacks = self._callbacks.pop(task_id, None)
        if callbacks is not None and callbacks[1] is not None:
            callbacks[1](message)
        else:
            log.warning("%s", message)
            self.error_reported.emit(message)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Process events until every submitted task has called back (for screenshots, tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            QCoreApplication.processEvents()
            if not self.pending:
                QCoreApplication.processEvents()  # a result may have asked for more
                if not self.pending:
                    return True
            time.sleep(0.005)
        return False
