"""Interactive work never waits behind training: a generation or a blend asked for
while a long job runs goes ahead of queued jobs and runs between the running job's
steps (where it offers them)."""

from __future__ import annotations

import threading
import time

import pytest

from stance_studio.core.jobs import TrainStep
from stance_studio.qt.workers import JobRunner


@pytest.fixture
def runner(qtbot):
    r = JobRunner(threads=None)
    yield r
    assert r.shutdown(5000)


def _stepping(log, steps=400, delay=0.01):
    """A long job that offers the worker its between-steps points, like training."""

    def job(progress, cancel):
        for step in range(steps):
            cancel.between_steps()
            cancel.raise_if_set("stepping")
            log.append(("step", step))
            time.sleep(delay)
        return "long done"

    return job


def test_an_interactive_job_runs_between_the_steps_of_a_running_job(qtbot, runner):
    log = []
    long = runner.submit(_stepping(log), "long")
    qtbot.waitUntil(lambda: len(log) > 3, timeout=5000)
    quick = runner.submit(lambda progress, cancel: log.append(("quick", threading.get_ident())) or "quick done",
                          "quick", interactive=True)
    with qtbot.waitSignal(quick.finished, timeout=3000):
        pass
    assert long.state == "running" and long.yields  # it did not wait for the long job's end
    assert quick.result == "quick done"
    long.cancel()
    with qtbot.waitSignal(long.ended, timeout=5000):
        pass
    assert long.state == "cancelled"


def test_an_interactive_job_goes_ahead_of_queued_long_jobs(qtbot, runner):
    gate, order = threading.Event(), []
    blocker = runner.submit(lambda progress, cancel: gate.wait(5), "no steps to offer")
    qtbot.waitUntil(lambda: blocker.state == "running", timeout=5000)
    queued = runner.submit(lambda progress, cancel: order.append("queued"), "queued long")
    quick = runner.submit(lambda progress, cancel: order.append("quick"), "quick", interactive=True)
    assert not blocker.yields
    gate.set()
    with qtbot.waitSignal(queued.ended, timeout=5000):
        pass
    assert order == ["quick", "queued"] and quick.state == "finished"


def test_interactive_jobs_keep_their_order_and_keyed_ones_coalesce(qtbot, runner):
    log = []
    long = runner.submit(_stepping(log, steps=50, delay=0.02), "long")
    qtbot.waitUntil(lambda: len(log) > 0, timeout=5000)
    done = []
    jobs = [runner.submit(lambda progress, cancel, i=i: done.append(i), f"blend {i}", key="blend", interactive=True)
            for i in range(5)]
    first = runner.submit(lambda progress, cancel: done.append("gen"), "gen", interactive=True)
    with qtbot.waitSignal(first.ended, timeout=5000):
        pass
    assert done == [4, "gen"]  # the four superseded blends never ran
    assert [j.state for j in jobs] == ["superseded"] * 4 + ["finished"]
    long.cancel()
    with qtbot.waitSignal(long.ended, timeout=5000):
        pass


def test_a_failing_interactive_job_does_not_disturb_the_running_one(qtbot, runner):
    log = []
    long = runner.submit(_stepping(log, steps=20, delay=0.005), "long")
    qtbot.waitUntil(lambda: len(log) > 0, timeout=5000)

    def broken(progress, cancel):
        raise ValueError("boom")

    bad = runner.submit(broken, "bad", interactive=True)
    with qtbot.waitSignal(long.ended, timeout=10000):
        pass
    assert bad.state == "failed" and long.state == "finished" and long.result == "long done"
    assert len([e for e in log if e[0] == "step"]) == 20


def test_a_generation_asked_for_during_training_answers_before_the_training_ends(qtbot, loaded, write_stance):
    """On the tiny model: a side-by-side generation submitted while a many-step
    training runs finishes within seconds, while the training is still running."""
    from stance_studio.core.datasets import builtin_stances
    from stance_studio.qt.compare_column import STANCE
    from stance_studio.qt.compare_panel import ComparePanel
    from stance_studio.qt.training_job import make_config, submit_training

    write_stance(loaded.library, loaded.base, "loud", scale=0.6)
    loaded.refresh_library()
    panel = ComparePanel(loaded)
    qtbot.addWidget(panel)
    panel.max_tokens.setValue(8)
    panel.prompt.setPlainText("What causes the seasons?")
    panel.add_column(STANCE + "loud")
    dataset = next(iter(builtin_stances().values()))
    steps = []
    training = submit_training(loaded, dataset, "slow-one", make_config({"method": "full", "steps": 5000}), "rank:4")
    training.progressed.connect(lambda reports: steps.extend(r.partial.step for r in reports if isinstance(r.partial, TrainStep)))
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=60000)
    blended = loaded.blend.set_blend({"loud": 0.5})
    generation = panel.run()
    assert panel.status.text() == "Generating …"  # not "Waiting for the model"
    started = time.perf_counter()
    with qtbot.waitSignal(generation.ended, timeout=30000):
        pass
    seconds = time.perf_counter() - started
    assert generation.state == "finished", generation.error
    assert blended.state == "finished" and loaded.blend.applied_weights == {"loud": 0.5}
    assert training.state == "running" and steps[-1] < 5000
    assert panel.result.columns[1].kl_to_base > 0.0  # the stance column really ran with the stance
    assert seconds < 10, seconds  # within a few training steps, not after 5000 of them
    training.cancel()
    with qtbot.waitSignal(training.ended, timeout=30000):
        pass
    assert training.state == "cancelled"
