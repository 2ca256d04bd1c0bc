"""The model worker: jobs run in order off the GUI thread, report progress in
batches, cancel, turn every exception into a message, and coalesce keyed jobs."""

from __future__ import annotations

import threading
import time

import pytest

from stance_studio.core.errors import DatasetError
from stance_studio.core.jobs import Progress
from stance_studio.qt.workers import JobRunner, describe_error


@pytest.fixture
def runner(qtbot):
    r = JobRunner(threads=None)
    yield r
    assert r.shutdown(5000)


def test_job_runs_off_the_gui_thread_and_returns_its_result(qtbot, runner):
    gui = threading.get_ident()
    job = runner.submit(lambda progress, cancel: threading.get_ident(), "thread id")
    with qtbot.waitSignal(job.finished, timeout=5000) as blocker:
        pass
    assert blocker.args[0] != gui
    assert job.state == "finished"


def test_progress_is_batched_but_no_report_is_lost(qtbot, runner):
    def job(progress, cancel):
        for i in range(500):
            progress(Progress("train", i + 1, 500, info={"loss": float(i)}))
        return "done"

    seen, batches = [], []
    job_ = runner.submit(job, "many reports")
    job_.progressed.connect(lambda reports: (batches.append(len(reports)), seen.extend(reports)))
    with qtbot.waitSignal(job_.ended, timeout=5000):
        pass
    assert [r.done for r in seen] == list(range(1, 501))
    assert len(batches) < 100  # batched: far fewer signals than reports


def test_jobs_run_one_at_a_time_in_submission_order(qtbot, runner):
    log, lock = [], threading.Lock()

    def make(i):
        def job(progress, cancel):
            with lock:
                log.append(("start", i))
            time.sleep(0.01)
            with lock:
                log.append(("end", i))
        return job

    jobs = [runner.submit(make(i), f"job {i}") for i in range(5)]
    with qtbot.waitSignal(jobs[-1].ended, timeout=5000):
        pass
    assert log == [(k, i) for i in range(5) for k in ("start", "end")]


def test_cancel_stops_a_running_job(qtbot, runner):
    started = threading.Event()

    def job(progress, cancel):
        started.set()
        while True:
            cancel.raise_if_set("test job")
            time.sleep(0.005)

    job_ = runner.submit(job, "endless")
    assert started.wait(5)
    with qtbot.waitSignal(job_.cancelled, timeout=5000):
        job_.cancel()
    assert job_.state == "cancelled"


@pytest.mark.parametrize(
    "exc, expected",
    [
        (DatasetError("data.jsonl line 3: missing 'response'"), "data.jsonl line 3: missing 'response'"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "ran out of memory"),
        (MemoryError(), "ran out of memory"),
    ],
)
def test_errors_become_messages(qtbot, runner, exc, expected):
    def job(progress, cancel):
        raise exc

    job_ = runner.submit(job, "failing")
    with qtbot.waitSignal(job_.failed, timeout=5000) as blocker:
        pass
    assert expected in blocker.args[0]
    assert "Traceback" not in blocker.args[0]


def test_a_bug_is_reported_not_swallowed(qtbot, runner, capsys):
    job_ = runner.submit(lambda progress, cancel: {}["missing"], "buggy")
    with qtbot.waitSignal(job_.failed, timeout=5000) as blocker:
        pass
    assert "bug" in blocker.args[0] and "KeyError" in blocker.args[0]
    assert "Traceback" in capsys.readouterr().err  # the details go to the console only


def test_a_newer_keyed_job_replaces_a_pending_one(qtbot, runner):
    gate = threading.Event()
    ran = []
    blocker_job = runner.submit(lambda progress, cancel: gate.wait(5), "blocker")
    first = runner.submit(lambda progress, cancel: ran.append(1), "blend 1", key="blend")
    second = runner.submit(lambda progress, cancel: ran.append(2), "blend 2", key="blend")
    gate.set()
    with qtbot.waitSignal(second.ended, timeout=5000):
        pass
    assert ran == [2]
    assert first.state == "superseded" and blocker_job.state == "finished"


def test_describe_error_keeps_user_messages():
    assert describe_error(DatasetError("bad file")) == "bad file"


def test_shutdown_waits_for_a_job_that_ignores_cancel_and_never_abandons_the_thread(qtbot):
    """A first GGUF load cannot be cancelled: quitting waits it out instead of destroying
    a running QThread (which aborts the process)."""
    runner = JobRunner(threads=None)
    started, stopped = threading.Event(), threading.Event()

    def stubborn(progress, cancel):
        started.set()
        time.sleep(0.8)  # a stage with no cancel check
        stopped.set()

    runner.submit(stubborn, "Loading model.gguf")
    queued = runner.submit(lambda progress, cancel: None, "queued")
    assert started.wait(5)
    slow = []
    assert runner.shutdown(timeout_ms=100, on_slow=slow.append) is False
    assert stopped.is_set() and runner._thread.isFinished()
    assert [job.title for job in slow] == ["Loading model.gguf"]
    assert queued._task.cancel.is_set()


def test_a_job_that_cannot_be_cancelled_reports_what_it_did(qtbot, runner):
    started, go_on = threading.Event(), threading.Event()

    def apply(progress, cancel):
        started.set()
        go_on.wait(5)
        return "applied"

    job = runner.submit(apply, "Applying blend", cancellable=False)
    assert started.wait(5)
    job.cancel()  # too late: it is running
    go_on.set()
    with qtbot.waitSignal(job.ended, timeout=5000):
        pass
    assert job.state == "finished" and job.result == "applied"


def test_a_job_that_cannot_be_cancelled_still_can_be_before_it_starts(qtbot, runner):
    gate, ran = threading.Event(), []
    busy = runner.submit(lambda progress, cancel: gate.wait(5), "busy")
    job = runner.submit(lambda progress, cancel: ran.append(1), "Applying blend", cancellable=False)
    with qtbot.waitSignal(job.ended, timeout=1000):
        job.cancel()  # a queued job ends at once: it leaves the queue
    assert job.state == "cancelled"
    gate.set()
    with qtbot.waitSignal(busy.ended, timeout=5000):
        pass
    qtbot.wait(50)
    assert ran == [] and job.state == "cancelled"


def test_report_to_connects_the_receivers_handlers(qtbot):
    from PySide6.QtCore import QObject, Slot

    class Receiver(QObject):
        def __init__(self):
            super().__init__()
            self.calls = []

        @Slot(object)
        def _on_finished(self, result):
            self.calls.append(("finished", result))

        @Slot()
        def _on_ended(self):
            self.calls.append(("ended",))

    runner = JobRunner(threads=None)
    try:
        receiver = Receiver()
        job = runner.submit(lambda progress, cancel: 42, "answer")
        job.report_to(receiver)  # no _on_failed etc.: those signals stay unconnected
        with qtbot.waitSignal(job.ended, timeout=5000):
            pass
        assert receiver.calls == [("finished", 42), ("ended",)]
    finally:
        runner.shutdown()
