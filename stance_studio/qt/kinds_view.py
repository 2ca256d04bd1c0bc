"""One stance, two encodings: per-layer weight-change bars of a weight stance next to
the per-layer steering effect of a steering stance built from the same dataset
(paired by dataset hash), on a shared layer axis. Follows the library selection."""

from __future__ import annotations

from typing import Optional

import pyqtgraph as pg
from PySide6.QtCore import Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from stance_studio.core.jobs import Counter
from stance_studio.core.stance_kinds import paired_stance, steering_effect_by_layer, weight_change_by_layer
from stance_studio.qt import theme
from stance_studio.qt.session import Session
from stance_studio.qt.workers import is_current

KINDS_KEY = "kinds-view"


def _bar_plot(title: str, left: str) -> tuple[pg.PlotWidget, pg.BarGraphItem]:
    plot = pg.PlotWidget(title=title)
    plot.setLabel("bottom", "layer")
    plot.setLabel("left", left)
    plot.showGrid(y=True, alpha=0.2)
    plot.getAxis("left").enableAutoSIPrefix(False)  # norms and ratios as they are, not "(x0.001)"
    plot.getPlotItem().setMenuEnabled(False)
    bars = pg.BarGraphItem(x=[], height=[], width=0.8)
    plot.addItem(bars)
    return plot, bars


class KindsView(QWidget):
    """Weight changes and steering effect of the selected stance and its pair."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.weights_name: Optional[str] = None
        self.steering_name: Optional[str] = None
        self.weight_values: list[float] = []
        self.steering_values: list[float] = []
        self._selections = Counter()  # results of an older selection are dropped
        self.note = QLabel("Select a stance: its weight changes and its steering vectors, layer by layer.",
                           wordWrap=True)
        self.note.setProperty("role", "muted")
        self.weights_plot, self.weight_bars = _bar_plot("weight change ‖Δ‖ per layer", "‖Δ‖")
        self.steering_plot, self.steering_bars = _bar_plot("steering vector per layer", "‖v‖ / ‖h‖")
        self.steering_plot.setXLink(self.weights_plot)
        plots = QHBoxLayout()
        plots.addWidget(self.weights_plot, 1)
        plots.addWidget(self.steering_plot, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addLayout(plots, 1)

    @Slot(list)
    def show_stances(self, names: list) -> None:
        if len(names) != 1:
            return
        entries = self.session.entries
        entry = self.session.entry(names[0])
        if entry is None:
            return
        stamp = self._selections.bump()
        pair = paired_stance(entries, entry.name)
        activation = entry.metadata.get("kind") == "activation"
        self.steering_name, self.weights_name = (entry.name, pair) if activation else (pair, entry.name)
        layers = int(entry.metadata.get("base", {}).get("num_layers") or 0)
        steering = self.session.entry(self.steering_name) if self.steering_name else None
        self.steering_values = [v or 0.0 for v in
                                steering_effect_by_layer(steering.metadata.get("steering", {}), layers)] if steering else []
        self.weight_values = []
        self._draw()
        if self.weights_name:
            self._analyse(self.weights_name, layers, stamp)

    def _analyse(self, name: str, layers: int, stamp: int) -> None:
        session = self.session

        def job(progress, cancel):
            return weight_change_by_layer(session.catalog.checkpoint(name).deltas, layers)

        self._job = session.runner.submit(job, f"Per-layer change of {name}", key=KINDS_KEY, interactive=True)
        self._job.stamp = stamp
        self._job.finished.connect(self._on_analysed)

    @Slot(object)
    def _on_analysed(self, values) -> None:
        if is_current(self._selections, self.sender()):
            self.weight_values = values
            self._draw()

    def _draw(self) -> None:
        colour = theme.series_color(0), theme.series_color(1)
        for bars, values, brush in ((self.weight_bars, self.weight_values, colour[0]),
                                    (self.steering_bars, self.steering_values, colour[1])):
            bars.setOpts(x=list(range(len(values))), height=list(values), width=0.8, brush=brush)
        self.weights_plot.setTitle(f"weight change ‖Δ‖ per layer: {self.weights_name}" if self.weights_name
                                   else "no weight stance from this dataset")
        self.steering_plot.setTitle(f"steering ‖v‖ / ‖h‖ per layer: {self.steering_name}" if self.steering_name
                                    else "no steering stance from this dataset")
        shown = [n for n in (self.weights_name, self.steering_name) if n]
        self.note.setText(
            f"{' and '.join(shown)}: built from the same dataset. Left, how much the weights change in each layer; "
            "right, the steering vector's size relative to that layer's hidden state (base model's own answers)."
            if len(shown) == 2 else
            f"{shown[0]}: train the same dataset with the other method (weights, or --method steer) to compare "
            "the two encodings here." if shown else "Select a stance.")
