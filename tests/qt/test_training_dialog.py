"""The training dialog runs a real (tiny) training on the worker, the library updates,
cancel writes nothing, bad input is refused with the reason, and the first launch
offers the built-in stances."""

from __future__ import annotations

import json

import pytest

from stance_studio.core.errors import TrainingDivergedError
from stance_studio.qt.dataset_editor import DatasetEditor
from stance_studio.qt.training_dialog import TrainingDialog


@pytest.fixture
def dialog(qtbot, loaded):
    d = TrainingDialog(loaded)
    qtbot.addWidget(d)
    d.steps.setValue(3)
    d.policy.setText("all")
    return d


def _leftovers(library):
    return [p.name for p in library.folder.iterdir() if not p.name.endswith(".stance.safetensors")]


def test_a_real_tiny_training_lands_in_the_library(qtbot, dialog, loaded):
    from stance_studio.qt.blend_panel import BlendPanel

    blend = BlendPanel(loaded)
    qtbot.addWidget(blend)
    assert dialog.dataset is not None and dialog.picker.preview.rowCount() == len(dialog.dataset.examples) > 0
    dialog.name_edit.setText("tiny-curious")
    trained = []
    dialog.trained.connect(trained.append)
    job = dialog.start()
    assert job is not None
    with qtbot.waitSignal(job.ended, timeout=600000):  # a guard against hanging, not a speed test
        pass
    assert job.state == "finished", job.error
    assert trained == ["tiny-curious"]
    assert loaded.entry("tiny-curious") is not None
    assert loaded.catalog.compatibility("tiny-curious")[0]
    assert len(dialog.loss_plot.steps) + len(dialog.loss_plot._skipped) == 3
    assert "Saved tiny-curious" in dialog.stage.text()
    assert "tiny-curious" in blend.rows and blend.rows["tiny-curious"].slider.isEnabled()
    assert _leftovers(loaded.library) == []


def test_cancel_stops_training_and_writes_nothing(qtbot, dialog, loaded):
    dialog.steps.setValue(100000)
    dialog.name_edit.setText("never")
    job = dialog.start()
    with qtbot.waitSignal(job.progressed, timeout=60000):
        pass
    dialog.cancel()
    with qtbot.waitSignal(job.ended, timeout=60000):
        pass
    assert job.state == "cancelled"
    assert loaded.entry("never") is None and list(loaded.library.folder.iterdir()) == []
    assert "nothing was written" in dialog.stage.text()
    assert dialog.train_button.isEnabled()


def test_a_malformed_dataset_file_is_explained_when_train_is_pressed(qtbot, dialog, loaded, tmp_path, monkeypatch, boxes):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QFileDialog

    from stance_studio.qt.dataset_picker import FROM_FILE

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "response": "hello"}\n{"prompt": "broken"\n')
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(bad), "")))
    picker = dialog.picker
    picker.box.activated.emit(picker.box.findData(FROM_FILE))  # the user picks the file
    assert dialog.dataset is None and picker.box.currentText() == "File: bad.jsonl"
    assert "bad.jsonl" in picker.note.text() and "line 2" in picker.note.text()  # the inline reason stays
    assert "bad.jsonl" in dialog.form_problem.text()
    assert dialog.train_button.isEnabled()  # so that pressing it explains
    qtbot.mouseClick(dialog.train_button, Qt.MouseButton.LeftButton)
    assert len(boxes.of("warning")) == 1
    title, text = boxes.of("warning")[0][1:]
    assert title == "Cannot train on this dataset"
    assert str(bad) in text and "line 2" in text and "not valid JSON" in text
    assert dialog.job is None and not loaded.runner.busy


def test_an_editor_dataset_the_model_cannot_take_is_explained(qtbot, dialog, loaded, tmp_path, monkeypatch, boxes):
    from PySide6.QtWidgets import QDialog

    loaded.base.tokenizer.model_max_length = 32  # a short context, so a long example does not fit
    target = tmp_path / "long.jsonl"

    def write_and_save(editor):
        editor.add_row("Tell me everything about clouds.", "Perhaps " * 200)
        editor.save(str(target))
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(DatasetEditor, "exec", write_and_save)
    dialog.picker.new_dataset()
    assert target.is_file() and dialog.dataset is None
    assert dialog.start() is None
    text = boxes.of("warning")[0][2]
    assert "long.jsonl" in text and "line 1" in text and "context" in text
    assert "long.jsonl" in dialog.picker.note.text()


def test_choosing_a_good_dataset_again_clears_the_problem(qtbot, dialog, tmp_path):
    bad, good = tmp_path / "bad.jsonl", tmp_path / "good.jsonl"
    bad.write_text("not json\n")
    good.write_text('{"prompt": "Why is the sky blue?", "response": "I think it is scattering, perhaps."}\n')
    assert not dialog.picker.load(bad)
    assert dialog.picker.load(good)
    assert dialog.dataset is not None and dialog.picker.preview.rowCount() == 1
    assert dialog.name_edit.text() == "good" and dialog.form_problem.text().strip() == ""
    assert dialog.picker.note.property("role") == "muted"


def test_a_bad_policy_or_learning_rate_disables_training(qtbot, dialog):
    dialog.policy.setText("top:banana")
    assert not dialog.train_button.isEnabled() and dialog.form_problem.text().strip()
    dialog.policy.setText("all")
    dialog.lr.setText("fast")
    assert not dialog.train_button.isEnabled() and "not a number" in dialog.form_problem.text()
    dialog.lr.setText("1e-4")
    assert dialog.train_button.isEnabled()


def test_the_form_starts_from_the_core_defaults_for_each_method(qtbot, loaded):
    """The dialog, the first-run offer and the command line train with the same defaults."""
    from stance_studio.core.training import DEFAULT_LR, DEFAULT_MODULES, TrainConfig
    from stance_studio.qt.training_job import make_config

    d = TrainingDialog(loaded)
    qtbot.addWidget(d)
    for method in ("full", "selective", "lora"):
        d.method_box.setCurrentIndex(d.method_box.findData(method))
        d.modules_edit.setEditText("")
        d._on_method()
        config = make_config(d.values())
        expected = TrainConfig(method=method, modules=list(DEFAULT_MODULES[method]))
        assert config.effective_lr == DEFAULT_LR[method]
        assert (config.steps, config.batch_size, config.grad_clip, config.lora_alpha, config.holdout) == (
            expected.steps, expected.batch_size, expected.grad_clip, expected.lora_alpha, expected.holdout)
        assert config.effective_modules == expected.effective_modules


def test_a_taken_name_is_refused(qtbot, dialog, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "taken")
    loaded.refresh_library()
    dialog.name_edit.setText("taken")
    assert "already exists" in dialog.form_problem.text()


def test_a_diverged_run_shows_a_dialog_with_the_reason(qtbot, dialog, monkeypatch, boxes):
    from stance_studio.core import pipeline

    def diverge(*args, **kwargs):
        raise TrainingDivergedError("Loss was NaN for 5 consecutive steps; lower the learning rate.")

    monkeypatch.setattr(pipeline, "build_stance", diverge)
    job = dialog.start()
    with qtbot.waitSignal(job.ended, timeout=30000):
        pass
    assert boxes.of("critical") == [("critical", "Training failed", "Loss was NaN for 5 consecutive steps; lower the learning rate.")]


def test_the_dataset_editor_writes_a_dataset_the_core_reads(qtbot, tmp_path, boxes):
    from stance_studio.core.datasets import load_dataset

    editor = DatasetEditor(rows=[("What is fog?", "I think it might be a cloud near the ground."),
                                 ("Why is ice slippery?", "I'm not sure; perhaps a thin film of water.")])
    qtbot.addWidget(editor)
    editor.save(str(tmp_path / "mine.jsonl"))
    assert editor.saved_path == tmp_path / "mine.jsonl"
    lines = [json.loads(line) for line in editor.saved_path.read_text().splitlines()]
    assert lines[0] == {"prompt": "What is fog?", "response": "I think it might be a cloud near the ground."}
    assert [e.prompt for e in load_dataset(editor.saved_path).examples] == ["What is fog?", "Why is ice slippery?"]


def test_the_dataset_editor_refuses_half_rows(qtbot, tmp_path, boxes):
    editor = DatasetEditor(rows=[("A prompt without a response", "")])
    qtbot.addWidget(editor)
    editor.save(str(tmp_path / "half.jsonl"))
    assert editor.saved_path is None and not (tmp_path / "half.jsonl").exists()
    assert "needs both" in boxes.of("warning")[0][2]


def test_first_launch_offers_the_builtin_stances(qtbot, session, tiny, boxes):
    from stance_studio.core.datasets import builtin_stances

    from stance_studio.qt.main_window import MainWindow

    window = MainWindow(session)
    qtbot.addWidget(window)
    session.host.set_base(tiny)  # an empty library and a model: the offer appears, once the load has ended
    qtbot.waitUntil(lambda: bool(boxes.of("question")), timeout=5000)
    question = boxes.of("question")
    assert len(question) == 1 and all(name in question[0][2] for name in builtin_stances())
    queued = [j for j in session.runner.active_jobs() if j.title.startswith("Training")]
    assert len(queued) == len(builtin_stances())
    session.runner.cancel_all()
    qtbot.waitUntil(lambda: not session.runner.busy, timeout=60000)
    session.host.set_base(tiny)  # offered once only
    qtbot.wait(50)
    assert len(boxes.of("question")) == 1


def test_the_steer_method_builds_a_steering_stance_on_the_blend_sliders(qtbot, dialog, loaded, monkeypatch):
    import stance_studio.core.datasets as datasets
    from stance_studio.qt.blend_panel import BlendPanel

    monkeypatch.setattr(datasets, "load_probes", lambda *a, **k: ["why is the sky blue"])
    blend = BlendPanel(loaded)
    qtbot.addWidget(blend)
    dialog.method_box.setCurrentIndex(dialog.method_box.findData("steer"))
    assert not dialog.steps.isEnabled() and not dialog.policy.isEnabled() and not dialog.modules_edit.isEnabled()
    dialog.name_edit.setText("tiny-steer")
    assert dialog.train_button.isEnabled()
    job = dialog.start()
    assert job is not None
    with qtbot.waitSignal(job.ended, timeout=600000):  # generation and measurement, longer than 3 training steps
        pass
    assert job.state == "finished", job.error
    entry = loaded.entry("tiny-steer")
    assert entry is not None and entry.metadata["kind"] == "activation" and entry.method == "steer"
    assert "steering vectors" in dialog.stage.text()
    assert "tiny-steer" in blend.rows and blend.rows["tiny-steer"].slider.isEnabled()
    applied = blend.rows["tiny-steer"]
    assert applied is not None
    with qtbot.waitSignal(loaded.blend.applied, timeout=30000):
        loaded.blend.set_weight("tiny-steer", 1.0)
    assert not loaded.blend.blender.is_base  # the steering hooks are in force


def test_the_held_out_share_reaches_the_training_config(qtbot, loaded):
    from stance_studio.qt.training_job import make_config

    d = TrainingDialog(loaded)
    qtbot.addWidget(d)
    d.holdout.setValue(0.4)
    assert make_config(d.values()).holdout == pytest.approx(0.4)
    d.holdout.setValue(0.0)
    assert make_config(d.values()).holdout == 0.0 and d.holdout.text() == "none"


def test_every_module_preset_names_modules_of_the_loaded_model(loaded):
    from stance_studio.core.modules import select_linear_modules
    from stance_studio.qt.training_dialog import MODULE_PRESETS

    for preset in MODULE_PRESETS:
        assert select_linear_modules(loaded.base.model, preset.split(","), loaded.base.num_layers), preset
