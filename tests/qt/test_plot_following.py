"""The plots follow the library selection and the theme: several stances side by side
in the layer bars, analysis queued at most once, stale spectra dropped, hover
tooltips, and existing plots restyled when the theme changes."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication, QToolTip

from stance_studio.qt import theme
from stance_studio.qt.layer_plot import ANALYSIS_KEY, LayerChangeView, layout_stances
from stance_studio.qt.plots_panel import PlotsPanel


def _shown(qtbot, view, names):
    qtbot.waitUntil(lambda: list(view.changes) == list(names) and bool(view.bars), timeout=10000)


@pytest.fixture
def two(loaded, write_stance):
    write_stance(loaded.library, loaded.base, "curious", seed=1)
    write_stance(loaded.library, loaded.base, "confident", seed=2, kinds=("q_proj", "v_proj", "up_proj"))
    loaded.refresh_library()
    return loaded


def test_hovering_a_bar_shows_its_module_and_value(qtbot, two):
    view = LayerChangeView(two)
    qtbot.addWidget(view)
    view.resize(900, 420)
    view.show()
    qtbot.waitExposed(view)
    view.show_stances(["curious"])
    _shown(qtbot, view, ["curious"])
    tallest = int(np.argmax(view.bar_item.opts["height"]))
    _hover_bar(qtbot, view, tallest)
    module = view.bars[tallest].module
    assert view.hover_text.startswith(f"curious: {module.name}\n")
    assert f"relative change ‖Δ‖ / ‖W₀‖: {module.relative_change:.4g}" in view.hover_text
    assert QToolTip.text() == view.hover_text


def _hover_bar(qtbot, view, index):
    """Move the mouse over bar ``index`` (again, while the plot settles its range and
    pyqtgraph drops moves that come too fast) until its tooltip shows."""
    opts = view.bar_item.opts
    centre = QPointF(opts["x0"][index] + opts["width"][index] / 2, opts["y0"][index] + opts["height"][index] / 2)
    for attempt in range(40):
        point = view.plot.mapFromScene(view.plot.getPlotItem().vb.mapViewToScene(centre))
        qtbot.mouseMove(view.plot.viewport(), point + QPoint(attempt % 2, 0))
        qtbot.wait(50)
        if view.hover_text == view.tooltip_for(index):
            return
    raise AssertionError(f"no tooltip for bar {index}; last: {view.hover_text!r}")


@pytest.fixture
def light_again():
    yield
    theme.apply_theme(QApplication.instance(), "light")


def test_switching_theme_restyles_existing_plots(qtbot, two, light_again):
    from stance_studio.qt.main_window import MainWindow

    window = MainWindow(two)
    qtbot.addWidget(window)
    plots = window.plots
    loss, layers = plots.loss.plot, plots.layers
    window.set_theme("light")  # made under pyqtgraph's own defaults (black) in this test run
    assert loss.backgroundBrush().color().name() == theme.colors("light")["plot_bg"] == "#ffffff"
    window.set_theme("dark")
    dark = theme.colors("dark")
    for view in (loss, layers.plot, layers.spectrum.plots, plots.retention.plot):
        assert view.backgroundBrush().color().name() == dark["plot_bg"]
    for axis in ("left", "bottom"):
        assert loss.getAxis(axis).textPen().color().name() == dark["plot_fg"]
        assert loss.getAxis(axis).pen().color().name() == dark["plot_fg"]
        assert dark["plot_fg"] in loss.getAxis(axis).label.toHtml()  # the axis title ("loss", "step")
    assert dark["plot_fg"] in layers.sv_plot.getAxis("left").label.toHtml()  # "singular value"
    assert [label.color.name() for label in plots.retention.labels] == [dark["plot_fg"]] * 2
    window.set_theme("light")
    assert loss.backgroundBrush().color().name() == "#ffffff"
    assert loss.getAxis("left").textPen().color().name() == theme.colors("light")["plot_fg"]


def test_layer_view_follows_the_library_selection_stance_by_stance(qtbot, two):
    from PySide6.QtCore import QItemSelectionModel

    from stance_studio.qt.main_window import MainWindow

    window = MainWindow(two)
    qtbot.addWidget(window)
    table, layers = window.library_panel.table, window.plots.layers
    table.selectRow(0)
    _shown(qtbot, layers, ["confident"])  # the table lists names in order
    assert {b.stance for b in layers.bars} == {"confident"}
    flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
    table.selectionModel().select(table.model().index(1, 1), flags)
    _shown(qtbot, layers, ["confident", "curious"])
    assert window.library_panel.selected_names() == ["confident", "curious"]
    opts = layers.bar_item.opts
    for layer in range(two.base.num_layers):
        mine = {s: [i for i, b in enumerate(layers.bars) if b.stance == s and b.layer == layer] for s in layers.stances}
        # Side by side in each layer: confident's stack on the left, curious's on the right, each 0.4 wide.
        assert max(opts["x0"][i] + opts["width"][i] for i in mine["confident"]) <= min(opts["x0"][i] for i in mine["curious"]) + 1e-9
        assert all(opts["width"][i] == pytest.approx(0.4) for ids in mine.values() for i in ids)
    # One hue per stance (kinds are lighter shades of it); the legend names both.
    for stance, index in (("confident", 0), ("curious", 1)):
        hues = {opts["brushes"][i].color().hue() for i, b in enumerate(layers.bars) if b.stance == stance}
        assert hues == {QColor(theme.series_color(index)).hue()}
    assert "confident" in layers.legend.text() and "curious" in layers.legend.text()
    assert "up_proj" in {b.kind for b in layers.bars if b.stance == "confident"}
    assert "up_proj" not in {b.kind for b in layers.bars if b.stance == "curious"}


def test_quick_selection_changes_queue_one_analysis(qtbot, two, monkeypatch):
    import threading

    from stance_studio.core import analysis

    view = LayerChangeView(two)
    qtbot.addWidget(view)
    _shown(qtbot, view, ["curious"] if view.stances == ["curious"] else view.stances)
    qtbot.waitUntil(lambda: not two.runner.busy, timeout=10000)
    analysed, original = [], analysis.analyse

    def counting(deltas, base, **kw):
        analysed.append(len(deltas))
        return original(deltas, base, **kw)

    monkeypatch.setattr(analysis, "analyse", counting)
    view._analysed.clear()
    release = threading.Event()
    blocker = two.runner.submit(lambda progress, cancel: release.wait(10), "Training (stand-in)")
    qtbot.waitUntil(lambda: blocker.state == "running", timeout=5000)  # else the analysis, interactive, goes first
    for names in (["curious"], ["confident"], ["curious", "confident"], ["confident"]):
        view.show_stances(names)
    pending = [j for j in two.runner.active_jobs() if j.key == ANALYSIS_KEY and j.state == "pending"]
    # One job waits; the last choice (confident) is part of it, so nothing more was queued.
    assert len(pending) == 1 and pending[0].title == "Analysing curious, confident"
    release.set()
    with qtbot.waitSignal(blocker.ended, timeout=10000):
        pass
    _shown(qtbot, view, ["confident"])
    qtbot.waitUntil(lambda: not two.runner.busy, timeout=10000)
    assert len(analysed) == 2  # once per stance, not once per selection
    view.show_stances(["curious"])  # analysed on the way: shown at once, nothing queued
    assert list(view.changes) == ["curious"] and not two.runner.busy


def test_a_stale_spectrum_never_paints_and_names_its_stance(qtbot, two, monkeypatch):
    import threading

    view = LayerChangeView(two)
    qtbot.addWidget(view)
    view.show_stances(["curious", "confident"])
    _shown(qtbot, view, ["curious", "confident"])
    module = "model.layers.0.self_attn.q_proj.weight"
    first = next(i for i, b in enumerate(view.bars) if b.stance == "curious" and b.module.name == module)
    second = next(i for i, b in enumerate(view.bars) if b.stance == "confident" and b.module.name == module)
    painted = []
    plot = view.sv_plot.plot
    monkeypatch.setattr(view.sv_plot, "plot", lambda *a, **k: (painted.append(view.spectrum._requests.value), plot(*a, **k))[1])
    gate, real = threading.Event(), two.catalog.checkpoint

    def slow(name):
        if name == "curious":
            gate.wait(10)
        return real(name)

    monkeypatch.setattr(two.catalog, "checkpoint", slow)
    view.show_spectrum(first)
    qtbot.waitUntil(lambda: two.host.side_runner.current is not None, timeout=5000)  # curious's is running
    view.show_spectrum(second)  # the same module in another stance
    gate.set()  # curious's result now arrives first, and late
    qtbot.waitUntil(lambda: "singular values" in view.spectrum_title.text(), timeout=10000)
    qtbot.waitUntil(lambda: not two.host.side_runner.busy, timeout=10000)
    assert len(painted) == 1
    assert view.spectrum_title.text().startswith("confident: layers.0.self_attn.q_proj\n")


def test_grouped_layout_splits_each_layer_between_stances():
    from types import SimpleNamespace as M

    one = [M(kind="q_proj", layer=0, relative_change=0.2), M(kind="v_proj", layer=0, relative_change=0.1)]
    bars, x0, y0, width, height = layout_stances([("a", one), ("b", one)], "relative_change", ["q_proj", "v_proj"], 2,
                                                 stacked=False)
    assert [b.stance for b in bars] == ["a", "a", "b", "b"]
    assert x0 == pytest.approx([-0.4, -0.2, 0.0, 0.2]) and width == pytest.approx([0.2] * 4)
