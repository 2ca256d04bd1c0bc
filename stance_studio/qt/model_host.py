"""The loaded base model and the worker threads that use it.

Everything that touches the model is submitted to the one model :class:`JobRunner`,
so model access is serialised (interactive jobs run between training steps, see
:mod:`.workers`); work that never touches the model (reading files, SVDs of a
delta) runs on the side runner, so it need not wait for a long training run.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

from PySide6.QtCore import QEventLoop, QObject, Signal, Slot

from stance_studio.core.errors import StanceStudioError
from stance_studio.qt.settings import Settings
from stance_studio.qt.workers import Job, JobRunner


class ModelHost(QObject):
    model_loading = Signal(str, object)  # spec, Job
    model_changed = Signal(object)  # BaseModel or None
    message = Signal(str)
    error = Signal(str, str)

    # How long quitting waits for the running job to see its cancel flag before
    # the windows are hidden and the wait goes on out of sight.
    SHUTDOWN_WAIT_MS = 1500

    def __init__(self, settings: Settings, runner: Optional[JobRunner] = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.runner = runner or JobRunner(threads=settings.get("worker/threads"), parent=self)
        self.side_runner = JobRunner(threads=None, parent=self)
        self.base = None
        self._loading: Optional[Job] = None

    @property
    def loading(self) -> bool:
        """True while a model load is queued or running."""
        return self._loading is not None and self._loading.is_active

    def load_model(self, spec: str, trust_remote_code: bool = False, device: Optional[str] = None,
                   dtype: Optional[str] = None) -> Optional[Job]:
        """Load a base model in the background; ``model_changed`` fires when ready.

        ``device``/``dtype`` default to what was last chosen for this model (else auto).
        One load at a time: while one is queued or running, another is refused (None).
        """
        from stance_studio.core.models import load_base

        if self.loading:
            self.message.emit(f"{self._loading.title} is still under way; cancel it or wait for it "
                              "before loading another model.")
            return None
        remembered = self.settings.placement(spec)
        device, dtype = device or remembered[0], dtype or remembered[1]

        def job(progress, cancel):
            return spec, load_base(spec, progress=progress, cancel=cancel, trust_remote_code=trust_remote_code,
                                   device=device, dtype=dtype)

        job_ = self.runner.submit(job, f"Loading {spec}")
        job_.finished.connect(self._on_model_loaded)
        job_.failed.connect(self._on_model_failed)
        self._loading = job_
        self.model_loading.emit(spec, job_)
        return job_

    @Slot(object)
    def _on_model_loaded(self, result) -> None:
        spec, base = result
        self.settings.remember_model(str(spec))
        self.set_base(base)
        seconds = f"{base.load_seconds:.1f} s" + (" from cache" if base.from_cache else "")
        self.message.emit(f"Loaded {base.model_id} ({seconds})")

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        self.error.emit("Could not load the model", message)

    def set_base(self, base) -> None:
        """Make ``base`` the loaded model."""
        self.base = base
        self.model_changed.emit(base)

    def run_on_model(self, fn: Callable, title: str) -> Job:
        """Submit a long job on the loaded model (training, experiments). The blend
        shown stays as it is: training copies the true base, metrics use per-row weights."""
        if self.base is None:
            raise StanceStudioError("Load a base model first.")

        def job(progress, cancel):
            return fn(progress=progress, cancel=cancel)

        return self.runner.submit(job, title)

    def shutdown(self) -> None:
        """Cancel every job and stop both worker threads, waiting until they have."""
        self.runner.cancel_all()
        self.side_runner.cancel_all()
        for runner in (self.runner, self.side_runner):
            runner.shutdown(self.SHUTDOWN_WAIT_MS, on_slow=_hide_while_waiting)


def _hide_while_waiting(job: Optional[Job]) -> None:
    """Quitting waits for a job that cannot stop yet: do it with every window hidden."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        for widget in QApplication.topLevelWidgets():
            widget.hide()
        app.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)
    what = job.title if job is not None else "a background job"
    print(f"Stance Studio: waiting for {what} to stop before quitting …", file=sys.stderr)
