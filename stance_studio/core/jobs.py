"""Progress reports and cancel flags shared by every long job.

A long job is a plain function taking ``progress`` (a callable receiving
:class:`Progress`) and ``cancel`` (a :class:`CancelFlag`). It calls
``cancel.raise_if_set()`` every step; the Qt worker and the CLI only wrap it.
A loop that holds no state of the loaded model between two of its steps (training
works on a copy) also calls ``cancel.between_steps()`` there: whoever runs the job
may install a hook that does short work on the loaded model at that point (the GUI
answers a generation or a blend asked for during a training run).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from stance_studio.core.errors import Cancelled


@dataclass(frozen=True)
class ColumnText:
    """Partial result of the side-by-side job: a column's text so far."""

    column: int
    text: str


@dataclass(frozen=True)
class TrainStep:
    """Partial result of training: one optimiser step (``loss`` and ``grad_norm`` are
    None when the step was skipped for a non-finite loss or gradient)."""

    step: int
    loss: Optional[float]
    grad_norm: Optional[float]
    seconds: float  # since the first step started
    nonfinite_steps: int  # skipped so far

    @property
    def skipped(self) -> bool:
        return self.loss is None


@dataclass(frozen=True)
class MeasuredRow:
    """Partial result of an experiment or a sweep: one row of its table, measured."""

    row: dict[str, Any]


@dataclass
class Progress:
    """One progress report: ``done`` of ``total`` units of ``stage``.

    ``partial`` carries a typed partial result (:class:`ColumnText`,
    :class:`TrainStep`, :class:`MeasuredRow`) for live views, which read nothing else;
    ``info`` carries name → value pairs printed on a text progress line (the CLI).
    """

    stage: str
    done: int = 0
    total: int = 0
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    partial: Any = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A progress callback that ignores every report."""


class CancelFlag:
    """A thread-safe flag a GUI or a signal handler sets and a job polls."""

    def __init__(self) -> None:
        self._event = threading.Event()
        # Set by whoever runs the job; called (in the job's thread) by between_steps().
        self.between_steps_hook: Optional[Callable[[], None]] = None

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def raise_if_set(self, what: str = "job") -> None:
        if self._event.is_set():
            raise Cancelled(f"The {what} was cancelled.")

    def between_steps(self) -> None:
        """Run the installed hook, if any: the job is at a point where other short work
        may use the loaded model (see the module docstring)."""
        hook = self.between_steps_hook
        if hook is not None:
            hook()


class Counter:
    """The one rule for dropping stale results: a generation counter.

    Whoever shows results bumps it when what they show changes (another variant,
    another model, a new run); a job takes a stamp when it starts; its results are
    shown only while the stamp is still current.
    """

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> int:
        """Everything stamped before now is stale; returns the new stamp."""
        self.value += 1
        return self.value

    def current(self, stamp: object) -> bool:
        return stamp == self.value


def ensure_flag(cancel: Optional[CancelFlag]) -> CancelFlag:
    """Return ``cancel`` or a fresh flag nobody will set."""
    return cancel if cancel is not None else CancelFlag()
