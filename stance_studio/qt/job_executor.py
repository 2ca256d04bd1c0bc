"""The worker-thread side of the job runner: a task as the worker sees it (plain
Python, no QObject) and the executor that runs tasks, interactive ones first and
between the steps of a running one (see :mod:`.workers`)."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, Signal, Slot

from stance_studio.core.errors import Cancelled
from stance_studio.core.failures import as_user_error, describe
from stance_studio.core.jobs import CancelFlag, Progress

PROGRESS_INTERVAL = 0.08
JobFunction = Callable[..., Any]


def describe_error(exc: BaseException) -> str:
    """The message shown to the user for ``exc`` (never a traceback); the same words as
    the command line's."""
    return describe(exc)


@dataclass
class Task:
    """What the worker thread sees of a job: plain Python, no QObject."""

    id: int
    fn: JobFunction
    cancellable: bool = True
    interactive: bool = False
    cancel: CancelFlag = field(default_factory=CancelFlag)
    superseded: threading.Event = field(default_factory=threading.Event)
    yields: bool = False  # set once the job has offered to run others between its steps
    _claim: threading.Lock = field(default_factory=threading.Lock)
    _claimed: str = ""

    def claim(self, by: str) -> bool:
        """Whoever claims first decides the task's fate: the worker ("run") or the
        GUI dropping it from the queue ("drop")."""
        with self._claim:
            if self._claimed:
                return False
            self._claimed = by
            return True

class Executor(QObject):
    """Lives in the worker thread; runs tasks delivered by a queued signal."""

    task_started = Signal(int)
    task_progressed = Signal(int, list)
    task_finished = Signal(int, object)
    task_failed = Signal(int, str)
    task_cancelled = Signal(int)
    task_skipped = Signal(int)

    def __init__(self, threads: Optional[int]) -> None:
        super().__init__()
        self._threads = threads
        self._configured = threads is None
        self.running_id = 0  # the task running now (0: none); read from the GUI thread
        self._urgent: deque[Task] = deque()  # interactive tasks not yet run
        self._lock = threading.Lock()

    def push_interactive(self, task: Task) -> None:
        """Called from the GUI thread before the task is delivered: it may then run
        between the steps of the running job, before its own delivery arrives."""
        with self._lock:
            self._urgent.append(task)

    @Slot(object)
    def run(self, task: Task) -> None:
        self.drain()  # interactive work first; an interactive task's own delivery ends here
        if not task.interactive:
            self._run(task)

    def drain(self) -> None:
        """Run every interactive task waiting now, oldest first (worker thread)."""
        while True:
            with self._lock:
                if not self._urgent:
                    return
                task = self._urgent.popleft()
            self._run(task)

    def _between_steps(self, task: Task) -> None:
        task.yields = True
        self.drain()

    def _run(self, task: Task) -> None:
        if not task.claim("run"):
            return  # dropped from the queue by the GUI, which has ended it already
        if task.superseded.is_set():
            self.task_skipped.emit(task.id)
            return
        if task.cancel.is_set():
            self.task_cancelled.emit(task.id)
            return
        if not self._configured:
            import torch

            torch.set_num_threads(self._threads or max(1, os.cpu_count() or 1))
            self._configured = True
        if not task.interactive:
            task.cancel.between_steps_hook = lambda: self._between_steps(task)
        outer, self.running_id = self.running_id, task.id
        self.task_started.emit(task.id)
        buffer: list[Progress] = []
        last = [0.0]

        def progress(report: Progress) -> None:
            buffer.append(report)
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self.task_progressed.emit(task.id, buffer.copy())
                buffer.clear()

        try:
            try:
                result = task.fn(progress=progress, cancel=task.cancel)
            finally:
                self.running_id = outer
                task.cancel.between_steps_hook = None
        except Cancelled:
            self._flush(task, buffer)
            self.task_cancelled.emit(task.id)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the GUI
            self._flush(task, buffer)
            if as_user_error(exc) is None:
                traceback.print_exception(exc, file=sys.stderr)
            self.task_failed.emit(task.id, describe_error(exc))
        else:
            self._flush(task, buffer)
            if task.cancel.is_set() and task.cancellable:
                self.task_cancelled.emit(task.id)
            else:
                self.task_finished.emit(task.id, result)

    def _flush(self, task: Task, buffer: list[Progress]) -> None:
        if buffer:
            self.task_progressed.emit(task.id, buffer.copy())
            buffer.clear()
