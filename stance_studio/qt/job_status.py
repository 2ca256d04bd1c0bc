"""The status-bar widget showing the model worker's current job: its title, a
progress bar and a cancel button.

Cancel stops the running job only: queued jobs (a blend the sliders asked for, a
comparison) still run, so what the panels show stays what the model holds."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QToolButton, QWidget

from stance_studio.qt.workers import Job, JobRunner


class JobStatus(QWidget):
    def __init__(self, runner: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.job: Optional[Job] = None
        self.label = QLabel()
        self.bar = QProgressBar(maximumWidth=160, maximumHeight=14, textVisible=False)
        self.cancel = QToolButton(text="Cancel", autoRaise=True, toolTip="Cancel the running job (queued ones still run)")
        self.cancel.clicked.connect(self._on_cancel)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 6, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel)
        runner.job_started.connect(self._on_started)
        runner.busy_changed.connect(self._on_busy)
        self.setVisible(False)

    @Slot(object)
    def _on_started(self, job: Job) -> None:
        self.job = job
        queued = len(self.runner.active_jobs()) - 1
        self.label.setText(job.title + (f"  (+{queued} queued)" if queued > 0 else ""))
        self.bar.setRange(0, 0)
        job.progressed.connect(self._on_progress)
        self.setVisible(True)

    @Slot(list)
    def _on_progress(self, reports: list) -> None:
        last = next((r for r in reversed(reports) if r.total), None)
        if last is not None and self.sender() is self.job:
            self.bar.setRange(0, last.total)
            self.bar.setValue(last.done)

    @Slot(bool)
    def _on_busy(self, busy: bool) -> None:
        if not busy:
            self.job = None
            self.setVisible(False)

    @Slot()
    def _on_cancel(self) -> None:
        job = self.runner.current
        if job is not None:
            job.cancel()
