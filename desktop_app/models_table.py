"""The Models table: a lazily fetched QAbstractTableModel over the ledger's model versions."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QPalette
from PySide6.QtWidgets import QApplication

from desktop_app.queries import models as model_queries
from desktop_app.queries.models import NAMES_COLUMN, ExtraColumn
from desktop_app.workers import LedgerWorkers

AnyIndex = QModelIndex | QPersistentModelIndex
DISPLAY_ROLE = Qt.ItemDataRole.DisplayRole
FOREGROUND_ROLE = Qt.ItemDataRole.ForegroundRole
USER_ROLE = Qt.ItemDataRole.UserRole
STATUS_COLUMN = 2
BASE_COLUMNS = len(model_queries.MODEL_VERSION_COLUMNS)
TOOLTIP_ROLE = Qt.ItemDataRole.ToolTipRole
STATUS_ROLES = {"failed": QPalette.ColorRole.Accent, "running": QPalette.ColorRole.Link}


class ModelVersionsTableModel(QAbstractTableModel):
    """Model versions in display order, fetched a window at a time off the Qt thread.

    A worker first reads the ordered ids matching the filter (cheap: integers only). Rows are
    then exposed with canFetchMore/fetchMore in steps of `fetch_step`, and the display values of
    a window of `window_size` rows are read in a worker the first time any row of it is painted.
    """

    loaded = Signal()  # the ids for the current filter and sort are known

    fetch_step = 500
    window_size = 200
    cached_windows = 64

    def __init__(self, workers: LedgerWorkers) -> None:
        super().__init__()
        self.workers = workers
        self.filter_text = ""
        self.filter_status = ""
        self.sort_column: int | None = None  # None: recording order, newest first
        self.model_id: int | None = None  # None: every model
        self.extra_columns: list[ExtraColumn] = []  # the chosen params and metrics of the model
        self.current_ids: set[int] = set()  # each model's current version
        self.descending = True
        self._ids: list[int] = []
        self._shown = 0
        self._windows: OrderedDict[int, list[tuple | None]] = OrderedDict()
        self._requested: set[int] = set()
        self._generation = 0
        self._preview_generation = -1
        self._complete_generation = -1
        self.total = 0

    # ---------------------------------------------------------------- reloading

    def reload(self) -> None:
        """Re-read the ordered ids for the current filter and sort (in workers).

        First the first window's ids and values (a LIMIT query, quick), shown as soon as they
        arrive; then the full ordered id list, which extends the rows that can be fetched.
        """
        self._generation += 1
        generation = self._generation
        text, status = self.filter_text, self.filter_status
        column, descending = self.sort_column, self.descending
        model_id, extra = self.model_id, list(self.extra_columns)

        def ordered(connection: Any, limit: int | None = None) -> list[int]:
            return model_queries.ordered_version_ids(
                connection,
                text=text,
                status=status,
                sort_column=column,
                descending=descending,
                limit=limit,
                model_id=model_id,
                extra_columns=extra,
            )

        def first_window(connection: Any) -> tuple[list[int], dict[int, tuple]]:
            ids = ordered(connection, self.window_size)
            return ids, model_queries.version_rows(connection, ids, extra)

        def all_ids(connection: Any) -> tuple[list[int], set[int]]:
            return ordered(connection), model_queries.current_version_ids(connection)

        def read_all_ids(_result: object = None) -> None:
            if generation == self._generation:
                self.workers.submit(all_ids, lambda found: self._ids_arrived(generation, *found))

        def first_rows(result: tuple[list[int], dict[int, tuple]]) -> None:
            self._first_window_arrived(generation, *result)
            read_all_ids()

        # One after the other: run side by side, the long id read would starve the short one of
        # the interpreter lock.
        self.workers.submit(first_window, first_rows, read_all_ids)

    def set_filter(self, text: str, status: str = "") -> None:
        self.filter_text, self.filter_status = text, status
        self.reload()

    def set_model(self, model_id: int | None, extra_columns: list[ExtraColumn]) -> None:
        """Show one model's versions (None: all) with its chosen param and metric columns."""
        if model_id == self.model_id and extra_columns == self.extra_columns:
            return
        self.beginResetModel()
        self.model_id, self.extra_columns = model_id, list(extra_columns)
        if self.sort_column is not None and self.sort_column >= self.columnCount():
            self.sort_column = None
        self._generation += 1  # rows read for the old columns are no longer wanted
        self._windows.clear()
        self._requested.clear()
        self._ids, self._shown = [], 0
        self.endResetModel()
        self.reload()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.sort_column = column if 0 <= column < self.columnCount() else None
        self.descending = order == Qt.SortOrder.DescendingOrder
        self.reload()

    def _first_window_arrived(
        self, generation: int, ids: list[int], rows: dict[int, tuple]
    ) -> None:
        if generation != self._generation or self._complete_generation == generation:
            return
        self.beginResetModel()
        self._ids = ids
        self._shown = len(ids)
        self._windows.clear()
        self._windows[0] = [rows.get(version_id) for version_id in ids]
        self._requested.clear()
        self._preview_generation = generation
        self.endResetModel()

    def _ids_arrived(self, generation: int, ids: list[int], current_ids: set[int]) -> None:
        if generation != self._generation:
            return
        if current_ids != self.current_ids:
            self.current_ids = current_ids
            if self._shown:
                names = self.index(0, NAMES_COLUMN), self.index(self._shown - 1, NAMES_COLUMN)
                self.dataChanged.emit(*names, [DISPLAY_ROLE])
        self._complete_generation = generation
        self.total = len(ids)
        preview = self._ids if self._preview_generation == generation else None
        if preview is not None and ids[: len(preview)] == preview:
            self._ids = ids  # the rows on screen stay; more become fetchable
            wanted = min(self.fetch_step, len(ids))
            if wanted > self._shown:
                self.beginInsertRows(QModelIndex(), self._shown, wanted - 1)
                self._shown = wanted
                self.endInsertRows()
        else:
            self.beginResetModel()
            self._ids = ids
            self._shown = min(self.fetch_step, len(ids))
            self._windows.clear()
            self._requested.clear()
            self.endResetModel()
        self.loaded.emit()

    # ---------------------------------------------------------------- Qt model API

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else self._shown

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else BASE_COLUMNS + len(self.extra_columns)

    def canFetchMore(self, parent: AnyIndex) -> bool:
        return not parent.isValid() and self._shown < len(self._ids)

    def fetchMore(self, parent: AnyIndex) -> None:
        if parent.isValid():
            return
        more = min(self.fetch_step, len(self._ids) - self._shown)
        if more <= 0:
            return
        self.beginInsertRows(QModelIndex(), self._shown, self._shown + more - 1)
        self._shown += more
        self.endInsertRows()

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        horizontal = orientation == Qt.Orientation.Horizontal
        if horizontal and section >= BASE_COLUMNS and role in (DISPLAY_ROLE, TOOLTIP_ROLE):
            extra = self.extra_columns[section - BASE_COLUMNS]
            return extra.name if role == DISPLAY_ROLE else f"{extra.kind} {extra.name}"
        if role != DISPLAY_ROLE:
            return None
        if horizontal:
            return model_queries.MODEL_VERSION_COLUMNS[section][0]
        return section + 1

    def data(self, index: AnyIndex, role: int = DISPLAY_ROLE) -> Any:
        # Called for every role of every visible cell on each paint: keep the common path short.
        if role == DISPLAY_ROLE:
            values = self.row_values(index.row())
            if values is None:
                return "…"
            if index.column() == NAMES_COLUMN and self._ids[index.row()] in self.current_ids:
                return f"current {values[NAMES_COLUMN]}".rstrip()
            return values[index.column()]
        if role == FOREGROUND_ROLE:
            if index.column() != STATUS_COLUMN:
                return None
            values = self.row_values(index.row())
            color_role = STATUS_ROLES.get(values[STATUS_COLUMN]) if values else None
            return None if color_role is None else QBrush(QApplication.palette().color(color_role))
        if role == USER_ROLE:
            return self.version_id(index.row())
        return None

    # ---------------------------------------------------------------- windows of rows

    def version_id(self, row: int) -> int | None:
        """The ledger id of the version shown in `row`."""
        return self._ids[row] if 0 <= row < self._shown else None

    def row_of(self, version_id: int) -> int | None:
        """The row showing a version (None when it is not among the rows fetched)."""
        try:
            row = self._ids.index(version_id)
        except ValueError:
            return None
        return row if row < self._shown else None

    def row_values(self, row: int) -> tuple | None:
        """The display values of a row, or None while its window is being read."""
        offset = row % self.window_size
        window = self._windows.get(row - offset)
        if window is None:
            if 0 <= row < self._shown:
                self._request_window(row - offset)
            return None
        if offset == 0 or offset == self.window_size // 2:
            self._prefetch(row - offset)
        return window[offset] if offset < len(window) else None

    def _prefetch(self, start: int) -> None:
        """Read the windows on either side ahead of need, so scrolling never waits for rows."""
        for neighbour in (start + self.window_size, start - self.window_size):
            if 0 <= neighbour < self._shown and neighbour not in self._windows:
                self._request_window(neighbour)

    def _request_window(self, start: int) -> None:
        if start in self._requested:
            return
        self._requested.add(start)
        generation = self._generation
        ids = self._ids[start : start + self.window_size]
        extra = list(self.extra_columns)
        self.workers.submit(
            lambda connection: model_queries.version_rows(connection, ids, extra),
            lambda rows: self._window_arrived(generation, start, rows),
        )

    def _window_arrived(self, generation: int, start: int, rows: dict[int, tuple]) -> None:
        if generation != self._generation:
            return
        self._requested.discard(start)
        ids = self._ids[start : start + self.window_size]
        self._windows[start] = [rows.get(version_id) for version_id in ids]
        while len(self._windows) > self.cached_windows:
            self._windows.popitem(last=False)
        last = min(start + self.window_size, self._shown) - 1
        if last >= start:
            self.dataChanged.emit(
                self.index(start, 0),
                self.index(last, self.columnCount() - 1),
                [Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ForegroundRole],
            )
