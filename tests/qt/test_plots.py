"""Plots: per-layer bars laid out per module kind, hover and click on bars, the
spectrum of a clicked module, the loss curve, size against retention, export."""

from __future__ import annotations

import numpy as np
import pytest

from stance_studio.qt.layer_plot import LayerChangeView, layout_bars
from stance_studio.qt.plots import ClickableBars, LossPlot
from stance_studio.qt.plots_panel import PlotsPanel


def _analysed(qtbot, view, name):
    qtbot.waitUntil(lambda: view.stance == name and bool(view.changes) and not view.session.runner.busy, timeout=10000)


def test_bars_cover_every_layer_and_kind(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "curious")
    loaded.refresh_library()
    view = LayerChangeView(loaded)
    qtbot.addWidget(view)
    _analysed(qtbot, view, "curious")
    layers = loaded.base.num_layers
    assert {(b.kind, b.layer) for b in view.bars} == {(k, i) for k in ("q_proj", "v_proj") for i in range(layers)}
    assert view.selected_kinds() == ["q_proj", "v_proj"]


def test_stacked_bars_sit_on_top_of_each_other_and_grouped_side_by_side():
    from types import SimpleNamespace as M

    changes = [M(kind="q_proj", layer=0, relative_change=0.2), M(kind="v_proj", layer=0, relative_change=0.3),
               M(kind="norm", layer=None, relative_change=0.1)]
    bars, x0, y0, width, height = layout_bars(changes, "relative_change", ["q_proj", "v_proj", "norm"], 4, stacked=True)
    assert y0[:2] == [0.0, 0.2] and height[:2] == [0.2, 0.3] and x0[0] == x0[1]
    assert bars[2].layer is None and x0[2] == pytest.approx(4 - 0.4)  # outside the blocks: "other"
    bars, x0, y0, width, height = layout_bars(changes, "relative_change", ["q_proj", "v_proj", "norm"], 4, stacked=False)
    assert y0 == [0.0, 0.0, 0.0] and x0[1] == pytest.approx(x0[0] + width[0])


def test_a_change_without_a_relative_size_draws_no_bar():
    """A bias that starts at zero (GPT-2, Qwen2) has an infinite relative change; it
    must not turn the whole plot into NaN."""
    from types import SimpleNamespace as M

    changes = [M(kind="c_attn", layer=0, relative_change=0.2), M(kind="c_attn", layer=1, relative_change=float("inf")),
               M(kind="c_attn", layer=1, relative_change=0.1)]
    bars, x0, y0, width, height = layout_bars(changes, "relative_change", ["c_attn"], 2, stacked=True)
    assert [b.layer for b in bars] == [0, 1] and height == [0.2, 0.1] and all(np.isfinite(y0))


def test_kind_filter_and_metric_choice_redraw(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "curious")
    loaded.refresh_library()
    view = LayerChangeView(loaded)
    qtbot.addWidget(view)
    _analysed(qtbot, view, "curious")
    view.kinds_menu.actions()[0].setChecked(False)  # hide q_proj
    assert {b.kind for b in view.bars} == {"v_proj"}
    view.metric_box.setCurrentIndex(view.metric_box.findData("abs_change"))
    heights = view.bar_item.opts["height"]
    assert np.allclose(sorted(heights), sorted(b.module.abs_change for b in view.bars))


def test_clicking_a_bar_shows_its_spectrum(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "lowrank", rank=2)
    loaded.refresh_library()
    view = LayerChangeView(loaded)
    qtbot.addWidget(view)
    _analysed(qtbot, view, "lowrank")
    view.show_spectrum(0)
    module = view.bars[0].module.name
    qtbot.waitUntil(lambda: "singular values" in view.spectrum_title.text(), timeout=10000)
    assert module.removeprefix("model.").removesuffix(".weight") in view.spectrum_title.text()
    curves = view.sv_plot.listDataItems()
    assert len(curves) == 1 and len(curves[0].getData()[0]) == 2  # a rank-2 delta: two singular values
    assert view.bars[0].module.rank90 is not None  # low-rank deltas get their 90 % rank


def test_bars_report_hover_and_click_by_position(qtbot):
    bars = ClickableBars()
    bars.set_bars([0.0, 1.0], [0.0, 0.0], [0.8, 0.8], [1.0, -0.5], [None, None])
    assert bars.bar_at(0.4, 0.5) == 0
    assert bars.bar_at(1.4, -0.2) == 1
    assert bars.bar_at(0.9, 0.5) == -1
    bars.set_bars([0.0, 0.0], [0.0, 1.0], [0.8, 0.8], [1.0, 0.001], [None, None])  # a stack; a tiny top segment
    assert bars.bar_at(0.4, 0.5) == 0  # the lower segment is not hidden by the one above it
    assert bars.bar_at(0.4, 1.0005) == 1


def test_loss_plot_marks_skipped_steps(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.add_point(1, 2.0, False)
    plot.add_point(2, None, True)
    plot.add_point(3, 1.5, False)
    x, y = plot.curve.getData()
    assert list(x) == [1, 3] and list(y) == [2.0, 1.5]
    assert list(plot.skipped.getData()[0]) == [2.0]


def test_loss_tab_shows_the_selected_stances_recorded_curve(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "curious")
    loaded.refresh_library()
    panel = PlotsPanel(loaded)
    qtbot.addWidget(panel)
    panel.loss.show_stances(["curious"])
    assert list(panel.loss.plot.curve.getData()[1]) == [2.0, 1.5, 1.2]
    assert panel.retention.scatter.data.size == 1


def test_plots_export_as_png_and_svg(qtbot, loaded, write_stance, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from stance_studio.qt.plots import export_plot

    write_stance(loaded.library, loaded.base, "curious")
    loaded.refresh_library()
    view = LayerChangeView(loaded)
    qtbot.addWidget(view)
    view.resize(800, 400)
    _analysed(qtbot, view, "curious")
    for name, kind in (("bars.png", "PNG image (*.png)"), ("bars.svg", "SVG drawing (*.svg)")):
        target = tmp_path / name
        monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, t=target, k=kind: (str(t), k)))
        assert export_plot(view.plot.getPlotItem(), view) == str(target)
        assert target.stat().st_size > 500
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "bars.svg").read_bytes()[:500]


def test_loss_tab_marks_the_steps_a_training_run_skipped(qtbot, loaded, deltas_factory):
    """Checkpoints record how many steps were skipped (a count) and a loss of None
    at each skipped step; the plot marks those steps."""
    from stance_studio.core.checkpoints import make_checkpoint

    ckpt = make_checkpoint("skippy", deltas_factory(loaded.base), loaded.base,
                           training={"method": "full", "loss": [2.0, None, 1.5], "nonfinite_steps": 1,
                                     "skipped_steps": 1})
    loaded.library.save(ckpt)
    loaded.refresh_library()
    panel = PlotsPanel(loaded)
    qtbot.addWidget(panel)
    panel.loss.show_stances(["skippy"])
    x, y = panel.loss.plot.curve.getData()
    assert [v for v, w in zip(x, y) if w == w] == [1, 3]
    assert list(panel.loss.plot.skipped.getData()[0]) == [2.0]
