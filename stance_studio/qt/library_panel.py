"""The stance library: every checkpoint in the library folder with its method, size,
retention, base and date, whether it fits the loaded model, and the file actions
(rename, delete, reveal, import). Rows can be dragged onto the blend panel."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QItemSelectionModel, QMimeData, Qt, QUrl, Signal, Slot
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from stance_studio.core.checkpoints import SUFFIX
from stance_studio.core.errors import StanceStudioError
from stance_studio.core.jobs import Progress
from stance_studio.qt import theme
from stance_studio.qt.formatting import human_bytes, percent, short_date, short_model, timestamp
from stance_studio.qt.session import Session
from stance_studio.qt.stance_details import details_html
from stance_studio.qt.workers import Job

STANCE_MIME = "application/x-stance-studio-stances"
COLUMNS = ("", "Name", "Method", "Size", "Retention", "Base", "Created")
NAME_COLUMN = 1
# Shown, in this order, while the name keeps NAME_ROOM pixels (so the panel reads at
# ~360 px), unless chosen in the header's context menu.
OPTIONAL_COLUMNS = ("Method", "Created", "Base")
NAME_ROOM = 140


class _StanceTable(QTableWidget):
    """A table whose rows drag as stance names and that says when its width changes."""

    resized = Signal()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self.resized.emit()

    def mimeTypes(self) -> list[str]:
        return [STANCE_MIME]

    def mimeData(self, items) -> QMimeData:
        names = sorted({self.item(i.row(), 1).text() for i in items if self.item(i.row(), 1)})
        data = QMimeData()
        data.setData(STANCE_MIME, json.dumps(names).encode())
        data.setText(", ".join(names))
        return data


class LibraryPanel(QWidget):
    selection_changed = Signal(list)  # names
    add_to_blend = Signal(str)
    add_to_compare = Signal(str)
    show_changes = Signal(str)
    train_requested = Signal()

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.table = _StanceTable(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setDragEnabled(True)
        self.table.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setSortingEnabled(True)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.itemDoubleClicked.connect(self._on_double_click)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(NAME_COLUMN, QHeaderView.ResizeMode.Stretch)
        header.setSortIndicator(NAME_COLUMN, Qt.SortOrder.AscendingOrder)
        header.sortIndicatorChanged.connect(self._fit_columns)
        self.table.resized.connect(self._fit_columns)
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header.customContextMenuRequested.connect(self._header_menu)
        for col in range(len(COLUMNS)):
            self.table.horizontalHeaderItem(col).setToolTip("Click to sort; right-click to show or hide columns")
        self._chosen: dict[str, bool] = {}  # columns shown or hidden from the header menu

        self.details = QTextBrowser(openExternalLinks=False)
        self.details.setPlaceholderText("Select a stance to see how it was made.")
        self.problems = QLabel(wordWrap=True)
        self.problems.setProperty("role", "bad")
        self.problems.setVisible(False)
        self.folder_label = QLabel(wordWrap=True, openExternalLinks=False)
        self.folder_label.linkActivated.connect(self.reveal_folder)
        self.folder_label.setProperty("role", "muted")

        train = QPushButton("Train new…", clicked=self.train_requested)
        train.setProperty("role", "primary")
        buttons = QHBoxLayout()
        buttons.setSpacing(4)
        buttons.addWidget(train)
        # Tool buttons: push buttons are at least 80 px wide, too wide for a ~360 px panel.
        buttons.addWidget(QToolButton(text="Import…", clicked=self.import_dialog))
        buttons.addStretch(1)
        self.rename_button = QToolButton(text="Rename…", clicked=self.rename_selected)
        self.delete_button = QToolButton(text="Delete…", clicked=self.delete_selected)
        buttons.addWidget(self.rename_button)
        buttons.addWidget(self.delete_button)

        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.details)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(split, 1)
        layout.addWidget(self.problems)
        layout.addWidget(self.folder_label)
        session.catalog.changed.connect(self.refresh)
        self.refresh()

    # Listing ------------------------------------------------------------------------

    @Slot()
    def refresh(self) -> None:
        selected = set(self.selected_names())
        c = theme.colors()
        self.table.blockSignals(True)  # one selection_changed at the end, not one per row
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.session.entries))
        for row, entry in enumerate(self.session.entries):
            ok, reason = self.session.catalog.compatibility(entry.name)
            mark = QTableWidgetItem("✓" if ok else ("✗" if ok is False else "·"))
            mark.setForeground(QColor(c["muted"] if ok is None else c["good"] if ok else c["bad"]))
            tip = "Fits the loaded model." if ok else (reason or "Load a model to check compatibility.")
            mark.setToolTip(tip)
            mark.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            cells = [
                mark,
                QTableWidgetItem(entry.name),
                QTableWidgetItem(entry.method),
                _NumberItem(human_bytes(entry.bytes), entry.bytes),
                _NumberItem(percent(entry.retention), entry.retention if entry.retention is not None else -1.0),
                QTableWidgetItem(short_model(entry.base_model)),
                _NumberItem(short_date(entry.created), timestamp(entry.created)),
            ]
            for col, item in enumerate(cells):
                if col:
                    item.setToolTip(tip if ok is False else f"{entry.path}\nmade on {entry.base_model}, {short_date(entry.created)}")
                self.table.setItem(row, col, item)
        self.table.setSortingEnabled(True)
        self.table.clearSelection()
        self._select_rows(selected)
        self.table.blockSignals(False)
        self._fit_columns()
        n = len(self.session.catalog.problems)
        self.problems.setVisible(bool(n))
        if n:
            self.problems.setText(f"⚠ {n} file{'s' if n > 1 else ''} in the library could not be opened (hover for details).")
            self.problems.setToolTip("\n\n".join(f"{p.path.name}: {p.message}" for p in self.session.catalog.problems))
        folder = html.escape(str(self.session.library.folder))
        self.folder_label.setText(f'Library: <a href="reveal">{folder}</a>')
        self.folder_label.setToolTip("Open the library folder")
        self._on_selection()

    def column_shown(self, title: str) -> bool:
        return not self.table.isColumnHidden(COLUMNS.index(title))

    def show_column(self, title: str, shown: bool) -> None:
        """Show or hide a column for good (the width no longer decides)."""
        self._chosen[title] = shown
        self._fit_columns()

    @Slot()
    def _fit_columns(self) -> None:
        """Size every column but the name to its cells and title, and show the optional
        ones that leave the name room; the name takes the rest. (Qt's own fit keeps
        room for a sort arrow in every title; only the sorted column needs it.)"""
        header = self.table.horizontalHeader()
        metrics = header.fontMetrics()
        widths = {}
        for col, title in enumerate(COLUMNS):
            arrow = 18 if header.sortIndicatorSection() == col else 0
            widths[title] = max(self.table.sizeHintForColumn(col), metrics.horizontalAdvance(title) + 22 + arrow)
        shown = {t: self._chosen.get(t, t not in OPTIONAL_COLUMNS) for t in COLUMNS if t != COLUMNS[NAME_COLUMN]}
        room = self.table.viewport().width() - NAME_ROOM - sum(widths[t] for t, on in shown.items() if on)
        for title in OPTIONAL_COLUMNS:
            if title not in self._chosen and widths[title] <= room:
                shown[title] = True
                room -= widths[title]
        for title, on in shown.items():
            col = COLUMNS.index(title)
            self.table.setColumnHidden(col, not on)
            if on:
                header.resizeSection(col, widths[title])

    def columns_menu(self) -> QMenu:
        """A menu of checkable columns (every one but the mark and the name)."""
        menu = QMenu(self)
        for title in COLUMNS:
            if title and title != COLUMNS[NAME_COLUMN]:
                action = menu.addAction(title)
                action.setCheckable(True)
                action.setChecked(self.column_shown(title))
                action.toggled.connect(lambda shown, t=title: self.show_column(t, shown))
        return menu

    def _header_menu(self, pos) -> None:
        menu = self.columns_menu()
        menu.exec(self.table.horizontalHeader().mapToGlobal(pos))
        menu.deleteLater()

    def selected_names(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.table.item(r, 1).text() for r in rows if self.table.item(r, 1)]

    def select(self, name: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 1).text() == name:
                self.table.selectRow(row)
                return

    def _select_rows(self, names) -> None:
        """Add the rows of ``names`` to the selection (selectRow would replace it)."""
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        for row in range(self.table.rowCount()):
            if self.table.item(row, NAME_COLUMN).text() in names:
                self.table.selectionModel().select(self.table.model().index(row, NAME_COLUMN), flags)

    @Slot()
    def _on_selection(self) -> None:
        names = self.selected_names()
        self.rename_button.setEnabled(len(names) == 1)
        self.delete_button.setEnabled(bool(names))
        self.details.setHtml(details_html(self.session, names[0]) if len(names) == 1 else "")
        self.selection_changed.emit(names)

    # Actions ------------------------------------------------------------------------

    def _context_menu(self, pos) -> None:
        names = self.selected_names()
        if not names:
            return
        menu = QMenu(self)
        name = names[0]
        fits = bool(self.session.catalog.compatibility(name)[0])
        menu.addAction("Add to blend", lambda: self.add_to_blend.emit(name)).setEnabled(fits)
        menu.addAction("Add column to side by side", lambda: self.add_to_compare.emit(name)).setEnabled(fits)
        menu.addAction("Show layer changes", lambda: self.show_changes.emit(name)).setEnabled(fits)
        menu.addSeparator()
        menu.addAction("Rename…", self.rename_selected).setEnabled(len(names) == 1)
        menu.addAction("Delete…", self.delete_selected)
        menu.addAction("Reveal in folder", self.reveal_folder)
        menu.exec(self.table.viewport().mapToGlobal(pos))

    @Slot(QTableWidgetItem)
    def _on_double_click(self, item: QTableWidgetItem) -> None:
        name = self.table.item(item.row(), 1).text()
        if self.session.catalog.compatibility(name)[0]:
            self.add_to_blend.emit(name)

    @Slot()
    def rename_selected(self) -> None:
        names = self.selected_names()
        if len(names) != 1:
            return
        new, ok = QInputDialog.getText(self, "Rename stance", f"New name for {names[0]}:", text=names[0])
        if ok and new.strip() and new.strip() != names[0]:
            self._guard(lambda: self.session.catalog.rename(names[0], new.strip()), "Could not rename")

    @Slot()
    def delete_selected(self) -> None:
        names = self.selected_names()
        if not names:
            return
        listing = "\n".join(f"  {n}" for n in names)
        answer = QMessageBox.question(
            self, "Delete stances",
            f"Delete {'these' if len(names) > 1 else 'this'} checkpoint file{'s' if len(names) > 1 else ''} "
            f"from the library? This cannot be undone.\n\n{listing}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel,
        )
        if answer == QMessageBox.StandardButton.Yes:
            for name in names:
                if not self._guard(lambda n=name: self.session.catalog.delete(n), "Could not delete"):
                    break

    @Slot()
    def import_dialog(self) -> Optional[Job]:
        paths, _ = QFileDialog.getOpenFileNames(self, "Import stance checkpoints", "",
                                                f"Stance checkpoints (*{SUFFIX});;All files (*)")
        return self.import_files(paths) if paths else None

    def import_files(self, paths: list[str]) -> Job:
        """Copy checkpoint files into the library on the side runner: each file is read
        in full to check that it opens, which must not freeze the window."""
        library = self.session.library

        def job(progress, cancel):
            results = []
            for i, path in enumerate(paths):
                cancel.raise_if_set("import")
                progress(Progress("import", i, len(paths), Path(path).name))
                try:
                    results.append((path, library.import_file(path).name[: -len(SUFFIX)], None))
                except (StanceStudioError, OSError) as exc:
                    message = str(exc)
                    results.append((path, None, message if Path(path).name in message else f"{path}: {message}"))
            return results

        what = Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} files"
        self.session.message.emit(f"Importing {what} …")
        job_ = self.session.host.side_runner.submit(job, f"Importing {what}")
        job_.finished.connect(self._on_imported)
        job_.failed.connect(self._on_import_failed)
        return job_

    @Slot(object)
    def _on_imported(self, results: list) -> None:
        names = [name for _, name, _ in results if name]
        problems = [problem for _, _, problem in results if problem]
        self.session.refresh_library()
        if names:
            self.table.clearSelection()
            self._select_rows(names)
            self.session.message.emit(f"Imported {', '.join(names)}.")
        if problems:
            QMessageBox.warning(self, "Could not import", "\n\n".join(problems))

    @Slot(str)
    def _on_import_failed(self, message: str) -> None:
        QMessageBox.warning(self, "Could not import", message)

    @Slot()
    def reveal_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.session.library.folder)))

    def _guard(self, action, title: str) -> bool:
        try:
            action()
        except (StanceStudioError, OSError) as exc:
            QMessageBox.warning(self, title, str(exc))
            return False
        return True


class _NumberItem(QTableWidgetItem):
    """A cell shown as text but sorted by number."""

    def __init__(self, text: str, value: float) -> None:
        super().__init__(text)
        self.value = value
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other) -> bool:
        return self.value < getattr(other, "value", 0)
