"""One background thread that runs every job touching the model, one at a time.

A job is a core function ``fn(progress, cancel) -> result``. Jobs run on a single
worker thread, so training, blending, generation and analysis never touch the
weights at the same time: a blend requested during a generation is applied after it.
Jobs submitted as *interactive* (a blend, a generation, a look at one stance) go
ahead of every queued long job, and also run *between the steps* of a running long
job that offers it (``cancel.between_steps()``, as training does: it works on a copy
of the model), so what the user just asked for answers within a step, not after the
training. Interactive jobs run among themselves in submission order.

A job submitted with a ``key`` replaces a not-yet-started job with the same key (a
slider drag queues at most one pending blend). A job submitted with
``cancellable=False`` (a blend: short, and its result must be known) can be cancelled
only before it starts; once running it always reports its outcome. A job cancelled
before it starts ends at once (it leaves the queue); :meth:`JobRunner.cancel_all`
cancels the running job and empties the queue.

Results come back as signals of a :class:`Job`, a QObject living in the GUI thread.
Progress reports are batched and sent at most every ``PROGRESS_INTERVAL`` seconds, so
a job that reports every token never floods the event loop, and no report is lost.
Every exception is caught in the worker and turned into a message: user errors
(:class:`StanceStudioError`) keep theirs, running out of memory gets a clear one, and
anything else is a bug reported as such (with the traceback on stderr only). The
worker-thread side lives in :mod:`.job_executor`.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, QThread, Signal, Slot

from stance_studio.core.jobs import Counter, Progress
from stance_studio.qt.job_executor import PROGRESS_INTERVAL, Executor, JobFunction, Task, describe_error

__all__ = ["PROGRESS_INTERVAL", "Job", "JobRunner", "describe_error", "is_current"]
_ids = itertools.count(1)


def is_current(counter: Counter, job: Optional[QObject]) -> bool:
    """The one rule for dropping stale results in the GUI: a panel bumps its
    :class:`~stance_studio.core.jobs.Counter` when what it shows changes, stamps each job
    it submits (``job.stamp = counter.bump()``), and shows a job's reports only while
    ``is_current(counter, self.sender())``."""
    return counter.current(getattr(job, "stamp", None))


class Job(QObject):
    """A submitted job, as seen from the GUI thread.

    Exactly one of ``finished``, ``failed``, ``cancelled`` is emitted, then ``ended``
    (also for a job superseded before it started, which emits only ``ended``).
    """

    started = Signal()
    progressed = Signal(list)  # list[Progress] since the previous report
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    ended = Signal()

    def __init__(self, task: Task, title: str, key: Optional[str], parent: QObject | None = None,
                 on_cancel: Optional[Callable[["Job"], None]] = None) -> None:
        super().__init__(parent)
        self._task = task
        self._on_cancel = on_cancel
        self.title = title
        self.key = key
        self.state = "pending"
        self.result: Any = None
        self.error: str = ""
        self.last_progress: Optional[Progress] = None
        self.stamp: object = None  # set by whoever shows the results: see is_current()

    @property
    def id(self) -> int:
        return self._task.id

    @property
    def is_active(self) -> bool:
        return self.state in ("pending", "running")

    @property
    def interactive(self) -> bool:
        return self._task.interactive

    @property
    def yields(self) -> bool:
        """True once this running job has let interactive jobs run between its steps
        (a training run): what is asked for now need not wait for its end."""
        return self._task.yields

    _HANDLERS = (("started", "_on_started"), ("progressed", "_on_progress"), ("finished", "_on_finished"),
                 ("failed", "_on_failed"), ("cancelled", "_on_cancelled"), ("ended", "_on_ended"))

    def report_to(self, receiver: QObject) -> None:
        """Connect each signal to ``receiver``'s slot of the matching name where it has
        one (``_on_started``, ``_on_progress``, ``_on_finished``, ``_on_failed``,
        ``_on_cancelled``, ``_on_ended``): the one way panels follow a job."""
        for signal, slot in self._HANDLERS:
            handler = getattr(receiver, slot, None)
            if handler is not None:
                getattr(self, signal).connect(handler)

    def cancel(self) -> None:
        """Ask the job to stop at its next check; a job still queued ends now.

        A job submitted with ``cancellable=False`` stops only if it has not started."""
        self._task.cancel.set()
        if self._on_cancel is not None and self.state == "pending":
            self._on_cancel(self)


class JobRunner(QObject):
    """Submits jobs to the model worker thread and routes their signals."""

    busy_changed = Signal(bool)
    job_added = Signal(object)  # Job
    job_started = Signal(object)  # Job
    job_ended = Signal(object)  # Job
    _deliver = Signal(object)

    def __init__(self, threads: Optional[int] = 0, parent: QObject | None = None) -> None:
        """``threads``: torch's thread count, set in the worker before its first job
        (0: one per CPU core; None: leave it alone, for runners that do light work)."""
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("stance-studio-model-worker")
        self._executor = Executor(threads)
        self._executor.moveToThread(self._thread)
        self._deliver.connect(self._executor.run)
        self._executor.task_started.connect(self._on_started)
        self._executor.task_progressed.connect(self._on_progressed)
        self._executor.task_finished.connect(self._on_finished)
        self._executor.task_failed.connect(self._on_failed)
        self._executor.task_cancelled.connect(self._on_cancelled)
        self._executor.task_skipped.connect(self._on_skipped)
        self._jobs: dict[int, Job] = {}
        self._thread.start()

    # Public API -------------------------------------------------------------------

    def submit(self, fn: JobFunction, title: str, key: Optional[str] = None, cancellable: bool = True,
               interactive: bool = False) -> Job:
        """Queue ``fn(progress=..., cancel=...)``; returns its :class:`Job`.

        ``interactive``: a short job the user waits for; it goes ahead of queued long
        jobs and runs between the steps of a running one that allows it."""
        if key is not None:
            for job in self._jobs.values():
                if job.key == key and job.state == "pending":
                    job._task.superseded.set()
                    job.state = "superseded"
        task = Task(next(_ids), fn, cancellable, interactive)
        # No Qt parent: the runner holds the job while it is active, callers as long as
        # they like; Python frees it afterwards.
        job = Job(task, title, key, on_cancel=self._drop_if_pending)
        was_busy = self.busy
        self._jobs[task.id] = job
        if interactive:
            self._executor.push_interactive(task)
        self._deliver.emit(task)
        self.job_added.emit(job)
        if not was_busy:
            self.busy_changed.emit(True)
        return job

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    @property
    def current(self) -> Optional[Job]:
        return next((j for j in self._jobs.values() if j.state == "running"), None)

    def active_jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def cancel_all(self) -> int:
        """Cancel the running job and drop every queued one; returns how many."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        return len(jobs)

    def _drop_if_pending(self, job: Job) -> None:
        if job._task.claim("drop"):
            ended = self._end(job.id, "cancelled")
            if ended is not None:
                ended.cancelled.emit()
                self._after(ended)

    def shutdown(self, timeout_ms: int = 10000, on_slow: Optional[Callable[[Optional[Job]], None]] = None) -> bool:
        """Cancel everything and stop the thread; True if it stopped within ``timeout_ms``.

        A job may be in a stage that cannot be cancelled (the first GGUF load). Then
        ``on_slow(job)`` is called (hide the window, say why we wait) and the wait goes
        on until the thread has stopped: destroying a running QThread aborts the process.
        """
        self.cancel_all()
        self._thread.quit()
        if self._thread.wait(timeout_ms):
            return True
        if on_slow is not None:
            on_slow(self._jobs.get(self._executor.running_id))
        self._thread.wait()
        return False

    # Routing (GUI thread) -----------------------------------------------------------

    @Slot(int)
    def _on_started(self, job_id: int) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.state = "running"
            job.started.emit()
            self.job_started.emit(job)

    @Slot(int, list)
    def _on_progressed(self, job_id: int, reports: list) -> None:
        job = self._jobs.get(job_id)
        if job is not None and reports:
            job.last_progress = reports[-1]
            job.progressed.emit(reports)

    @Slot(int, object)
    def _on_finished(self, job_id: int, result: object) -> None:
        job = self._end(job_id, "finished")
        if job is not None:
            job.result = result
            job.finished.emit(result)
            self._after(job)

    @Slot(int, str)
    def _on_failed(self, job_id: int, message: str) -> None:
        job = self._end(job_id, "failed")
        if job is not None:
            job.error = message
            job.failed.emit(message)
            self._after(job)

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        job = self._end(job_id, "cancelled")
        if job is not None:
            job.cancelled.emit()
            self._after(job)

    @Slot(int)
    def _on_skipped(self, job_id: int) -> None:
        job = self._end(job_id, "superseded")
        if job is not None:
            self._after(job)

    def _end(self, job_id: int, state: str) -> Optional[Job]:
        job = self._jobs.pop(job_id, None)
        if job is not None:
            job.state = state
        return job

    def _after(self, job: Job) -> None:
        job.ended.emit()
        self.job_ended.emit(job)
        if not self._jobs:
            self.busy_changed.emit(False)
