"""The jobs list: every job of the given runners that is running or queued, and the
last few that ended, each with its title, state, progress and a cancel button.

Cancelling a queued job removes it from the queue at once; cancelling a running one
asks it to stop at its next check (a training run stops between two steps). "Cancel
all" does both for every job."""

from __future__ import annotations

from typing import Optional, Sequence

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QGridLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QToolButton,
                               QVBoxLayout, QWidget)

from stance_studio.qt.workers import Job, JobRunner

KEEP_ENDED = 5  # ended jobs still listed, newest first after the active ones

STATE_TEXT = {"pending": "queued", "running": "running", "finished": "done", "failed": "failed",
              "cancelled": "cancelled", "superseded": "replaced by a newer request"}


def state_text(job: Job) -> str:
    """What the list says of ``job``'s state."""
    if job.state == "pending" and job.interactive:
        return "next"  # interactive: ahead of queued long jobs, between a training's steps
    return STATE_TEXT.get(job.state, job.state)


class JobRow:
    """The widgets of one job in the list's grid."""

    def __init__(self, job: Job, on_cancel) -> None:
        self.job = job
        self.title = QLabel(job.title)
        self.state = QLabel()
        self.bar = QProgressBar(maximumHeight=14, textVisible=False, minimumWidth=90, maximumWidth=160)
        self.message = QLabel()
        self.cancel = QToolButton(text="Cancel", autoRaise=True, toolTip=f"Cancel {job.title}")
        self.cancel.clicked.connect(lambda: on_cancel(job))
        self.widgets = (self.title, self.state, self.bar, self.message, self.cancel)
        self.update()

    def update(self) -> None:
        job = self.job
        self.state.setText(state_text(job))
        report = job.last_progress
        if job.state == "finished":
            self.bar.setRange(0, 1)
            self.bar.setValue(1)
        elif report is not None and report.total:
            self.bar.setRange(0, report.total)
            self.bar.setValue(report.done)
        elif job.state == "running":
            self.bar.setRange(0, 0)  # busy, no measure of how far
        else:
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
        self.message.setText(report.message if report is not None and job.is_active else job.error)
        self.state.setToolTip("Short jobs you asked for run between this job's steps." if job.yields and job.is_active
                              else "")
        self.cancel.setEnabled(job.is_active)


class JobsPanel(QWidget):
    cancel_all_requested = Signal()

    def __init__(self, runners: Sequence[JobRunner], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runners = list(runners)
        self.rows: dict[int, JobRow] = {}
        self.ended: list[Job] = []
        self.summary = QLabel()
        self.cancel_all = QPushButton("Cancel all", toolTip="Cancel the running jobs and every queued one")
        self.cancel_all.clicked.connect(self.cancel_all_requested)
        head = QHBoxLayout()
        head.addWidget(self.summary, 1)
        head.addWidget(self.cancel_all)
        self._grid_host = QWidget()
        self.grid = QGridLayout(self._grid_host)
        self.grid.setColumnStretch(3, 1)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop)
        scroll = QScrollArea(widgetResizable=True)
        scroll.setWidget(self._grid_host)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(scroll, 1)
        for runner in self.runners:
            runner.job_added.connect(self._on_added)
            runner.job_started.connect(self._on_changed)
            runner.job_ended.connect(self._on_ended)
            for job in runner.active_jobs():
                self._follow(job)
        self._layout_rows()

    def jobs(self) -> list[Job]:
        """What the list shows, in order: active jobs (oldest first), then ended ones."""
        active = sorted((j for r in self.runners for j in r.active_jobs()), key=lambda j: j.id)
        return active + self.ended

    def row(self, job: Job) -> Optional[JobRow]:
        return self.rows.get(job.id)

    def request_cancel(self, job: Job) -> None:
        job.cancel()
        self._refresh()

    def _follow(self, job: Job) -> None:
        job.progressed.connect(self._on_progress)

    @Slot(object)
    def _on_added(self, job: Job) -> None:
        self._follow(job)
        self._layout_rows()

    @Slot(object)
    def _on_changed(self, _job: Job) -> None:
        self._refresh()

    @Slot(object)
    def _on_ended(self, job: Job) -> None:
        job.progressed.disconnect(self._on_progress)
        if job.state != "superseded":
            self.ended.insert(0, job)
            del self.ended[KEEP_ENDED:]
        self._layout_rows()

    @Slot(list)
    def _on_progress(self, _reports: list) -> None:
        row = self.rows.get(getattr(self.sender(), "id", 0))
        if row is not None:
            row.update()

    def _refresh(self) -> None:
        for row in self.rows.values():
            row.update()
        active = sum(len(r.active_jobs()) for r in self.runners)
        self.summary.setText(f"{active} job{'s' if active != 1 else ''} running or queued" if active
                             else "No job is running.")
        self.cancel_all.setEnabled(active > 0)

    def _layout_rows(self) -> None:
        jobs = self.jobs()
        wanted = {j.id for j in jobs}
        for job_id in [i for i in self.rows if i not in wanted]:
            for widget in self.rows.pop(job_id).widgets:
                widget.deleteLater()
        for row in self.rows.values():
            for widget in row.widgets:
                self.grid.removeWidget(widget)
        for line, job in enumerate(jobs):
            row = self.rows.get(job.id)
            if row is None:
                row = self.rows[job.id] = JobRow(job, self.request_cancel)
            for column, widget in enumerate(row.widgets):
                self.grid.addWidget(widget, line, column)
        self._refresh()
