"""What every experiment view shares: one run at a time on the model worker, its
Run/Cancel buttons, progress bar and status line, the inputs locked while it runs,
rows shown as they are measured, and the measured table filled and exported.

The methods-and-policies tab, the dose–response tab and the layer sweep are views
over different core jobs; each gives :class:`ExperimentRun` the widgets it shows and
two callbacks, and keeps only what is its own (the plan, the plot, the columns)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from PySide6.QtCore import QObject, Qt, Slot
from PySide6.QtWidgets import (
    QFileDialog,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from stance_studio.core.jobs import Counter, MeasuredRow
from stance_studio.qt.workers import Job, is_current


class FollowsRun:
    """``job`` and ``cancel`` of a view that follows its runs with ``self.runner`` (an
    :class:`ExperimentRun`)."""

    runner: "ExperimentRun"

    @property
    def job(self) -> Optional[Job]:
        return self.runner.job

    def cancel(self) -> None:
        self.runner.cancel()


class ExperimentRun(QObject):
    """Follows one experiment job at a time for a view.

    ``add_rows(rows)`` receives the rows of each progress report (typed
    :class:`~stance_studio.core.jobs.MeasuredRow` partials), ``finished(result)`` the
    job's result; ``unit`` names what a row is in the status line ("rows", "points").
    Reports of a run that a newer one replaced are dropped (one stale-result rule:
    the job's stamp from a :class:`Counter`)."""

    def __init__(self, session, view: QWidget, *, run_button: QPushButton, cancel_button: QPushButton,
                 progress: QProgressBar, status: QLabel, inputs: Callable[[], Iterable[QWidget]],
                 add_rows: Callable[[list], None], finished: Callable[[object], None],
                 count: Callable[[], int], unit: str = "rows", failed_title: str = "The experiment failed") -> None:
        super().__init__(view)
        self.session = session
        self.view = view
        self.job: Optional[Job] = None
        self._runs = Counter()
        self.run_button, self.cancel_button = run_button, cancel_button
        self.progress, self.status = progress, status
        self._inputs, self._add_rows, self._finished, self._count = inputs, add_rows, finished, count
        self.unit, self.failed_title = unit, failed_title
        cancel_button.setEnabled(False)
        cancel_button.clicked.connect(self.cancel)

    @property
    def is_active(self) -> bool:
        return self.job is not None and self.job.is_active

    def start(self, fn, title: str) -> Job:
        """Queue ``fn(progress, cancel)`` on the model worker and follow it."""
        self.job = self.session.host.run_on_model(fn, title)
        self.job.stamp = self._runs.bump()
        self.job.report_to(self)
        self.set_running(True)
        self.status.setText("Waiting for the model worker…")
        return self.job

    @Slot()
    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText(f"Stopping after the current {self.unit[:-1]}…")

    def set_running(self, running: bool) -> None:
        for widget in (self.run_button, *self._inputs()):
            widget.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.progress.setRange(0, 0)

    def _mine(self) -> bool:
        return is_current(self._runs, self.sender())

    @Slot(list)
    def _on_progress(self, reports: list) -> None:
        if not self._mine():
            return
        new = [r.partial.row for r in reports if isinstance(r.partial, MeasuredRow)]
        if new:
            self._add_rows(new)
        last = reports[-1]
        if last.total:
            self.progress.setRange(0, last.total)
            self.progress.setValue(last.done)
        self.status.setText(last.message or last.stage)

    @Slot(object)
    def _on_finished(self, result) -> None:
        if self._mine():
            self._finished(result)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        if self._mine():
            self.status.setText(f"Failed: {message}")
            QMessageBox.warning(self.view, self.failed_title, message)

    @Slot()
    def _on_cancelled(self) -> None:
        if self._mine():
            self.status.setText(f"Cancelled; {self._count()} {self.unit} were measured before it stopped.")

    @Slot()
    def _on_ended(self) -> None:
        if self._mine():
            self.set_running(False)
            self.progress.setRange(0, 1)
            self.progress.setValue(1)


def fill_table(table: QTableWidget, headers: Sequence[str], rows: Sequence[dict],
               cells: Callable[[dict], Sequence[str]], left_columns: Iterable[int] = (0,)) -> None:
    """Show ``rows`` in ``table``: one line each from ``cells(row)``, numbers right-aligned
    (every column but ``left_columns``), a row's error or first answer as its tooltip."""
    left = set(left_columns)
    table.setColumnCount(len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        tip = row.get("error") or (f"First probe answer:\n{row['sample'].strip()[:400]}" if row.get("sample") else "")
        for c, text in enumerate(cells(row)):
            item = QTableWidgetItem(text)
            if c not in left:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if tip:
                item.setToolTip(tip)
            table.setItem(r, c, item)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)


def ask_export_path(parent: QWidget, suggested: str) -> str:
    """The file to export a table to, from a save dialog ('' when cancelled)."""
    path, _ = QFileDialog.getSaveFileName(parent, "Export the table", suggested,
                                          "Markdown (*.md);;CSV (*.csv);;JSON (*.json)")
    return path


def write_table(parent: QWidget, status: QLabel, path: str, markdown: Callable[[], str],
                csv: Callable[[], str], json_text: Callable[[], str]) -> bool:
    """Write a table to ``path`` in the format its extension names (.csv, .json, else
    Markdown); a failed write is a dialog naming the file, and nothing is reported done."""
    text = csv() if path.endswith(".csv") else json_text() if path.endswith(".json") else markdown()
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        QMessageBox.warning(parent, "Could not export", f"Could not write {path}: {exc.strerror or exc}")
        return False
    status.setText(f"Exported to {path}")
    return True
