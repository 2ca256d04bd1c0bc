"""Plot building blocks: bars that report hover and click, a live loss curve, and
PNG/SVG export of any pyqtgraph plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from stance_studio.qt import theme


class ClickableBars(pg.BarGraphItem):
    """Bars with ``hovered(index)`` and ``clicked(index)``; ``index`` is the bar's
    position in the arrays given to :meth:`set_bars` (-1 when leaving all bars).

    pyqtgraph's BarGraphItem has no click signal, so hover and click are hit-tested
    against the bar rectangles here.
    """

    hovered = Signal(int)
    clicked = Signal(int)

    def __init__(self, **opts) -> None:
        super().__init__(x0=[], y0=[], width=[], height=[], **opts)
        self.setAcceptHoverEvents(True)
        self._rects = np.zeros((0, 4))
        self._hover = -1

    def set_bars(self, x0, y0, width, height, brushes) -> None:
        x0, y0, width, height = (np.asarray(a, dtype=float) for a in (x0, y0, width, height))
        self._rects = np.stack([x0, np.minimum(y0, y0 + height), x0 + width, np.maximum(y0, y0 + height)], axis=1) \
            if x0.size else np.zeros((0, 4))
        self.setOpts(x0=x0, y0=y0, width=width, height=height, brushes=brushes, pen=pg.mkPen(None))

    def bar_at(self, x: float, y: float) -> int:
        if not len(self._rects):
            return -1
        r = self._rects
        across = (x >= r[:, 0]) & (x <= r[:, 2])
        hits = np.nonzero(across & (y >= r[:, 1]) & (y <= r[:, 3]))[0]
        if not hits.size:
            # Very small bars are still hit anywhere between 0 and their top (but a
            # segment of a stack never hides the one below it).
            hits = np.nonzero(across & (y >= np.minimum(r[:, 1], 0)) & (y <= np.maximum(r[:, 3], 0)))[0]
        return int(hits[-1]) if hits.size else -1

    def hoverEvent(self, event) -> None:
        index = -1 if event.isExit() else self.bar_at(event.pos().x(), event.pos().y())
        if index != self._hover:
            self._hover = index
            self.hovered.emit(index)

    def mouseClickEvent(self, event) -> None:
        index = self.bar_at(event.pos().x(), event.pos().y())
        if index >= 0:
            event.accept()
            self.clicked.emit(index)


class LossPlot(pg.PlotWidget):
    """Training loss against step, updated in place; skipped steps are marked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setLabel("bottom", "step")
        self.setLabel("left", "loss")
        self.showGrid(x=True, y=True, alpha=0.2)
        self.getPlotItem().setMenuEnabled(False)
        c = theme.series_color(0)
        self.curve = self.plot([], [], pen=pg.mkPen(c, width=2), symbol="o", symbolSize=4, symbolBrush=c, symbolPen=None)
        self.skipped = pg.ScatterPlotItem(symbol="x", size=10)
        self.addItem(self.skipped)
        self.restyle()
        self.steps: list[int] = []
        self.losses: list[float] = []
        self._skipped: list[int] = []

    def restyle(self) -> None:
        """Colours that come from the theme (the axes and background: theme.style_plot)."""
        self.skipped.setPen(pg.mkPen(theme.colors()["bad"], width=2))

    def clear_points(self) -> None:
        self.steps, self.losses, self._skipped = [], [], []
        self._redraw()

    def set_losses(self, losses: list) -> None:
        """A recorded curve, one loss per step; None (or non-finite) marks a skipped step."""
        self.steps = list(range(1, len(losses) + 1))
        self.losses = [float(v) if v is not None else math.nan for v in losses]
        self._skipped = [step for step, v in zip(self.steps, self.losses) if not math.isfinite(v)]
        self._redraw()

    def add_point(self, step: int, loss: Optional[float], skipped: bool = False) -> None:
        if skipped or loss is None or not math.isfinite(loss):
            self._skipped.append(step)
        else:
            self.steps.append(step)
            self.losses.append(float(loss))
        self._redraw()

    def _redraw(self) -> None:
        self.curve.setData(self.steps, self.losses, connect="finite")
        finite = [v for v in self.losses if math.isfinite(v)]
        level = min(finite) if finite else 0.0
        self.skipped.setData([float(s) for s in self._skipped], [level] * len(self._skipped))


def export_plot(item, parent: QWidget, name: str = "plot") -> Optional[str]:
    """Ask for a file and export ``item`` (a PlotItem or GraphicsLayout) as PNG or SVG."""
    path, chosen = QFileDialog.getSaveFileName(parent, "Export plot", f"{name}.png", "PNG image (*.png);;SVG drawing (*.svg)")
    if not path:
        return None
    svg = chosen.startswith("SVG") or path.lower().endswith(".svg")
    if svg and not path.lower().endswith(".svg"):
        path += ".svg"
    elif not svg and not path.lower().endswith(".png"):
        path += ".png"
    try:
        if svg:
            write_svg(item, path)
        else:
            from pyqtgraph.exporters import ImageExporter

            exporter = ImageExporter(item)
            exporter.parameters()["width"] = max(int(item.sceneBoundingRect().width()) * 2, 800)
            exporter.export(path)
    except (OSError, ValueError, RuntimeError) as exc:
        QMessageBox.warning(parent, "Could not export the plot", f"Could not write {path}: {exc}")
        return None
    return path


def write_svg(item, path: str) -> None:
    """Render ``item``'s part of its scene into an SVG file.

    pyqtgraph's SVGExporter cannot parse the path syntax Qt 6.12's SVG generator
    writes (it raises ValueError), so the scene is rendered through QSvgGenerator.
    """
    from PySide6.QtCore import QRectF, QSize
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    source = item.sceneBoundingRect()
    generator = QSvgGenerator()
    generator.setFileName(path)
    generator.setSize(QSize(int(source.width()), int(source.height())))
    generator.setViewBox(QRectF(0, 0, source.width(), source.height()))
    generator.setTitle("Stance Studio plot")
    painter = QPainter(generator)
    try:
        item.scene().render(painter, QRectF(0, 0, source.width(), source.height()), source)
    finally:
        painter.end()
    if not Path(path).is_file():
        raise OSError(f"{path} was not written")
