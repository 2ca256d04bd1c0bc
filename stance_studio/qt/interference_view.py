"""The plots panel's interference tab: with two stances selected in the library,
per-layer cosine similarity and sign conflict of their deltas
(core/interference.py), measured off the model worker."""

from __future__ import annotations

from typing import Optional

import pyqtgraph as pg
from PySide6.QtCore import Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from stance_studio.core.jobs import Counter
from stance_studio.qt import theme
from stance_studio.qt.plots import export_plot
from stance_studio.qt.session import Session
from stance_studio.qt.workers import Job, is_current

HINT = "Select two stances in the library to see how their deltas overlap, layer by layer."


def _fmt(x: Optional[float], spec: str) -> str:
    return "–" if x is None else format(x, spec)


class InterferenceView(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.pair: tuple[str, ...] = ()
        self.result = None
        self.job: Optional[Job] = None
        self._pairs = Counter()  # the selection moved on: older results are stale
        self.title = QLabel(HINT, wordWrap=True)
        self.title.setProperty("role", "muted")
        self.graphics = pg.GraphicsLayoutWidget()
        self.cosine_plot = self.graphics.addPlot(row=0, col=0)
        self.conflict_plot = self.graphics.addPlot(row=1, col=0)
        self.conflict_plot.setXLink(self.cosine_plot)
        self.cosine_plot.setLabel("left", "cosine similarity")
        self.conflict_plot.setLabel("left", "sign conflict")
        self.conflict_plot.setLabel("bottom", "layer")
        self.cosine_plot.setYRange(-1, 1)
        self.conflict_plot.setYRange(0, 1)
        for plot in (self.cosine_plot, self.conflict_plot):
            plot.showGrid(x=False, y=True, alpha=0.2)
            plot.setMenuEnabled(False)
        # 0.5: what two unrelated deltas give
        self.conflict_plot.addLine(y=0.5, pen=pg.mkPen(theme.colors()["plot_fg"], style=pg.QtCore.Qt.PenStyle.DotLine))
        self.cosine_bars = pg.BarGraphItem(x=[], height=[], width=0.7, brush=theme.series_color(0))
        self.conflict_bars = pg.BarGraphItem(x=[], height=[], width=0.7, brush=theme.series_color(1))
        self.cosine_plot.addItem(self.cosine_bars)
        self.conflict_plot.addItem(self.conflict_bars)
        export = QPushButton("Export…", clicked=lambda: export_plot(self.graphics.ci, self, "interference"))
        row = QHBoxLayout()
        row.addWidget(self.title, 1)
        row.addWidget(export)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.graphics, 1)

    @Slot(list)
    def show_stances(self, names: list) -> None:
        """Measure the pair when exactly two stances are selected; otherwise explain."""
        if len(names) != 2:
            if not self.pair:
                self.title.setText(HINT)
            return
        pair = (str(names[0]), str(names[1]))
        if pair == self.pair and (self.result is not None or (self.job is not None and self.job.is_active)):
            return
        self.pair = pair
        self.result = None
        self._draw(None)
        self.title.setText(f"Comparing the deltas of {pair[0]} and {pair[1]} …")
        session = self.session

        def job(progress, cancel):
            from stance_studio.core.interference import checkpoint_interference

            a, b = session.catalog.checkpoint(pair[0]), session.catalog.checkpoint(pair[1])
            return checkpoint_interference(a, b, names=pair, progress=progress, cancel=cancel)

        self.job = session.host.side_runner.submit(job, f"Interference of {pair[0]} and {pair[1]}", key="interference")
        self.job.stamp = self._pairs.bump()
        self.job.report_to(self)

    @Slot(object)
    def _on_finished(self, result) -> None:
        if not is_current(self._pairs, self.sender()):
            return
        pair = self.pair
        self.result = result
        self._draw(result)
        o = result.overall
        self.title.setText(f"{pair[0]} vs {pair[1]}: cosine {_fmt(o.cosine, '+.3f')}, sign conflict "
                           f"{_fmt(o.sign_conflict, '.1%')} of the {o.shared_weights:,} weights both change "
                           "(0.5: unrelated; 1: opposite).")

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        if is_current(self._pairs, self.sender()):
            self.title.setText(f"Could not compare {' and '.join(self.pair)}: {message}")

    def _draw(self, result) -> None:
        layers = result.layers if result is not None else []
        x = list(range(len(layers)))
        self.cosine_bars.setOpts(x=x, height=[r.cosine or 0.0 for r in layers], width=0.7)
        self.conflict_bars.setOpts(x=x, height=[r.sign_conflict or 0.0 for r in layers], width=0.7)
        step = max(1, len(layers) // 15)
        ticks = [(i, r.name.removeprefix("layer ")) for i, r in enumerate(layers)]
        major = [t for i, t in enumerate(ticks) if i % step == 0 or ticks[i][1] == "other"]
        for plot in (self.cosine_plot, self.conflict_plot):
            plot.getAxis("bottom").setTicks([major, ticks])
        if layers:
            self.cosine_plot.setXRange(-0.6, len(layers) - 0.4, padding=0)

    def restyle(self) -> None:
        self.cosine_bars.setOpts(brush=theme.series_color(0))
        self.conflict_bars.setOpts(brush=theme.series_color(1))
