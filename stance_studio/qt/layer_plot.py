"""Where a stance changes the model: per-layer weight-change bars, one colour per
module kind (stacked or grouped), metric selectable, hover for the module, click a
bar for that module's singular-value spectrum and energy curve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QSplitter,
    QToolButton,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from stance_studio.qt import theme
from stance_studio.qt.plots import ClickableBars, export_plot
from stance_studio.qt.session import Session

METRIC_LABELS = {
    "relative_change": "relative change ‖Δ‖ / ‖W₀‖",
    "abs_change": "absolute change ‖Δ‖",
    "norm_change": "norm change ‖W₀+Δ‖ − ‖W₀‖",
}


@dataclass
class Bar:
    kind: str
    layer: Optional[int]
    module: object  # ModuleChange


def layout_bars(changes, metric: str, kinds: list[str], num_layers: int, stacked: bool):
    """Bar rectangles for ``changes``: returns (bars, x0, y0, width, height).

    x = layer index; parameters outside the blocks (embeddings, final norm) sit at
    x = ``num_layers`` ("other"). One bar per (kind, layer): the largest module there.
    """
    best: dict[tuple[str, int], object] = {}
    for m in changes:
        if m.kind not in kinds:
            continue
        x = m.layer if m.layer is not None else num_layers
        key = (m.kind, x)
        if key not in best or abs(getattr(m, metric)) > abs(getattr(best[key], metric)):
            best[key] = m
    bars, x0, y0, width, height = [], [], [], [], []
    slot = 0.8
    stack_pos: dict[int, float] = {}
    stack_neg: dict[int, float] = {}
    for k_index, kind in enumerate(kinds):
        for (kind_, x), m in sorted(best.items(), key=lambda item: item[0][1]):
            if kind_ != kind:
                continue
            value = float(getattr(m, metric))
            if stacked:
                stack = stack_pos if value >= 0 else stack_neg
                base = stack.get(x, 0.0)
                stack[x] = base + value
                x0.append(x - slot / 2)
                width.append(slot)
                y0.append(base)
            else:
                w = slot / max(len(kinds), 1)
                x0.append(x - slot / 2 + k_index * w)
                width.append(w)
                y0.append(0.0)
            height.append(value)
            bars.append(Bar(kind, m.layer, m))
    return bars, x0, y0, width, height


class LayerChangeView(QWidget):
    """The per-layer bars plus a spectrum pane for the clicked module."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.changes: list = []
        self.stance: Optional[str] = None
        self.bars: list[Bar] = []
        self._request = 0

        self.stance_box = QComboBox(toolTip="Stance to analyse")
        self.stance_box.setMinimumContentsLength(10)
        self.stance_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.stance_box.currentTextChanged.connect(self._on_stance)
        self.metric_box = QComboBox(toolTip="What each bar measures")
        self.metric_box.setMinimumContentsLength(12)
        self.metric_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        for key, label in METRIC_LABELS.items():
            self.metric_box.addItem(label, key)
        self.metric_box.currentIndexChanged.connect(self.redraw)
        self.mode_box = QComboBox(toolTip="Module kinds stacked in one bar per layer, or side by side")
        self.mode_box.addItems(["stacked", "grouped"])
        self.mode_box.currentIndexChanged.connect(self.redraw)
        self.kinds_button = QToolButton(text="Module kinds", popupMode=QToolButton.ToolButtonPopupMode.InstantPopup)
        self.kinds_menu = QMenu(self.kinds_button)
        self.kinds_button.setMenu(self.kinds_menu)
        export = QPushButton("Export…", clicked=lambda: export_plot(self.plot.getPlotItem(), self, "layer-changes"))
        self.note = QLabel(" ", wordWrap=True)
        self.note.setProperty("role", "muted")

        self.plot = pg.PlotWidget()
        self.plot.showGrid(y=True, alpha=0.2)
        self.plot.setLabel("bottom", "layer")
        self.plot.getPlotItem().setMenuEnabled(False)
        self.legend = QLabel(" ", wordWrap=True)
        self.bar_item = ClickableBars()
        self.bar_item.hovered.connect(self._on_hover)
        self.bar_item.clicked.connect(self.show_spectrum)
        self.plot.addItem(self.bar_item)

        self.spectrum = pg.GraphicsLayoutWidget()
        self.sv_plot = self.spectrum.addPlot(title="singular values")
        self.sv_plot.setLogMode(y=True)
        self.sv_plot.setLabel("bottom", "index")
        self.energy_plot = self.spectrum.addPlot(title="cumulative energy")
        self.energy_plot.setLabel("bottom", "rank")
        self.energy_plot.setYRange(0, 1.02)
        self.spectrum_title = QLabel("Click a bar to see that module's spectrum.", wordWrap=True)
        self.spectrum_title.setProperty("role", "muted")
        export_sv = QPushButton("Export…", clicked=lambda: export_plot(self.spectrum.ci, self, "spectrum"))
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.spectrum_title)
        right_layout.addWidget(self.spectrum, 1)
        right_layout.addWidget(export_sv, 0, Qt.AlignmentFlag.AlignRight)

        controls = QHBoxLayout()
        for widget in (self.stance_box, self.metric_box, self.mode_box, self.kinds_button):
            controls.addWidget(widget)
        controls.addStretch(1)
        controls.addWidget(export)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.plot)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.legend)
        layout.addWidget(split, 1)
        layout.addWidget(self.note)

        session.library_changed.connect(self._fill_stances)
        session.model_changed.connect(self._on_model_changed)
        self._fill_stances()

    # Choosing ------------------------------------------------------------------------

    @Slot()
    def _fill_stances(self) -> None:
        current = self.stance_box.currentText()
        self.stance_box.blockSignals(True)
        self.stance_box.clear()
        self.stance_box.addItems(self.session.compatible_names())
        index = self.stance_box.findText(current)
        self.stance_box.setCurrentIndex(index if index >= 0 else (0 if self.stance_box.count() else -1))
        self.stance_box.blockSignals(False)
        if self.stance_box.currentText() != (self.stance or ""):
            self._on_stance(self.stance_box.currentText())

    @Slot(object)
    def _on_model_changed(self, _base) -> None:
        self.stance = None
        self._fill_stances()

    def show_stance(self, name: str) -> None:
        index = self.stance_box.findText(name)
        if index >= 0:
            self.stance_box.setCurrentIndex(index)

    @Slot(str)
    def _on_stance(self, name: str) -> None:
        self.stance = name or None
        self.changes = []
        self.redraw()
        if not name or self.session.base is None:
            self.note.setText("Load a model and train or import a stance to see where it changes the weights.")
            return
        self._request += 1
        request, session = self._request, self.session
        base, blender = session.base, session.blender

        def job(progress, cancel):
            from stance_studio.core.analysis import analyse
            from stance_studio.core.deltas import LowRankDelta

            ckpt = session.checkpoint(name)
            cheap = all(isinstance(d, LowRankDelta) for d in ckpt.deltas.values())
            return request, analyse(ckpt.deltas, base, original=blender.original, spectra=cheap)

        self.note.setText(f"Analysing {name} …")
        job_ = session.runner.submit(job, f"Analysing {name}")
        job_.finished.connect(self._on_analysed)
        job_.failed.connect(self._on_failed)

    @Slot(object)
    def _on_analysed(self, result) -> None:
        request, changes = result
        if request != self._request:
            return
        self.changes = changes
        kinds = sorted({m.kind for m in changes})
        self.kinds_menu.clear()
        for kind in kinds:
            action = self.kinds_menu.addAction(kind)
            action.setCheckable(True)
            action.setChecked(True)
            action.toggled.connect(self.redraw)
        total = sum(m.numel for m in changes)
        self.note.setText(f"{self.stance}: {len(changes)} parameters changed ({total:,} values). "
                          "Hover a bar for its module; click it for the spectrum.")
        self.redraw()

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.note.setText(f"Could not analyse: {message}")

    def selected_kinds(self) -> list[str]:
        return [a.text() for a in self.kinds_menu.actions() if a.isChecked()]

    # Drawing -------------------------------------------------------------------------

    @Slot()
    def redraw(self) -> None:
        metric = self.metric_box.currentData()
        kinds = self.selected_kinds() if self.changes else []
        num_layers = self.session.base.num_layers if self.session.base is not None else 0
        self.bars, x0, y0, width, height = layout_bars(self.changes, metric, kinds, num_layers,
                                                       self.mode_box.currentText() == "stacked")
        colour = {kind: theme.series_color(i) for i, kind in enumerate(kinds)}
        brushes = [pg.mkBrush(colour[b.kind]) for b in self.bars]
        self.bar_item.set_bars(x0, y0, width, height, brushes)
        self.legend.setText("&nbsp;&nbsp;".join(f'<span style="color:{colour[k]}">■</span> {k}' for k in kinds))
        self.plot.setLabel("left", METRIC_LABELS[metric])
        ticks = [(i, str(i)) for i in range(0, num_layers, max(1, num_layers // 15))]
        if any(b.layer is None for b in self.bars):
            ticks.append((num_layers, "other"))
        self.plot.getAxis("bottom").setTicks([ticks])
        if self.bars:
            self.plot.enableAutoRange()

    @Slot(int)
    def _on_hover(self, index: int) -> None:
        if index < 0 or index >= len(self.bars):
            QToolTip.hideText()
            return
        m = self.bars[index].module
        metric = self.metric_box.currentData()
        rank = f"\nrank for 90 % energy: {m.rank90}" if m.rank90 is not None else ""
        QToolTip.showText(QCursor.pos(), f"{m.name}\nshape {tuple(m.shape)}\n{METRIC_LABELS[metric]}: "
                          f"{getattr(m, metric):.4g}{rank}", self.plot)

    @Slot(int)
    def show_spectrum(self, index: int) -> None:
        if index < 0 or index >= len(self.bars) or self.stance is None:
            return
        m = self.bars[index].module
        name, session = self.stance, self.session
        self.spectrum_title.setText(f"{m.name} — computing …")
        self._spectrum_for = m.name

        def job(progress, cancel):
            from stance_studio.core.analysis import energy_curve, singular_values

            delta = session.checkpoint(name).deltas[m.name]
            if len(delta.shape) != 2:
                return m.name, None, None
            sv = singular_values(delta)
            return m.name, sv.numpy(), energy_curve(sv).numpy()

        job_ = session.side_runner.submit(job, "Singular values")
        job_.finished.connect(self._on_spectrum)
        job_.failed.connect(self._on_failed)

    @Slot(object)
    def _on_spectrum(self, result) -> None:
        module, sv, energy = result
        if module != getattr(self, "_spectrum_for", None):
            return
        self.sv_plot.clear()
        self.energy_plot.clear()
        if sv is None:
            self.spectrum_title.setText(f"{module}: a vector (norm or bias); it has no spectrum.")
            return
        c = theme.series_color(0)
        ranks = np.arange(1, len(sv) + 1)
        self.sv_plot.plot(ranks, np.maximum(sv, 1e-12), pen=pg.mkPen(c, width=2))
        self.energy_plot.plot(ranks, energy, pen=pg.mkPen(theme.series_color(2), width=2))
        r90 = int(np.searchsorted(energy, 0.9) + 1)
        self.energy_plot.addItem(pg.InfiniteLine(pos=r90, angle=90, pen=pg.mkPen(theme.colors()["muted"], style=Qt.PenStyle.DashLine),
                                                 label=f"90 % at rank {r90}", labelOpts={"position": 0.3}))
        self.spectrum_title.setText(f"{module}\n{len(sv)} singular values; 90 % of the energy in the first {r90}.")
