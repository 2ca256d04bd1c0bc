"""The session: one model load at a time, remembered under the spec it was asked
for; a training run keeps the model and blender it was submitted with; the built-in
first-run trainings report through slots and feed the live loss curve."""

from __future__ import annotations

import threading

from PySide6.QtCore import Qt

from stance_studio.qt.model_panel import ModelPanel


def test_a_second_load_is_refused_while_one_is_under_way(qtbot, session):
    gate = threading.Event()
    session.runner.submit(lambda progress, cancel: gate.wait(10), "busy")
    messages = []
    session.message.connect(messages.append)
    first = session.host.load_model("tiny:1")
    assert first is not None
    assert session.host.load_model("tiny:2") is None
    assert "Loading tiny:1" in messages[-1]
    with qtbot.waitSignal(session.host.model_changed, timeout=10000):
        gate.set()
    assert session.settings.recent_models()[0] == "tiny:1"
    assert session.host.load_model("tiny:2") is not None  # once it is done, another may load


def test_return_in_the_model_box_starts_no_second_load(qtbot, session):
    panel = ModelPanel(session)
    qtbot.addWidget(panel)
    gate = threading.Event()
    session.runner.submit(lambda progress, cancel: gate.wait(10), "busy")
    assert panel.load("tiny:1") is not None and not panel.load_button.isEnabled()
    panel.spec_box.setEditText("tiny:2")
    qtbot.keyClick(panel.spec_box.lineEdit(), Qt.Key.Key_Return)
    assert [j.title for j in session.runner.active_jobs()] == ["busy", "Loading tiny:1"]
    with qtbot.waitSignal(session.host.model_changed, timeout=10000):
        gate.set()
    assert session.settings.recent_models()[0] == "tiny:1"


def test_training_keeps_the_model_and_blender_it_was_submitted_with(qtbot, loaded, monkeypatch):
    from stance_studio.core import pipeline
    from stance_studio.core.datasets import builtin_stances
    from stance_studio.core.tiny import tiny_base
    from stance_studio.qt.training_job import make_config, submit_training

    seen = []
    monkeypatch.setattr(pipeline, "build_stance", lambda base, *a, blender, **k: seen.append((base, blender)))
    first_base, first_blender = loaded.base, loaded.blend.blender
    gate = threading.Event()
    loaded.runner.submit(lambda progress, cancel: gate.wait(10), "busy")
    job = submit_training(loaded, next(iter(builtin_stances().values())), "x", make_config({"steps": 1}), "all")
    loaded.host.set_base(tiny_base(seed=3))  # another model arrives while the run waits
    with qtbot.waitSignal(job.ended, timeout=10000):
        gate.set()
    assert seen == [(first_base, first_blender)]


def test_builtin_training_failures_and_losses_reach_the_window(qtbot, loaded, monkeypatch):
    from stance_studio.core import pipeline
    from stance_studio.core.errors import TrainingDivergedError
    from stance_studio.core.jobs import Progress
    from stance_studio.qt.first_run import queue_builtin_training

    def train(base, dataset, name, config, progress, **kwargs):
        for step in (1, 2):
            progress(Progress("train", step, 2, info={"loss": 3.0 - step}))
        raise TrainingDivergedError(f"{name} diverged.")

    monkeypatch.setattr(pipeline, "build_stance", train)

    class LossView:
        def __init__(self):
            self.calls = []

        def start_live(self, name):
            self.calls.append(("start", name))

        def add_point(self, step, loss, skipped):
            self.calls.append(("point", step, loss))

        def stop_live(self, text):
            self.calls.append(("stop", text))

    view = LossView()
    errors = []
    loaded.error.connect(lambda title, message: errors.append((title, message)))
    jobs = queue_builtin_training(loaded, loss_view=view)
    assert jobs
    with qtbot.waitSignal(jobs[-1].ended, timeout=20000):
        pass
    name = jobs[0].title.removeprefix("Training ")
    assert errors[0] == (f"Training {name} failed", f"{name} diverged.")
    assert len(errors) == len(jobs)
    assert view.calls[:4] == [("start", name), ("point", 1, 2.0), ("point", 2, 1.0), ("stop", "Training failed.")]


def test_a_shut_down_session_may_be_freed_from_any_thread(qtbot):
    """Python's cycle collector runs in whichever thread allocates, the model worker
    included: freeing a session there must not touch Qt objects that belong to the GUI
    thread (the folder watcher's socket notifier; conftest fails on Qt's warning)."""
    import gc

    from stance_studio.qt.session import Session
    from stance_studio.qt.settings import Settings

    session = Session(Settings())
    session.shutdown()
    cycle = [session]
    cycle.append(cycle)  # only the cycle collector can free it now
    del session, cycle
    collector = threading.Thread(target=gc.collect)
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection in this thread meanwhile
    try:
        collector.start()
        collector.join(10)
    finally:
        if was_enabled:
            gc.enable()


def test_the_model_panel_loads_on_the_chosen_device_and_remembers_it_per_model(qtbot, session):
    import torch

    panel = ModelPanel(session)
    qtbot.addWidget(panel)
    panel.set_spec("tiny:1")
    panel.device_box.setCurrentText("cpu")
    panel.dtype_box.setCurrentText("bfloat16")
    with qtbot.waitSignal(session.host.model_changed, timeout=10000) as changed:
        panel.load_selected()
    assert changed.args[0].dtype == torch.bfloat16 and changed.args[0].device.type == "cpu"
    assert panel.fields["Runs on"].text() == "cpu (bfloat16)"
    panel.set_spec("tiny:2")  # another model shows its own (default) choice
    assert (panel.device_box.currentText(), panel.dtype_box.currentText()) == ("auto", "auto")
    panel.set_spec("tiny:1")
    assert (panel.device_box.currentText(), panel.dtype_box.currentText()) == ("cpu", "bfloat16")
    assert session.settings.placement("tiny:1") == ("cpu", "bfloat16")


def test_the_parts_agree_before_the_panels_hear_of_a_change(qtbot, loaded, write_stance):
    """A stance renamed in the library is renamed in the blend (and applied); one
    deleted leaves it; a new model empties the blend and re-judges compatibility —
    each before the part's own signal reaches a panel."""
    from stance_studio.core.tiny import tiny_base

    write_stance(loaded.library, loaded.base, "curious")
    write_stance(loaded.library, loaded.base, "bold", seed=1)
    loaded.refresh_library()
    job = loaded.blend.set_blend({"curious": 0.5, "bold": 0.25})
    with qtbot.waitSignal(job.ended, timeout=5000):
        pass
    seen = []
    loaded.catalog.changed.connect(lambda: seen.append(dict(loaded.blend.weights)))
    loaded.catalog.rename("curious", "wondering")
    assert seen[-1] == {"wondering": 0.5, "bold": 0.25}
    qtbot.waitUntil(lambda: loaded.blend.applied_weights == {"wondering": 0.5, "bold": 0.25}, timeout=5000)
    loaded.catalog.delete("bold")
    assert seen[-1] == {"wondering": 0.5}
    models = []
    loaded.host.model_changed.connect(lambda base: models.append(
        (dict(loaded.blend.weights), loaded.catalog.compatibility("wondering")[0])))
    loaded.host.set_base(tiny_base(seed=3))  # another model: other weights, same shapes
    assert models == [({}, False)]  # the blend is empty, the stance made on the old model does not fit
    assert loaded.blend.blender is not None and loaded.blend.blender.base is loaded.base
