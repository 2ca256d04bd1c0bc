"""Side by side: columns stream text from the worker, get metrics, stale runs never
paint into a changed column, stop works, results copy and export."""

from __future__ import annotations

import json
import threading

import pytest
from PySide6.QtCore import Qt

from stance_studio.qt.compare_column import BASE, CURRENT_BLEND, STANCE
from stance_studio.qt.compare_panel import ComparePanel


@pytest.fixture
def panel(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "loud", scale=0.6, kinds=("q_proj", "v_proj", "o_proj", "down_proj"))
    loaded.refresh_library()
    p = ComparePanel(loaded)
    qtbot.addWidget(p)
    p.max_tokens.setValue(12)
    p.prompt.setPlainText("What causes the seasons?")
    return p


def _squash(text: str) -> str:
    """Text without whitespace (a text widget turns the random model's \\r into \\n)."""
    return "".join(text.split())


def _run(qtbot, panel):
    job = panel.run()
    assert job is not None
    with qtbot.waitSignal(job.ended, timeout=20000):
        pass
    return job


def test_columns_stream_and_get_metrics(qtbot, panel):
    panel.add_column(STANCE + "loud")
    streamed = []
    job = panel.run()
    job.progressed.connect(lambda reports: streamed.extend(r for r in reports if r.stage == "token"))
    with qtbot.waitSignal(job.finished, timeout=20000):
        pass
    base_col, loud_col = panel.columns
    assert streamed, "tokens were streamed while generating"
    base_result, loud_result = panel.result.columns
    assert base_result.text and _squash(base_col.text.toPlainText()) == _squash(base_result.text)
    assert base_result.kl_to_base == 0.0 and base_result.identical_to_base
    assert loud_result.kl_to_base > 0.0
    assert "KL to base" in loud_col.metrics.text() and "marker score" in loud_col.metrics.text()
    assert panel.copy_button.isEnabled() and panel.export_button.isEnabled()


def test_the_comparison_leaves_the_blend_in_force(qtbot, panel, loaded):
    import torch

    loaded.blend.set_blend({"loud": 0.5})
    qtbot.waitUntil(lambda: loaded.blend.applied_weights == {"loud": 0.5}, timeout=5000)
    before = {n: p.detach().clone() for n, p in loaded.base.model.named_parameters()}
    panel.add_column(STANCE + "loud")
    _run(qtbot, panel)
    after = dict(loaded.base.model.named_parameters())
    assert all(torch.equal(before[n], after[n].detach()) for n in before)


def _busy(qtbot, loaded, gate):
    """A long job running on the model (a generation, interactive, would otherwise go first)."""
    job = loaded.runner.submit(lambda progress, cancel: gate.wait(10), "busy")
    qtbot.waitUntil(lambda: job.state == "running", timeout=5000)
    return job


def test_a_stale_generation_never_paints_into_a_changed_column(qtbot, panel, loaded):
    blend_col = panel.add_column(CURRENT_BLEND)
    gate = threading.Event()
    blocker = _busy(qtbot, loaded, gate)
    job = panel.run()  # queued behind the blocker, for the blend as it is now (base)
    loaded.blend.set_blend({"loud": 1.0})  # the user moves a slider before it runs
    assert "blend changed" in blend_col.metrics.text()
    gate.set()
    with qtbot.waitSignal(job.ended, timeout=20000):
        pass
    assert blocker.state == "finished"
    assert panel.columns[0].text.toPlainText()  # the base column got its text
    assert blend_col.text.toPlainText() == ""  # the old blend's text was dropped
    assert "blend changed" in blend_col.metrics.text()


def test_changing_a_column_variant_drops_its_running_text(qtbot, panel, loaded):
    column = panel.add_column(BASE)
    gate = threading.Event()
    _busy(qtbot, loaded, gate)
    job = panel.run()
    column.choice.setCurrentIndex(column.choice.findData(STANCE + "loud"))
    gate.set()
    with qtbot.waitSignal(job.ended, timeout=20000):
        pass
    assert column.text.toPlainText() == "" and "Variant changed" in column.metrics.text()


def test_stop_cancels_a_queued_generation(qtbot, panel, loaded):
    gate = threading.Event()
    _busy(qtbot, loaded, gate)
    job = panel.run()
    with qtbot.waitSignal(job.ended, timeout=1000):
        panel.stop()  # a queued job leaves the queue at once
    assert job.state == "cancelled" and panel.status.text() == "Stopped."
    assert not panel.stop_button.isEnabled()
    gate.set()


def test_ctrl_enter_runs(qtbot, panel):
    panel.show()
    panel.prompt.setFocus()
    qtbot.waitUntil(panel.prompt.hasFocus, timeout=2000)
    with qtbot.waitSignal(panel.session.runner.job_started, timeout=5000):
        qtbot.keyClick(panel.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


def test_export_markdown_and_json(qtbot, panel, tmp_path):
    panel.add_column(STANCE + "loud")
    _run(qtbot, panel)
    md, js = tmp_path / "c.md", tmp_path / "c.json"
    panel.export(str(md), as_json=False)
    panel.export(str(js), as_json=True)
    text = md.read_text()
    assert "What causes the seasons?" in text and "| loud |" in text
    data = json.loads(js.read_text())
    assert [c["spec"] for c in data["columns"]] == ["base", "loud=1"]
    assert set(data["columns"][1]) >= {"text", "stance_score", "kl_to_base", "identical_to_base"}


def test_bad_input_explains_itself(qtbot, session, boxes):
    p = ComparePanel(session)
    qtbot.addWidget(p)
    assert p.run() is None and "Load a base model" in boxes.of("information")[0][2]


def test_a_column_for_a_missing_stance_is_refused(qtbot, panel, loaded, boxes):
    panel.add_column(STANCE + "loud")
    loaded.catalog.delete("loud")
    assert panel.run() is None
    assert "missing" in boxes.of("warning")[0][2]


def test_columns_are_remembered(qtbot, panel, loaded):
    panel.add_column(STANCE + "loud")
    again = ComparePanel(loaded)
    qtbot.addWidget(again)
    assert [c.spec for c in again.columns] == [BASE, STANCE + "loud"]


def test_stop_cancels_a_running_generation(qtbot, panel, loaded):
    # as long as the tiny model's context allows (longer prompts are refused up front)
    longest = loaded.base.model.config.max_position_embeddings - 64
    panel.max_tokens.setValue(longest)
    job = panel.run()
    with qtbot.waitSignal(job.progressed, timeout=20000,
                          check_params_cb=lambda reports: any(r.stage == "token" for r in reports)):
        pass
    assert job.state == "running"
    with qtbot.waitSignal(job.ended, timeout=20000):
        panel.stop()
    assert job.state == "cancelled" and panel.status.text() == "Stopped."
    assert "Stopped." in panel.columns[0].metrics.text()
    assert len(panel.columns[0].text.toPlainText().split()) < longest
    assert not panel.stop_button.isEnabled() and panel.result is None


def test_ctrl_enter_runs_in_the_main_window(qtbot, panel, loaded):
    """One binding of the key: the window's Generate menu and the prompt box share it."""
    from stance_studio.qt.main_window import MainWindow

    window = MainWindow(loaded)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    prompt = window.compare.prompt
    prompt.setPlainText("Why is the sky blue?")
    prompt.setFocus()
    qtbot.waitUntil(prompt.hasFocus, timeout=2000)
    for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
        with qtbot.waitSignal(loaded.runner.job_started, timeout=5000) as started:
            qtbot.keyClick(prompt, key, Qt.KeyboardModifier.ControlModifier)
        assert started.args[0].title == "Generating side by side"
        with qtbot.waitSignal(started.args[0].ended, timeout=20000):
            pass
    assert prompt.toPlainText() == "Why is the sky blue?"  # the key ran, it typed no newline


def test_removing_a_column_while_it_generates(qtbot, panel, loaded):
    loud = panel.add_column(STANCE + "loud")
    last = panel.add_column(CURRENT_BLEND)
    gate = threading.Event()
    _busy(qtbot, loaded, gate)
    job = panel.run()
    panel.remove_column(loud)
    gate.set()
    with qtbot.waitSignal(job.ended, timeout=20000):
        pass
    assert job.state == "finished"
    assert [c.spec for c in panel.columns] == [BASE, CURRENT_BLEND]
    assert "KL to base" in last.metrics.text() and last.text.toPlainText()  # the column after it got its result
    assert [c.label for c in panel.result.columns] == ["Base model", "Current blend"]
    assert panel.copy_button.isEnabled() and panel.export_button.isEnabled()


def test_export_leaves_out_a_column_whose_run_was_dropped(qtbot, panel, loaded, tmp_path):
    panel.add_column(CURRENT_BLEND)
    gate = threading.Event()
    _busy(qtbot, loaded, gate)
    job = panel.run()  # for the blend as it is now (base)
    loaded.blend.set_blend({"loud": 1.0})  # then the blend changes before it runs
    gate.set()
    with qtbot.waitSignal(job.ended, timeout=20000):
        pass
    panel.export(str(tmp_path / "c.json"), as_json=True)
    data = json.loads((tmp_path / "c.json").read_text())
    assert [c["spec"] for c in data["columns"]] == ["base"]  # not the old blend's text under "Current blend"


def test_export_leaves_out_a_column_changed_after_the_run(qtbot, panel, loaded, tmp_path):
    blend_col = panel.add_column(CURRENT_BLEND)
    _run(qtbot, panel)
    assert len(panel.result.columns) == 2
    loaded.blend.set_blend({"loud": 1.0})
    assert "blend changed" in blend_col.metrics.text()
    panel.export(str(tmp_path / "c.md"), as_json=False)
    text = (tmp_path / "c.md").read_text()
    assert "| Base model |" in text and "Current blend" not in text
    panel.columns[0].choice.setCurrentIndex(panel.columns[0].choice.findData(STANCE + "loud"))
    assert panel.result is None and not panel.copy_button.isEnabled() and not panel.export_button.isEnabled()


def test_a_stance_with_its_dataset_reads_every_column(qtbot, loaded, write_stance):
    from stance_studio.core.datasets import builtin_stances, load_dataset

    path = builtin_stances()["engaged-difficulty"]
    data = load_dataset(path)
    write_stance(loaded.library, loaded.base, "engaged", scale=0.6,
                 stance={"dataset": str(path), "dataset_name": data.name, "dataset_hash": data.sha256})
    write_stance(loaded.library, loaded.base, "loose", seed=3, scale=0.6)  # records no dataset
    loaded.refresh_library()
    panel = ComparePanel(loaded)
    qtbot.addWidget(panel)
    panel.prompt.setPlainText(data.examples[0].prompt)
    panel.add_column(STANCE + "engaged")
    panel.add_column(STANCE + "loose")
    _run(qtbot, panel)
    base_col, engaged_col, loose_col = panel.columns
    for column, result in zip(panel.columns, panel.result.columns):
        assert f"reads as: engaged {result.stance_probability['engaged']:.2f}" in column.metrics.text()
    assert "loose records no stance dataset" in panel.status.text()
