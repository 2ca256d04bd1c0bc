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
    assert "KL to base" in loud_col.metrics.text() and "stance score" in loud_col.metrics.text()
    assert panel.copy_button.isEnabled() and panel.export_button.isEnabled()


def test_the_comparison_leaves_the_blend_in_force(qtbot, panel, loaded):
    import torch

    loaded.set_blend({"loud": 0.5})
    qtbot.waitUntil(lambda: loaded.applied_weights == {"loud": 0.5}, timeout=5000)
    before = {n: p.detach().clone() for n, p in loaded.base.model.named_parameters()}
    panel.add_column(STANCE + "loud")
    _run(qtbot, panel)
    after = dict(loaded.base.model.named_parameters())
    assert all(torch.equal(before[n], after[n].detach()) for n in before)


def test_a_stale_generation_never_paints_into_a_changed_column(qtbot, panel, loaded):
    blend_col = panel.add_column(CURRENT_BLEND)
    gate = threading.Event()
    blocker = loaded.runner.submit(lambda progress, cancel: gate.wait(10), "busy")
    job = panel.run()  # queued behind the blocker, for the blend as it is now (base)
    loaded.set_blend({"loud": 1.0})  # the user moves a slider before it runs
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
    loaded.runner.submit(lambda progress, cancel: gate.wait(10), "busy")
    job = panel.run()
    column.choice.setCurrentIndex(column.choice.findData(STANCE + "loud"))
    gate.set()
    with qtbot.waitSignal(job.ended, timeout=20000):
        pass
    assert column.text.toPlainText() == "" and "Variant changed" in column.metrics.text()


def test_stop_cancels_the_generation(qtbot, panel, loaded):
    gate = threading.Event()
    loaded.runner.submit(lambda progress, cancel: gate.wait(10), "busy")
    job = panel.run()
    panel.stop()
    gate.set()
    with qtbot.waitSignal(job.ended, timeout=20000):
        pass
    assert job.state == "cancelled" and panel.status.text() == "Stopped."
    assert not panel.stop_button.isEnabled()


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
    loaded.delete("loud")
    assert panel.run() is None
    assert "missing" in boxes.of("warning")[0][2]


def test_columns_are_remembered(qtbot, panel, loaded):
    panel.add_column(STANCE + "loud")
    again = ComparePanel(loaded)
    qtbot.addWidget(again)
    assert [c.spec for c in again.columns] == [BASE, STANCE + "loud"]


def test_the_window_stays_responsive_while_generating(qtbot, panel):
    import time

    from PySide6.QtCore import QTimer

    panel.add_column(STANCE + "loud")
    panel.max_tokens.setValue(200)
    ticks = []
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    job = panel.run()
    with qtbot.waitSignal(job.ended, timeout=60000):
        pass
    timer.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) > 5 and max(gaps) < 0.2, f"longest event-loop stall {max(gaps) * 1000:.0f} ms"
