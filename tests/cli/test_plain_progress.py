"""Long CLI jobs print plain progress lines when stderr is not a terminal."""

import io
import threading
import time

from stance_studio.cli import plain_progress
from stance_studio.cli.common import progress_bar
from stance_studio.cli.plain_progress import PlainLog
from stance_studio.core.jobs import Progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_line_per_stage_and_at_least_every_interval():
    clock, out = FakeClock(), io.StringIO()
    log = PlainLog(out, interval=10, clock=clock)
    log.report("train", Progress("train", 1, 20, "step 1", info={"loss": 2.5}))
    for step in range(2, 6):  # steps every 3 s: only a line once 10 s have passed
        clock.now += 3
        log.report("train", Progress("train", step, 20))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "train: train 1/20 step 1 loss 2.5" in lines[0] and "5/20" in lines[1]
    clock.now += 1
    log.report("train", Progress("measure", 0, 1, "Measuring retention"))  # a new stage prints at once
    assert "measure 0/1 Measuring retention" in out.getvalue().splitlines()[-1]
    log.close()


def test_heartbeat_repeats_the_state_while_one_step_runs_long():
    clock, out = FakeClock(), io.StringIO()
    log = PlainLog(out, interval=10, clock=clock)
    log.report("train", Progress("train", 3, 20))
    log.tick()
    assert len(out.getvalue().splitlines()) == 1  # not due yet
    clock.now += 10
    log.tick()
    clock.now += 10
    log.tick()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all("(still working)" in line for line in lines[1:])
    assert lines[2].startswith("[    20 s]")
    log.close()


def test_heartbeat_thread_prints_in_real_time_and_stops_on_close():
    out = io.StringIO()
    log = PlainLog(out, interval=0.2)
    log.report("compare", Progress("compare", 1, 5))
    time.sleep(1.5)
    log.close()
    count = len(out.getvalue().splitlines())
    assert count >= 3
    time.sleep(0.5)
    assert len(out.getvalue().splitlines()) == count
    assert not any(t.name == "plain-progress" and t.is_alive() for t in threading.enumerate())


def test_progress_bar_writes_plain_lines_when_stderr_is_a_file(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    report = progress_bar("train")
    report(Progress("train", 1, 2, "step 1"))
    report(Progress("train", 2, 2, "step 2"))
    plain_progress.close_plain_progress()
    assert "train: train 1/2 step 1" in err.getvalue() and "2/2 step 2" in err.getvalue()
