"""What the loaded model runs with: the stances loaded and at what weight.

The requested weights change at once (sliders show them); applying them is an
interactive job on the model worker, so it answers between training steps, and a
newer request replaces one not yet applied (a slider drag queues at most one blend).
``applied_weights`` is what the model holds; when a request never reaches the model
(cancelled before it ran, or failed) the requested weights go back to it.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from PySide6.QtCore import QObject, Signal, Slot

from stance_studio.core.blend import Blender
from stance_studio.core.jobs import Counter
from stance_studio.core.variants import Variant
from stance_studio.qt.workers import Job, JobRunner, is_current

BLEND_KEY = "blend"


class BlendState(QObject):
    changed = Signal(dict)  # requested weights {name: alpha}, alpha != 0
    applied = Signal(dict, float)  # weights now in the model, seconds taken
    error = Signal(str, str)

    def __init__(self, runner: JobRunner, checkpoint: Callable, parent: QObject | None = None) -> None:
        """``checkpoint(name)``: a library stance's checkpoint (called in the job)."""
        super().__init__(parent)
        self.runner = runner
        self.checkpoint = checkpoint
        self.blender: Optional[Blender] = None
        self.weights: dict[str, float] = {}
        self.applied_weights: dict[str, float] = {}
        self._requests = Counter()  # a newer request makes an older one's outcome stale

    @Slot(object)
    def set_base(self, base) -> None:
        """A new model: its blend starts empty."""
        self.blender = Blender(base) if base is not None else None
        self.weights = {}
        self.applied_weights = {}
        self.changed.emit({})

    def set_blend(self, weights: dict[str, float]) -> Optional[Job]:
        """Request blend ``weights``; applied on the worker (see the module docstring)."""
        weights = {n: float(a) for n, a in weights.items() if float(a) != 0.0}
        self.weights = weights
        self.changed.emit(dict(weights))
        if self.blender is None:
            return None
        blender, checkpoint = self.blender, self.checkpoint

        def job(progress, cancel):
            pairs = [(checkpoint(n), a) for n, a in weights.items()]
            started = time.perf_counter()
            blender.apply(pairs)
            return weights, time.perf_counter() - started

        # Not cancellable once started: its outcome is what the model holds.
        job_ = self.runner.submit(job, "Applying blend", key=BLEND_KEY, cancellable=False, interactive=True)
        job_.finished.connect(self._on_applied)
        job_.failed.connect(self._on_failed)
        job_.cancelled.connect(self._on_cancelled)
        job_.stamp = self._requests.bump()
        return job_

    def set_weight(self, name: str, alpha: float) -> Optional[Job]:
        weights = dict(self.weights)
        weights[name] = alpha
        return self.set_blend(weights)

    def keep_only(self, names: set[str]) -> None:
        """Drop stances no longer in the library from the blend."""
        if any(n not in names for n in self.weights):
            self.set_blend({n: a for n, a in self.weights.items() if n in names})

    @Slot(str, str)
    def rename(self, name: str, new_name: str) -> None:
        if name in self.weights:
            self.set_blend({(new_name if n == name else n): a for n, a in self.weights.items()})

    def variant(self, label: str = "current blend") -> Variant:
        return Variant(label, tuple(sorted(self.weights.items())))

    @Slot(object)
    def _on_applied(self, result) -> None:
        weights, seconds = result
        self.applied_weights = dict(weights)
        self.applied.emit(dict(weights), seconds)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._resync()
        self.error.emit("Could not apply the blend", message)

    @Slot()
    def _on_cancelled(self) -> None:
        self._resync()

    def _resync(self) -> None:
        """The latest request never reached the model: show what it really holds."""
        if is_current(self._requests, self.sender()) and self.weights != self.applied_weights:
            self.weights = dict(self.applied_weights)
            self.changed.emit(dict(self.applied_weights))
