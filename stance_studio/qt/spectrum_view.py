"""One module's singular-value spectrum and cumulative energy curve (one above the
other on a shared rank axis), computed on the session's side runner, so it never
waits for a training run."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from stance_studio.core.jobs import Counter
from stance_studio.qt import theme
from stance_studio.qt.plots import export_plot
from stance_studio.qt.session import Session
from stance_studio.qt.workers import is_current

SPECTRUM_KEY = "layer-spectrum"  # quick clicks queue at most one spectrum
PROMPT = "Click a bar to see that module's spectrum."


class SpectrumView(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self._requests = Counter()  # another module (or stance) clicked: older results are stale
        self._shown: Optional[tuple] = None
        # One above the other on a shared rank axis: the pane is narrow beside the bars.
        self.plots = pg.GraphicsLayoutWidget()
        self.sv_plot = self.plots.addPlot(row=0, col=0)
        self.sv_plot.setLogMode(y=True)
        self.sv_plot.setLabel("left", "σ")
        self.sv_plot.getAxis("bottom").setStyle(showValues=False)
        self.energy_plot = self.plots.addPlot(row=1, col=0)
        self.energy_plot.setXLink(self.sv_plot)
        self.energy_plot.setLabel("left", "energy")
        self.energy_plot.setLabel("bottom", "rank")
        self.energy_plot.setYRange(0, 1.02)
        self.energy_plot.getAxis("left").setTicks([[(0, "0"), (0.5, "0.5"), (1, "1")]])
        for plot in (self.sv_plot, self.energy_plot):
            plot.setMenuEnabled(False)
            plot.getAxis("left").enableAutoSIPrefix(False)
            plot.getAxis("left").setWidth(48)  # both y axes line up
        self.title = QLabel(PROMPT, wordWrap=True)
        self.title.setProperty("role", "muted")
        self.title.setToolTip("Singular values of the module's delta (top, log scale) and the share of its "
                              "energy (squared Frobenius norm) in the first k of them (bottom)")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.plots, 1)

    def show_module(self, stance: str, module: str) -> None:
        """Compute and show the spectrum of ``module`` in ``stance``'s delta."""
        session = self.session
        self.title.setText(f"{stance}: {_short(module)} — computing …")
        stamp = self._requests.bump()

        def job(progress, cancel):
            from stance_studio.core.analysis import energy_curve, singular_values

            delta = session.catalog.checkpoint(stance).deltas[module]
            if len(delta.shape) != 2:
                return stance, module, None, None
            sv = singular_values(delta)
            return stance, module, sv.numpy(), energy_curve(sv).numpy()

        job_ = session.host.side_runner.submit(job, "Singular values", key=SPECTRUM_KEY)
        job_.stamp = stamp
        job_.finished.connect(self._on_spectrum)
        job_.failed.connect(self._on_failed)

    @Slot()
    def export(self) -> None:
        export_plot(self.plots.ci, self, "spectrum")

    def clear(self) -> None:
        self._requests.bump()
        self._shown = None
        self.sv_plot.clear()
        self.energy_plot.clear()
        self.title.setText(PROMPT)

    def restyle(self) -> None:
        """Redraw the curves in the current theme's colours."""
        if self._shown is not None:
            self._show(self._shown)

    @Slot(object)
    def _on_spectrum(self, result) -> None:
        if is_current(self._requests, self.sender()):
            self._show(result)

    def _show(self, result) -> None:
        stance, module, sv, energy = result
        self._shown = result
        self.sv_plot.clear()
        self.energy_plot.clear()
        if sv is None:
            self.title.setText(f"{stance}: {_short(module)} is a vector (norm or bias); it has no spectrum.")
            return
        ranks = np.arange(1, len(sv) + 1)
        self.sv_plot.plot(ranks, np.maximum(sv, 1e-12), pen=pg.mkPen(theme.series_color(0), width=2))
        self.energy_plot.plot(ranks, energy, pen=pg.mkPen(theme.series_color(2), width=2))
        r90 = int(np.searchsorted(energy, 0.9) + 1)
        self.energy_plot.addItem(pg.InfiniteLine(pos=r90, angle=90,
                                                 pen=pg.mkPen(theme.colors()["muted"], style=Qt.PenStyle.DashLine)))
        self.title.setText(f"{stance}: {_short(module)}\n90 % of the energy in the first {r90} of {len(sv)} "
                           "singular values")

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        if is_current(self._requests, self.sender()):
            self.title.setText(f"Could not compute the spectrum: {message}")


def _short(module: str) -> str:
    """A parameter name without the parts every name shares ("model.", ".weight")."""
    name = module[len("model."):] if module.startswith("model.") else module
    return name[: -len(".weight")] if name.endswith(".weight") else name
