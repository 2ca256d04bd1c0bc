"""The blend panel: one slider per stance, live application to the model's weights,
reset to the exact base, saved blends, drops from the library."""

from __future__ import annotations

import json
import threading
import time

import torch
from PySide6.QtCore import QMimeData, QPointF, Qt
from PySide6.QtGui import QDropEvent

from stance_studio.qt.blend_panel import BlendPanel
from stance_studio.qt.library_panel import STANCE_MIME

Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


def _q_proj_output(session) -> tuple[torch.Tensor, torch.Tensor]:
    """What the q_proj module computes now on a fixed input, and the input: stances act
    at runtime, so the module's output (not its stored weight) shows the blend."""
    module = dict(session.base.model.named_modules())[Q_PROJ.rsplit(".", 1)[0]]
    x = torch.randn(1, 3, module.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return module(x), x


def _wait_applied(qtbot, session, weights):
    qtbot.waitUntil(lambda: session.blend.applied_weights == weights and not session.runner.busy, timeout=5000)


def test_one_slider_per_stance_and_incompatible_ones_disabled(qtbot, loaded, write_stance):
    from stance_studio.core.tiny import tiny_base

    write_stance(loaded.library, loaded.base, "curious")
    write_stance(loaded.library, tiny_base(seed=7), "other-model")
    loaded.refresh_library()
    panel = BlendPanel(loaded)
    qtbot.addWidget(panel)
    assert set(panel.rows) == {"curious", "other-model"}
    assert panel.rows["curious"].slider.isEnabled()
    assert not panel.rows["other-model"].slider.isEnabled()
    assert "other-model" in panel.rows["other-model"].toolTip()
    assert panel.rows["curious"].slider.minimum() <= -1 and panel.rows["curious"].slider.maximum() >= 2


def test_slider_change_reaches_the_model_weights_and_reset_restores_them(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "curious")
    loaded.refresh_library()
    panel = BlendPanel(loaded)
    qtbot.addWidget(panel)
    param = dict(loaded.base.model.named_parameters())[Q_PROJ]
    w0 = param.detach().clone()
    delta = loaded.catalog.checkpoint("curious").deltas[Q_PROJ].materialize()

    panel.rows["curious"].slider.setValue(0.5)
    _wait_applied(qtbot, loaded, {"curious": 0.5})
    out, x = _q_proj_output(loaded)
    assert torch.allclose(out, torch.nn.functional.linear(x, w0 + 0.5 * delta), atol=1e-5)
    assert torch.equal(param.detach(), w0)  # applied at runtime: the stored weight never changes
    assert "curious = +0.50" in panel.status.text()

    panel.reset()
    _wait_applied(qtbot, loaded, {})
    out, x = _q_proj_output(loaded)
    assert torch.equal(param.detach(), w0)  # bit for bit
    assert torch.equal(out, torch.nn.functional.linear(x, w0))
    assert panel.rows["curious"].value() == 0.0


def test_a_drag_queues_at_most_one_blend_behind_a_running_job(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "curious")
    loaded.refresh_library()
    panel = BlendPanel(loaded)
    qtbot.addWidget(panel)
    gate = threading.Event()
    generation = loaded.runner.submit(lambda progress, cancel: gate.wait(5), "Generating side by side")
    qtbot.waitUntil(lambda: generation.state == "running", timeout=5000)
    applied = []
    loaded.blend.applied.connect(lambda weights, seconds: applied.append(weights))
    for value in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        panel.rows["curious"].slider.setValue(value)
        panel.flush()  # each step reaches the session as a request
    assert "Will apply after" in panel.status.text()
    assert len([j for j in loaded.runner.active_jobs() if j.key == "blend" and j.state == "pending"]) == 1
    gate.set()
    _wait_applied(qtbot, loaded, {"curious": 0.7})
    assert applied == [{"curious": 0.7}]  # the six stale requests were dropped unapplied
    assert generation.state == "finished"


def test_saved_blend_round_trip(qtbot, loaded, write_stance, monkeypatch):
    write_stance(loaded.library, loaded.base, "curious")
    write_stance(loaded.library, loaded.base, "confident", seed=1)
    loaded.refresh_library()
    panel = BlendPanel(loaded)
    qtbot.addWidget(panel)
    panel.rows["curious"].slider.setValue(0.7)
    panel.rows["confident"].slider.setValue(-0.3)
    panel.flush()
    from PySide6.QtWidgets import QInputDialog

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("mix", True)))
    panel.save_dialog()
    assert [v.spec for v in loaded.saved.all()] == ["confident=-0.3,curious=0.7"]
    assert panel.variants.count() == 1

    panel.reset()
    _wait_applied(qtbot, loaded, {})
    panel.variants.setCurrentRow(0)
    panel.apply_selected_variant()
    _wait_applied(qtbot, loaded, {"curious": 0.7, "confident": -0.3})
    assert panel.rows["curious"].value() == 0.7 and panel.rows["confident"].value() == -0.3


def test_saving_an_empty_blend_explains_why_not(qtbot, loaded, boxes):
    panel = BlendPanel(loaded)
    qtbot.addWidget(panel)
    panel.save_dialog()
    assert boxes.of("information") and "slider" in boxes.of("information")[0][2]
    assert loaded.saved.all() == []


def test_dropping_a_library_stance_turns_it_on(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "curious")
    loaded.refresh_library()
    panel = BlendPanel(loaded)
    qtbot.addWidget(panel)
    data = QMimeData()
    data.setData(STANCE_MIME, json.dumps(["curious"]).encode())
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    panel.dropEvent(event)
    panel.flush()
    _wait_applied(qtbot, loaded, {"curious": 1.0})
    assert panel.rows["curious"].value() == 1.0


def test_a_new_checkpoint_in_the_folder_gets_a_slider(qtbot, loaded, write_stance):
    panel = BlendPanel(loaded)
    qtbot.addWidget(panel)
    assert panel.rows == {} and panel.empty.isVisibleTo(panel)
    write_stance(loaded.library, loaded.base, "fresh")
    qtbot.waitUntil(lambda: "fresh" in panel.rows, timeout=5000)  # the folder watcher noticed
    assert not panel.empty.isVisibleTo(panel)


def test_the_model_follows_a_drag_while_it_goes_on(qtbot, loaded, write_stance):
    """A throttle, not a debounce: a continuous drag applies every ~40 ms, then once at its end."""
    from PySide6.QtCore import QTimer

    write_stance(loaded.library, loaded.base, "curious")
    loaded.refresh_library()
    panel = BlendPanel(loaded)
    qtbot.addWidget(panel)
    requests = []
    loaded.blend.changed.connect(lambda weights: requests.append(dict(weights)))
    values = [round(0.05 * (i + 1), 2) for i in range(30)]
    moves = []

    def move():
        if len(moves) < len(values):
            moves.append(values[len(moves)])
            panel.rows["curious"].slider.setValue(moves[-1])

    drag = QTimer(interval=10)
    drag.timeout.connect(move)
    drag.start()
    qtbot.waitUntil(lambda: len(moves) == len(values), timeout=10000)
    drag.stop()
    during = len(requests)
    _wait_applied(qtbot, loaded, {"curious": values[-1]})
    assert during >= 3, f"only {during} blends were requested during a {len(values)}-step drag"
    assert requests[-1] == {"curious": values[-1]}  # and the end of the drag is applied
    assert panel.rows["curious"].value() == values[-1]


def test_the_status_bar_cancel_stops_the_running_job_not_a_queued_blend(qtbot, loaded, write_stance):
    from stance_studio.qt.job_status import JobStatus

    write_stance(loaded.library, loaded.base, "curious")
    loaded.refresh_library()
    panel = BlendPanel(loaded)
    status = JobStatus(loaded.runner)
    qtbot.addWidget(panel)
    qtbot.addWidget(status)
    param = dict(loaded.base.model.named_parameters())[Q_PROJ]
    w0 = param.detach().clone()

    def long_job(progress, cancel):
        while True:
            cancel.raise_if_set("long job")
            time.sleep(0.005)

    running = loaded.runner.submit(long_job, "Training something")
    qtbot.waitUntil(lambda: running.state == "running", timeout=5000)
    panel.rows["curious"].slider.setValue(1.0)
    panel.flush()
    assert [j.state for j in loaded.runner.active_jobs() if j.key == "blend"] == ["pending"]  # behind the running job
    status.cancel.click()
    _wait_applied(qtbot, loaded, {"curious": 1.0})
    assert running.state == "cancelled"
    assert panel.rows["curious"].value() == 1.0 and loaded.blend.weights == {"curious": 1.0}
    out, x = _q_proj_output(loaded)
    assert not torch.allclose(out, torch.nn.functional.linear(x, w0))  # the model runs what the slider shows


def test_a_blend_cancelled_before_it_ran_puts_the_sliders_back(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "curious")
    loaded.refresh_library()
    panel = BlendPanel(loaded)
    qtbot.addWidget(panel)
    gate = threading.Event()
    busy = loaded.runner.submit(lambda progress, cancel: gate.wait(5), "busy")
    qtbot.waitUntil(lambda: busy.state == "running", timeout=5000)  # else the blend, interactive, goes first
    panel.rows["curious"].slider.setValue(1.0)
    panel.flush()
    blend = next(j for j in loaded.runner.active_jobs() if j.key == "blend")
    blend.cancel()
    gate.set()
    qtbot.waitUntil(lambda: not loaded.runner.busy, timeout=5000)
    assert blend.state == "cancelled"
    assert loaded.blend.applied_weights == {} and loaded.blend.weights == {}
    assert panel.rows["curious"].value() == 0.0  # the sliders show the base the model still is
