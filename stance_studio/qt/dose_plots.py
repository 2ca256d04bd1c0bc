"""The plots of a dose–response sweep: metrics against α as lines (a shaded band
where the evaluation reports a 95 % interval), and a grid sweep as a heat map in
α/β units with a colour bar. Both redraw in place as rows arrive."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from stance_studio.core import sweep_tables
from stance_studio.qt import theme


class _Line:
    """One metric's plot: the curve, its interval band (two hidden edges filled between)."""

    def __init__(self, plot: pg.PlotItem, index: int, name: Optional[str] = None, dashed: bool = False) -> None:
        color = theme.series_color(index)
        self.plot = plot
        pen = pg.mkPen(color, width=2, style=pg.QtCore.Qt.PenStyle.DashLine if dashed else pg.QtCore.Qt.PenStyle.SolidLine)
        self.curve = plot.plot([], [], pen=pen, symbol="t" if dashed else "o", symbolSize=6, symbolBrush=color,
                               symbolPen=None, name=name)
        self.low = pg.PlotDataItem([], [], pen=pg.mkPen(None))
        self.high = pg.PlotDataItem([], [], pen=pg.mkPen(None))
        fill = QColor(color)
        fill.setAlpha(60)
        self.band = pg.FillBetweenItem(self.low, self.high, brush=pg.mkBrush(fill))
        for item in () if dashed else (self.low, self.high, self.band):  # an overlay draws no band of its own
            plot.addItem(item)


# A metric drawn on another's plot: (key, legend label) by the key of the plot it joins.
OVERLAYS = {"stance_rate": ("stance_rate_strict", "strict (no looping answers)")}


class DoseLines(pg.GraphicsLayoutWidget):
    """One plot per plotted metric (sweep_tables.plotted), stacked, sharing the α axis."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lines: dict[str, _Line] = {}
        self.keys: list[str] = []
        self.chosen: list[tuple[str, str]] = []
        self.axis_label = "α"

    def set_rows(self, rows: Sequence[dict], axis_label: str = "α") -> None:
        chosen = sweep_tables.plotted(rows)
        if chosen != self.chosen or axis_label != self.axis_label:
            self._rebuild(chosen, axis_label)
        xs = sorted({float(r["alpha"]) for r in rows if "alpha" in r})
        for key, line in self.lines.items():
            points = sorted((r["alpha"], sweep_tables.value(r, key), sweep_tables.interval(r, key)) for r in rows
                            if "alpha" in r and sweep_tables.value(r, key) is not None)
            x = np.array([p[0] for p in points], dtype=float)
            line.curve.setData(x, np.array([p[1] for p in points], dtype=float))
            banded = [p for p in points if p[2] is not None]
            line.low.setData([p[0] for p in banded], [p[2][0] for p in banded])
            line.high.setData([p[0] for p in banded], [p[2][1] for p in banded])
        if self.lines and xs:
            # linked plots do not auto-range x reliably: follow the measured α range
            span = (xs[-1] - xs[0]) or 1.0
            first = next(iter(self.lines.values())).plot
            first.setXRange(xs[0] - 0.05 * span, xs[-1] + 0.05 * span, padding=0)

    def _rebuild(self, chosen: list[tuple[str, str]], axis_label: str) -> None:
        self.clear()
        self.lines = {}
        self.keys = [k for k, _ in chosen]
        self.chosen = list(chosen)
        self.axis_label = axis_label
        first: Optional[pg.PlotItem] = None
        for i, (key, label) in enumerate(chosen):
            plot = self.addPlot(row=i, col=0)
            plot.setTitle(label, size="9pt")
            plot.setLabel("left", sweep_tables.short_label(key))
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setMenuEnabled(False)
            plot.addLine(x=0, pen=pg.mkPen(theme.colors()["plot_fg"], width=1, style=pg.QtCore.Qt.PenStyle.DotLine))
            if i == len(chosen) - 1:
                plot.setLabel("bottom", axis_label)
            if first is not None:
                plot.setXLink(first)
            first = first or plot
            overlay = OVERLAYS.get(key)
            if overlay:  # the strict stance rate on the stance rate's plot, dashed, with a legend
                plot.addLegend(offset=(-10, 10))
            self.lines[key] = _Line(plot, i, name=sweep_tables.short_label(key) if overlay else None)
            if overlay:
                self.lines[overlay[0]] = _Line(plot, i, name=overlay[1], dashed=True)
        theme.style_plot(self)

    def plot_items(self) -> list[pg.PlotItem]:
        return [line.plot for line in self.lines.values()]


class DoseHeatMap(pg.GraphicsLayoutWidget):
    """A grid sweep's metric as an image: α along x, β along y (ticks in their
    units), a colour bar beside it; points not yet measured stay blank."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = self.addPlot(row=0, col=0)
        self.plot.setMenuEnabled(False)
        self.plot.setAspectLocked(False)
        self.image = pg.ImageItem(axisOrder="col-major")
        self.plot.addItem(self.image)
        self.bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.colormap.get("viridis"), interactive=False,
                                   width=18)
        self.bar.setImageItem(self.image, insert_in=self.plot)
        self.matrix = np.zeros((0, 0))
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.key = ""

    def set_rows(self, rows: Sequence[dict], key: str, label: str, names: tuple[str, str] = ("", "")) -> None:
        self.key = key
        self.alphas, self.betas, matrix = sweep_tables.grid_matrix(rows, key)
        self.matrix = np.array([[math.nan if v is None else v for v in line] for line in matrix], dtype=float)
        self.plot.setLabel("bottom", f"α ({names[0]})" if names[0] else "α")
        self.plot.setLabel("left", f"β ({names[1]})" if names[1] else "β")
        self.plot.setTitle(label)
        bottom, left = self.plot.getAxis("bottom"), self.plot.getAxis("left")
        bottom.setTicks([[(i + 0.5, f"{a:g}") for i, a in enumerate(self.alphas)]])
        left.setTicks([[(j + 0.5, f"{b:g}") for j, b in enumerate(self.betas)]])
        if not self.matrix.size:
            self.image.clear()
            return
        finite = self.matrix[np.isfinite(self.matrix)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if high <= low:
            low, high = low - 0.5, high + 0.5
        self.image.setImage(self.matrix, autoLevels=False, levels=(low, high))
        self.image.setRect(0, 0, len(self.alphas), len(self.betas))
        self.bar.setLevels((low, high))
        self.bar.axis.setLabel(sweep_tables.short_label(key))
        self.plot.setRange(xRange=(0, len(self.alphas)), yRange=(0, len(self.betas)), padding=0)

    def value_at(self, alpha: float, beta: float) -> Optional[float]:
        """The plotted value at (α, β), as the image holds it (None if blank)."""
        try:
            v = self.matrix[self.alphas.index(alpha), self.betas.index(beta)]
        except (ValueError, IndexError):
            return None
        return None if math.isnan(v) else float(v)
