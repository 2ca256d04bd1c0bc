"""The plots dock: per-layer weight changes, training loss curves, size against
retention for every stance in the library, and the interference of two stances.
It follows the library selection."""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QTabWidget, QVBoxLayout, QWidget

from stance_studio.qt import theme
from stance_studio.qt.kinds_view import KindsView
from stance_studio.qt.interference_view import InterferenceView
from stance_studio.qt.layer_plot import LayerChangeView
from stance_studio.qt.plots import LossPlot, export_plot
from stance_studio.qt.session import Session


class LossView(QWidget):
    """The recorded loss curve of the selected stance, or the live one while training."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.plot = LossPlot()
        self.title = QLabel("Select a stance in the library to see its training loss.", wordWrap=True)
        self.title.setProperty("role", "muted")
        self.live = False
        export = QPushButton("Export…", clicked=lambda: export_plot(self.plot.getPlotItem(), self, "loss"))
        row = QHBoxLayout()
        row.addWidget(self.title, 1)
        row.addWidget(export)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.plot, 1)

    @Slot(list)
    def show_stances(self, names: list) -> None:
        if self.live or len(names) != 1:
            return
        entry = self.session.entry(names[0])
        if entry is None:
            return
        training = entry.metadata.get("training", {})
        losses = training.get("loss") or training.get("losses") or []
        self.plot.set_losses(losses)  # a skipped step is recorded as a loss of None
        self.plot.enableAutoRange()
        self.title.setText(f"{entry.name}: {len(losses)} steps, {training.get('method', '?')} training"
                           if losses else f"{entry.name} has no recorded loss curve.")

    def start_live(self, name: str) -> None:
        self.live = True
        self.plot.clear_points()
        self.title.setText(f"Training {name} …")

    def add_point(self, step: int, loss, skipped: bool) -> None:
        self.plot.add_point(step, loss, skipped)

    def stop_live(self, text: str) -> None:
        self.live = False
        self.title.setText(text)


class RetentionView(QWidget):
    """Each stance as a point: stored bytes (log scale) against retention."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.plot = pg.PlotWidget()
        self.plot.setLogMode(x=True)
        self.plot.setLabel("bottom", "stored size (bytes)")
        self.plot.setLabel("left", "retention")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.getPlotItem().setMenuEnabled(False)
        self.scatter = pg.ScatterPlotItem(size=11, hoverable=True, tip=self._tip)
        self.plot.addItem(self.scatter)
        self.labels: list[pg.TextItem] = []
        self.note = QLabel(" ", wordWrap=True)
        self.note.setProperty("role", "muted")
        export = QPushButton("Export…", clicked=lambda: export_plot(self.plot.getPlotItem(), self, "size-vs-retention"))
        row = QHBoxLayout()
        row.addWidget(self.note, 1)
        row.addWidget(export)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.plot, 1)
        session.catalog.changed.connect(self.refresh)
        self.refresh()

    @staticmethod
    def _tip(x, y, data) -> str:
        return f"{data}\n{10 ** x / 1e6:.2f} MB, retention {y:.0%}"

    @Slot()
    def refresh(self) -> None:
        for label in self.labels:
            self.plot.removeItem(label)
        self.labels = []
        points = [(e.name, e.bytes, e.retention, e.method) for e in self.session.entries
                  if e.retention is not None and math.isfinite(e.retention) and e.bytes > 0]
        methods = sorted({p[3] for p in points})
        spots = [{"pos": (math.log10(b), r), "data": f"{n} ({m})",
                  "brush": pg.mkBrush(theme.series_color(methods.index(m)))} for n, b, r, m in points]
        self.scatter.setData(spots)
        for n, b, r, _ in points:
            label = pg.TextItem(n, anchor=(0, 1), color=theme.colors()["plot_fg"])
            label.setPos(math.log10(b), r)
            self.plot.addItem(label)
            self.labels.append(label)
        missing = len(self.session.entries) - len(points)
        legend = ", ".join(f"{m}: {theme.series_color(i)}" for i, m in enumerate(methods))
        self.note.setText(f"{len(points)} stances with a measured retention" + (f" ({missing} without)" if missing else "")
                          + (f". Colours by method — {legend}" if methods else "."))


class PlotsPanel(QTabWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layers = LayerChangeView(session)
        self.loss = LossView(session)
        self.retention = RetentionView(session)
        self.interference = InterferenceView(session)
        self.addTab(self.layers, "Layer changes")
        self.addTab(self.loss, "Training loss")
        self.addTab(self.retention, "Size vs retention")
        self.kinds = KindsView(session)
        self.addTab(self.kinds, "Weights vs steering")
        self.addTab(self.interference, "Interference")

    @Slot(str)
    def show_changes(self, name: str) -> None:
        self.setCurrentWidget(self.layers)
        self.layers.show_stance(name)

    @Slot(list)
    def show_stances(self, names: list) -> None:
        """Follow the library selection: its loss curve, layer changes and, for two
        stances, their interference."""
        self.loss.show_stances(names)
        self.layers.show_stances(names)
        self.kinds.show_stances(names)
        self.interference.show_stances(names)

    def restyle(self) -> None:
        """Redraw the contents that take colours from the theme (theme.apply_theme
        restyles every plot's background and axes)."""
        self.layers.restyle()
        self.loss.plot.restyle()
        self.retention.refresh()
        self.kinds._draw()
        self.interference.restyle()
