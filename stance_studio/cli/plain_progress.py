"""Progress for logs: plain lines on stderr when it is not a terminal.

A log file or a cluster's job output cannot show a redrawn bar, so long jobs print
one line per stage change and at least every ``INTERVAL`` seconds (a heartbeat
thread repeats the latest state when a single step takes longer than that). All
reporters of one command share the clock, so a finished stage (e.g. the model
load) never keeps printing while the next one runs.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Optional, TextIO

from stance_studio.core.jobs import Progress

INTERVAL = 9.0  # seconds between lines at most (the heartbeat polls twice a second, so < 10 s)
POLL = 0.5


class PlainLog:
    """The shared state of one command's plain progress lines."""

    def __init__(self, stream: Optional[TextIO] = None, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.printed_at: Optional[float] = None
        self.latest: Optional[tuple[str, Progress]] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def report(self, desc: str, p: Progress) -> None:
        with self._lock:
            previous = self.latest
            self.latest = (desc, p)
            new_stage = previous is None or previous[0] != desc or previous[1].stage != p.stage
            finished = bool(p.total) and p.done >= p.total
            if new_stage or finished or self._due():
                self._write(desc, p)
        self._ensure_heartbeat()

    def tick(self) -> None:
        """Repeat the latest state if no line was printed for ``interval`` seconds."""
        with self._lock:
            if self.latest is not None and self._due():
                self._write(*self.latest, still=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * POLL)
        self._thread = None

    def _due(self) -> bool:
        return self.printed_at is None or self.clock() - self.printed_at >= self.interval

    def _write(self, desc: str, p: Progress, still: bool = False) -> None:
        stream = self.stream or sys.stderr
        count = f" {p.done}/{p.total}" if p.total else ""
        values = " ".join(f"{k} {v:.4g}" for k, v in p.info.items() if k in ("loss", "grad_norm") and isinstance(v, float))
        text = " ".join(part for part in (p.message, values, "(still working)" if still else "") if part)
        stream.write(f"[{self.clock() - self.started:6.0f} s] {desc}: {p.stage}{count}{' ' + text if text else ''}\n")
        stream.flush()
        self.printed_at = self.clock()

    def _ensure_heartbeat(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._beat, name="plain-progress", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(min(POLL, self.interval / 4)):
            try:
                self.tick()
            except (ValueError, OSError):  # the stream was closed under us: stop quietly
                return


_current: Optional[PlainLog] = None


def plain_reporter(desc: str):
    """A progress callback writing plain lines through this command's shared log."""
    global _current
    if _current is None or _current._stop.is_set():
        _current = PlainLog()
    log = _current
    return lambda p: log.report(desc, p)


def close_plain_progress() -> None:
    """Stop the heartbeat at the end of a command."""
    global _current
    if _current is not None:
        _current.close()
        _current = None
