"""Per-job cancel and cancel all: a queued job leaves the queue at once and never
runs, the running one stops at its next check, the jobs list shows each job's state
and the main window's Cancel all (menu, Shift+Esc, status bar) asks before it loses
a running training."""

from __future__ import annotations

import threading
import time

import pytest

from stance_studio.qt.jobs_panel import JobsPanel
from stance_studio.qt.workers import JobRunner


@pytest.fixture
def runner(qtbot):
    r = JobRunner(threads=None)
    yield r
    assert r.shutdown(5000)


def _start(qtbot, runner, title="Training a", between_steps=True):
    """A running endless job, its start seen by the GUI thread. ``between_steps``:
    whether it lets interactive jobs run between its steps."""
    started = threading.Event()
    job = runner.submit(_endless(started, between_steps), title)
    assert started.wait(5)
    qtbot.waitUntil(lambda: job.state == "running", timeout=5000)
    return job


def _endless(started: threading.Event, between_steps: bool = True):
    def job(progress, cancel):
        started.set()
        while True:
            if between_steps:
                cancel.between_steps()
            cancel.raise_if_set("endless job")
            time.sleep(0.005)

    return job


def _logging(log, name):
    return lambda progress, cancel: log.append(name)


def test_a_queued_job_cancelled_leaves_the_queue_at_once_and_never_runs(qtbot, runner):
    log = []
    running = _start(qtbot, runner)
    queued = runner.submit(_logging(log, "b"), "Training b")
    after = runner.submit(_logging(log, "c"), "Training c")
    queued.cancel()
    assert queued.state == "cancelled" and queued not in runner.active_jobs()  # now, not when reached
    assert running.state == "running"
    running.cancel()
    with qtbot.waitSignal(after.ended, timeout=5000):
        pass
    assert log == ["c"] and running.state == "cancelled" and after.state == "finished"


def test_cancel_all_stops_the_running_job_and_empties_the_queue(qtbot, runner):
    log = []
    # no turn between steps: an interactive job would otherwise run (and finish) before cancel_all is called
    running = _start(qtbot, runner, between_steps=False)
    queued = [runner.submit(_logging(log, i), f"job {i}", interactive=i % 2 == 0) for i in range(4)]
    assert runner.cancel_all() == 5
    with qtbot.waitSignal(running.ended, timeout=5000):
        pass
    assert [j.state for j in queued] == ["cancelled"] * 4 and running.state == "cancelled"
    assert log == [] and not runner.busy


def test_the_jobs_list_shows_states_and_each_row_cancels_its_own_job(qtbot, runner):
    log = []
    panel = JobsPanel([runner])
    qtbot.addWidget(panel)
    running = _start(qtbot, runner)
    queued = runner.submit(_logging(log, "b"), "Training b")
    qtbot.waitUntil(lambda: panel.row(running).state.text().startswith("running"), timeout=5000)
    assert [j.title for j in panel.jobs()] == ["Training a", "Training b"]
    assert panel.row(queued).state.text() == "queued" and "2 jobs" in panel.summary.text()
    panel.row(queued).cancel.click()
    assert queued.state == "cancelled" and running.state == "running"
    assert [j.title for j in panel.jobs()] == ["Training a", "Training b"]  # an ended job stays listed
    assert panel.row(queued).state.text() == "cancelled" and not panel.row(queued).cancel.isEnabled()
    panel.row(running).cancel.click()
    with qtbot.waitSignal(running.ended, timeout=5000):
        pass
    assert panel.row(running).state.text() == "cancelled" and log == []
    assert "No job" in panel.summary.text() and not panel.cancel_all.isEnabled()


def test_the_jobs_list_follows_progress(qtbot, runner):
    from stance_studio.core.jobs import Progress

    panel = JobsPanel([runner])
    qtbot.addWidget(panel)
    gate = threading.Event()

    def job(progress, cancel):
        progress(Progress("train", 3, 10, "Step 3/10"))
        gate.wait(5)

    job_ = runner.submit(job, "Training p")
    qtbot.waitUntil(lambda: panel.row(job_).bar.value() == 3, timeout=5000)
    assert panel.row(job_).bar.maximum() == 10
    gate.set()
    with qtbot.waitSignal(job_.ended, timeout=5000):
        pass
    assert panel.row(job_).state.text() == "done"


@pytest.fixture
def window(qtbot, loaded):
    from stance_studio.qt.main_window import MainWindow

    w = MainWindow(loaded)
    qtbot.addWidget(w)
    return w


@pytest.mark.parametrize("answer_yes", [True, False])
def test_cancel_all_from_the_window_asks_before_losing_a_running_training(qtbot, window, loaded, boxes, answer_yes):
    from PySide6.QtWidgets import QMessageBox

    boxes.answer = QMessageBox.StandardButton.Yes if answer_yes else QMessageBox.StandardButton.No
    log = []
    running = _start(qtbot, loaded.runner)
    queued = loaded.runner.submit(_logging(log, "b"), "Experiment b")
    qtbot.waitUntil(lambda: window.job_status.isVisibleTo(window), timeout=5000)
    assert window.job_status.jobs_button.text() == "Jobs (2)"
    window.job_status.jobs_button.click()
    assert window.docks["jobs"].isVisibleTo(window)
    assert window.cancel_all_action.shortcut().toString() == "Shift+Esc"
    window.cancel_all_action.trigger()
    assert [c[1] for c in boxes.of("question")] == ["Cancel all jobs"]
    if answer_yes:
        with qtbot.waitSignal(running.ended, timeout=5000):
            pass
        assert running.state == "cancelled" and queued.state == "cancelled" and log == []
    else:
        assert running.state == "running" and queued.state == "pending"
        running.cancel()
        with qtbot.waitSignal(queued.ended, timeout=5000):
            pass
        assert log == ["b"]


def test_the_status_bar_cancel_all_button_needs_no_question_for_short_jobs(qtbot, window, loaded, boxes):
    gate = threading.Event()
    blocker = loaded.runner.submit(lambda progress, cancel: gate.wait(5), "Applying blend", interactive=True)
    qtbot.waitUntil(lambda: blocker.state == "running", timeout=5000)
    queued = loaded.runner.submit(lambda progress, cancel: None, "Generating side by side", interactive=True)
    window.job_status.cancel_all.click()
    assert queued.state == "cancelled" and boxes.of("question") == []
    gate.set()
    with qtbot.waitSignal(blocker.ended, timeout=5000):
        pass
