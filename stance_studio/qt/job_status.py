"""The status-bar widget for the model worker: the running job's title, a progress
bar, a cancel button for that job, a button that shows the jobs list (with how many
are under way) and "Cancel all".

Cancel stops the running job only: queued jobs (a blend the sliders asked for, a
comparison) still run, so what the panels show stays what the model holds. Cancel
all also empties the queue."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QToolButton, QWidget

from stance_studio.qt.workers import Job, JobRunner


class JobStatus(QWidget):
    show_jobs = Signal()  # the user asked for the jobs list
    cancel_all_requested = Signal()

    def __init__(self, runner: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.job: Optional[Job] = None
        self.label = QLabel()
        self.bar = QProgressBar(maximumWidth=160, maximumHeight=14, textVisible=False)
        self.cancel = QToolButton(text="Cancel", autoRaise=True, toolTip="Cancel the running job (queued ones still run)")
        self.cancel.clicked.connect(self._on_cancel)
        self.jobs_button = QToolButton(autoRaise=True, toolTip="Show every job: running, queued and just ended")
        self.jobs_button.clicked.connect(self.show_jobs)
        self.cancel_all = QToolButton(text="Cancel all", autoRaise=True,
                                      toolTip="Cancel the running job and every queued one")
        self.cancel_all.clicked.connect(self.cancel_all_requested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 6, 0)
        for widget in (self.label, self.bar, self.cancel, self.jobs_button, self.cancel_all):
            layout.addWidget(widget)
        for signal in (runner.job_started, runner.job_added, runner.job_ended):
            signal.connect(self._on_jobs_changed)
        self.setVisible(False)

    @Slot(object)
    def _on_jobs_changed(self, _job: Job) -> None:
        self._update()

    def _update(self) -> None:
        active = self.runner.active_jobs()
        if not active:
            self.job = None
            self.setVisible(False)
            return
        job = self.runner.current  # the long one, while short ones run between its steps
        if job is not self.job:
            if self.job is not None:
                self.job.progressed.disconnect(self._on_progress)
            self.job = job
            if job is not None:
                job.progressed.connect(self._on_progress)
                self._show_progress(job.last_progress)
        queued = len(active) - (1 if job is not None else 0)
        title = job.title if job is not None else "Starting …"
        self.label.setText(title + (f"  (+{queued} queued)" if queued > 0 else ""))
        self.jobs_button.setText(f"Jobs ({len(active)})")
        self.cancel.setEnabled(job is not None)
        self.setVisible(True)

    def _show_progress(self, report) -> None:
        if report is not None and report.total:
            self.bar.setRange(0, report.total)
            self.bar.setValue(report.done)
        else:
            self.bar.setRange(0, 0)

    @Slot(list)
    def _on_progress(self, reports: list) -> None:
        last = next((r for r in reversed(reports) if r.total), None)
        if last is not None and self.sender() is self.job:
            self._show_progress(last)

    @Slot()
    def _on_cancel(self) -> None:
        job = self.runner.current
        if job is not None:
            job.cancel()
