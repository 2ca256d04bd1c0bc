"""DESIGN.md: the GUI's event loop never stalls > 100 ms while training or generating.

A 10 ms timer ticks in the GUI thread while a tiny job runs on the model worker; the
longest gap between ticks, after the first 100 ms (start-up: first torch call, thread
pool), must stay under 100 ms.
"""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import QTimer

from stance_studio.core.jobs import TrainStep

from stance_studio.qt.compare_column import STANCE
from stance_studio.qt.compare_panel import ComparePanel

STALL_LIMIT_S = 0.100
WARM_UP_S = 0.100


class Ticker:
    """Records when a 10 ms timer fires in the GUI thread."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer(interval=10)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())

    def __enter__(self) -> "Ticker":
        self.started = time.perf_counter()
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()

    def longest_stall(self) -> float:
        ticks = [t for t in self.ticks if t >= self.started + WARM_UP_S]
        assert len(ticks) > 10, "the job was too short to measure"
        return max(b - a for a, b in zip(ticks, ticks[1:]))


@pytest.fixture
def panel(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "loud", scale=0.6, kinds=("q_proj", "v_proj", "o_proj", "down_proj"))
    loaded.refresh_library()
    p = ComparePanel(loaded)
    qtbot.addWidget(p)
    p.show()
    p.prompt.setPlainText("What causes the seasons?")
    return p


def test_no_stall_while_generating(qtbot, panel):
    panel.add_column(STANCE + "loud")
    panel.max_tokens.setValue(150)
    with Ticker() as ticker:
        job = panel.run()
        with qtbot.waitSignal(job.ended, timeout=60000):
            pass
    assert job.state == "finished", job.error
    assert panel.result.columns[0].new_tokens > 20  # it really generated while we measured
    stall = ticker.longest_stall()
    assert stall < STALL_LIMIT_S, f"longest event-loop stall {stall * 1000:.0f} ms"


def test_no_stall_while_training(qtbot, loaded):
    from stance_studio.core.datasets import builtin_stances
    from stance_studio.qt.training_job import make_config, submit_training

    dataset = next(iter(builtin_stances().values()))
    config = make_config({"method": "full", "steps": 6})
    losses = []
    with Ticker() as ticker:
        job = submit_training(loaded, dataset, "responsive", config, "rank:4")
        job.progressed.connect(lambda reports: losses.extend(r for r in reports if isinstance(r.partial, TrainStep)))
        with qtbot.waitSignal(job.ended, timeout=120000):
            pass
    assert len(losses) == 6  # every training step ran while we measured
    stall = ticker.longest_stall()
    assert stall < STALL_LIMIT_S, f"longest event-loop stall {stall * 1000:.0f} ms"
