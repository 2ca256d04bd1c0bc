"""The app's state, shared by every panel: the loaded base model, its blender, the
stance library, the blend weights and the saved variants.

No widgets here. Panels read this object and call its methods; everything that
touches the model is submitted to the one :class:`~.workers.JobRunner`, so model
access is serialised. Checkpoints are loaded lazily (in the worker) and cached per
file and modification time.

The library folder is, first to last: the one given on the command line,
``STANCE_STUDIO_LIBRARY``, the one chosen in the GUI (a setting), the per-user default
— the same order as the CLI, so a script and the GUI see the same library.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import shiboken6
from PySide6.QtCore import QEventLoop, QFileSystemWatcher, QObject, QTimer, Signal, Slot

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import StanceCheckpoint, compatibility, load_checkpoint
from stance_studio.core.errors import LibraryError, StanceStudioError
from stance_studio.core.library import Library, LibraryEntry, LibraryProblem
from stance_studio.core.variants import Variant, parse_variant
from stance_studio.qt.settings import Settings
from stance_studio.qt.workers import Job, JobRunner

BLEND_KEY = "blend"
LIBRARY_ENV = "STANCE_STUDIO_LIBRARY"


class Session(QObject):
    model_loading = Signal(str, object)  # spec, Job
    model_changed = Signal(object)  # BaseModel or None
    library_changed = Signal()
    blend_changed = Signal(dict)  # requested weights {name: alpha}, alpha != 0
    blend_applied = Signal(dict, float)  # weights now in the model, seconds taken
    variants_changed = Signal()
    message = Signal(str)  # a short status-bar message
    error = Signal(str, str)  # title, message: shown as a dialog

    # How long quitting waits for the running job to see its cancel flag before
    # the windows are hidden and the wait goes on out of sight.
    SHUTDOWN_WAIT_MS = 1500

    def __init__(self, settings: Settings, library_folder: Optional[str] = None,
                 runner: Optional[JobRunner] = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        env_folder = os.environ.get(LIBRARY_ENV, "")
        # Set when the environment variable decides the folder (the GUI may not change it).
        self.library_env = env_folder if env_folder and not library_folder else ""
        # Opened before any worker thread starts: a folder that cannot be used fails
        # here cleanly, with no running thread left to abort the process.
        self.library = Library(library_folder or env_folder or settings.get("library/folder") or None)
        self.runner = runner or JobRunner(threads=settings.get("worker/threads"), parent=self)
        # Work that never touches the model (reading files, SVDs of a delta) runs
        # here, so it need not wait for a long training run.
        self.side_runner = JobRunner(threads=None, parent=self)
        self.base = None
        self.blender: Optional[Blender] = None
        self.entries: list[LibraryEntry] = []
        self.problems: list[LibraryProblem] = []
        self._compat: dict[str, tuple[bool, str]] = {}
        self.blend_weights: dict[str, float] = {}
        self.applied_weights: dict[str, float] = {}
        self._loading: Optional[Job] = None
        self._shut_down = False
        self._blend_job: Optional[Job] = None
        self._cache: dict[Path, tuple[int, StanceCheckpoint]] = {}
        self._cache_lock = threading.Lock()
        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(self._on_folder_changed)
        self._rescan = QTimer(self, singleShot=True, interval=250)
        self._rescan.timeout.connect(self.refresh_library)
        self._watch_folder()
        self.refresh_library()

    # Model ------------------------------------------------------------------------

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
        """Make ``base`` the loaded model (the blend starts empty)."""
        self.base = base
        self.blender = Blender(base) if base is not None else None
        self.blend_weights = {}
        self.applied_weights = {}
        self._update_compatibility()
        self.model_changed.emit(base)
        self.blend_changed.emit({})
        self.library_changed.emit()

    # Library ----------------------------------------------------------------------

    def set_library_folder(self, folder: str) -> bool:
        """Switch to ``folder`` and remember it; refused (False, with a dialog) while
        ``STANCE_STUDIO_LIBRARY`` decides the folder."""
        if self.library_env:
            self.error.emit("Library folder is set by the environment",
                            f"{LIBRARY_ENV} is set to {self.library_env}, which takes precedence over a folder chosen "
                            "here (as on the command line). Unset it and restart to choose another folder.")
            return False
        self.library = Library(folder)
        self.settings.set("library/folder", folder)
        self._watch_folder()
        self.refresh_library()
        return True

    def _watch_folder(self) -> None:
        if self._watcher.directories():
            self._watcher.removePaths(self._watcher.directories())
        self._watcher.addPath(str(self.library.folder))

    @Slot(str)
    def _on_folder_changed(self, _path: str) -> None:
        self._rescan.start()

    @Slot()
    def refresh_library(self) -> None:
        """Re-read the library headers (fast) and tell every panel."""
        try:
            self.entries, self.problems = self.library.scan()
        except OSError as exc:
            self.entries, self.problems = [], [LibraryProblem(self.library.folder, str(exc))]
        self._update_compatibility()
        known = {e.name for e in self.entries}
        dropped = [n for n in self.blend_weights if n not in known]
        if dropped:
            self.set_blend({n: a for n, a in self.blend_weights.items() if n in known})
        self.library_changed.emit()

    def entry(self, name: str) -> Optional[LibraryEntry]:
        return next((e for e in self.entries if e.name == name), None)

    def _update_compatibility(self) -> None:
        self._compat = {}
        if self.base is None:
            return
        for entry in self.entries:
            try:
                self._compat[entry.name] = compatibility(entry.metadata, self.base)
            except (KeyError, ValueError, StanceStudioError) as exc:
                self._compat[entry.name] = (False, str(exc))

    def compatibility(self, name: str) -> tuple[Optional[bool], str]:
        """(True/False, reason) for a library stance against the loaded model;
        (None, ...) while no model is loaded."""
        if self.base is None:
            return None, "No model loaded."
        return self._compat.get(name, (False, f"{name} is not in the library."))

    def compatible_names(self) -> list[str]:
        return [e.name for e in self.entries if self.compatibility(e.name)[0]]

    def checkpoint(self, name: str) -> StanceCheckpoint:
        """The checkpoint ``name`` from the library (cached; call it in a job)."""
        path = self.library.resolve(name)
        mtime = path.stat().st_mtime_ns
        with self._cache_lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == mtime:
                return hit[1]
        ckpt = load_checkpoint(path)
        ckpt.name = name
        with self._cache_lock:
            self._cache[path] = (mtime, ckpt)
        return ckpt

    def rename(self, name: str, new_name: str) -> None:
        self.library.rename(name, new_name)
        if name in self.blend_weights:
            weights = {(new_name if n == name else n): a for n, a in self.blend_weights.items()}
            self.blend_weights = weights
        self.refresh_library()
        self.set_blend(self.blend_weights)

    def delete(self, name: str) -> None:
        self.library.delete(name)
        self.refresh_library()

    # Blend ------------------------------------------------------------------------

    def set_blend(self, weights: dict[str, float]) -> Optional[Job]:
        """Request blend ``weights``; applied on the worker after any running job.

        Requests made while one is pending replace it, so a slider drag never queues
        more than one blend behind a generation.
        """
        weights = {n: float(a) for n, a in weights.items() if float(a) != 0.0}
        self.blend_weights = weights
        self.blend_changed.emit(dict(weights))
        if self.blender is None:
            return None
        blender = self.blender

        def job(progress, cancel):
            pairs = [(self.checkpoint(n), a) for n, a in weights.items()]
            started = time.perf_counter()
            blender.apply(pairs)
            return weights, time.perf_counter() - started

        # Not cancellable once started: its outcome is what the model holds.
        job_ = self.runner.submit(job, "Applying blend", key=BLEND_KEY, cancellable=False, interactive=True)
        job_.finished.connect(self._on_blend_applied)
        job_.failed.connect(self._on_blend_failed)
        job_.cancelled.connect(self._on_blend_cancelled)
        self._blend_job = job_
        return job_

    def set_weight(self, name: str, alpha: float) -> Optional[Job]:
        weights = dict(self.blend_weights)
        weights[name] = alpha
        return self.set_blend(weights)

    @Slot(object)
    def _on_blend_applied(self, result) -> None:
        weights, seconds = result
        self.applied_weights = dict(weights)
        self.blend_applied.emit(dict(weights), seconds)

    @Slot(str)
    def _on_blend_failed(self, message: str) -> None:
        self._resync_blend()
        self.error.emit("Could not apply the blend", message)

    @Slot()
    def _on_blend_cancelled(self) -> None:
        self._resync_blend()

    def _resync_blend(self) -> None:
        """The latest blend request never reached the model (cancelled before it
        started, or failed): show the blend the model really holds again."""
        if self.sender() is self._blend_job and self.blend_weights != self.applied_weights:
            self.blend_weights = dict(self.applied_weights)
            self.blend_changed.emit(dict(self.applied_weights))

    def blend_variant(self, label: str = "current blend") -> Variant:
        return Variant(label, tuple(sorted(self.blend_weights.items())))

    def run_on_model(self, fn: Callable, title: str) -> Job:
        """Submit a job on the loaded model (training, experiments). The blend shown
        stays as it is: training copies the true base, metrics use per-row weights."""
        if self.blender is None:
            raise StanceStudioError("Load a base model first.")

        def job(progress, cancel):
            return fn(progress=progress, cancel=cancel)

        return self.runner.submit(job, title)

    # Saved variants -----------------------------------------------------------------

    def variants(self) -> list[Variant]:
        out = []
        for item in self.settings.get_json("blend/variants"):
            try:
                out.append(Variant(str(item["label"]), parse_variant(str(item["spec"])).weights))
            except (KeyError, TypeError, StanceStudioError):
                continue
        return out

    def save_variant(self, label: str, weights: Optional[dict[str, float]] = None) -> Variant:
        label = label.strip()
        if not label:
            raise LibraryError("A saved blend needs a name.")
        weights = dict(self.blend_weights if weights is None else weights)
        variant = Variant(label, tuple(sorted((n, a) for n, a in weights.items() if a != 0)))
        items = [{"label": v.label, "spec": v.spec} for v in self.variants() if v.label != label]
        items.append({"label": label, "spec": variant.spec})
        self.settings.set_json("blend/variants", items)
        self.variants_changed.emit()
        return variant

    def delete_variant(self, label: str) -> None:
        items = [{"label": v.label, "spec": v.spec} for v in self.variants() if v.label != label]
        self.settings.set_json("blend/variants", items)
        self.variants_changed.emit()

    def shutdown(self) -> None:
        """Cancel every job and stop both worker threads, waiting until they have.

        The folder watcher goes too, here in the GUI thread: Python's cycle collector
        frees a dropped session from whichever thread it happens to run in (the model
        worker included), and a watcher torn down from another thread corrupts memory.
        """
        if self._shut_down:
            return
        self._shut_down = True
        self._rescan.stop()
        shiboken6.delete(self._watcher)
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
