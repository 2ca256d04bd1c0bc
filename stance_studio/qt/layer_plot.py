"""Where stances change the model: per-layer weight-change bars for the stances
selected in the library. One stance: one colour per module kind. Several: one colour
per stance, side by side in each layer, the kinds in lighter shades. Kinds stacked
or grouped, metric selectable, hover for the module, click a bar for that module's
singular-value spectrum and energy curve."""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Optional

import pyqtgraph as pg
from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QColor, QCursor
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

from stance_studio.core.jobs import Counter
from stance_studio.qt import theme
from stance_studio.qt.plots import ClickableBars, export_plot
from stance_studio.qt.session import Session
from stance_studio.qt.spectrum_view import SpectrumView

METRIC_LABELS = {
    "relative_change": "relative change ‖Δ‖ / ‖W₀‖",
    "abs_change": "absolute change ‖Δ‖",
    "norm_change": "norm change ‖W₀+Δ‖ − ‖W₀‖",
}
AXIS_LABELS = {"relative_change": "‖Δ‖ / ‖W₀‖", "abs_change": "‖Δ‖", "norm_change": "‖W₀+Δ‖ − ‖W₀‖"}
ANALYSIS_KEY = "layer-analysis"  # quick selection changes queue at most one analysis
_CACHE_SIZE = 32
_BUTTON_CHARS = 18


@dataclass
class Bar:
    kind: str
    layer: Optional[int]
    module: object  # ModuleChange
    stance: str = ""


def layout_bars(changes, metric: str, kinds: list[str], num_layers: int, stacked: bool,
                slot: float = 0.8, offset: float = 0.0, stance: str = ""):
    """Bar rectangles for one stance's ``changes``: returns (bars, x0, y0, width, height).

    x = layer index; parameters outside the blocks (embeddings, final norm) sit at
    x = ``num_layers`` ("other"). One bar per (kind, layer): the largest module there.
    A layer's bars fill ``slot`` wide, starting ``offset`` right of x − 0.4.
    """
    best: dict[tuple[str, int], object] = {}
    for m in changes:
        if m.kind not in kinds or not math.isfinite(getattr(m, metric)):
            continue  # e.g. the relative change of a bias that was all zeros (GPT-2, Qwen2)
        x = m.layer if m.layer is not None else num_layers
        key = (m.kind, x)
        if key not in best or abs(getattr(m, metric)) > abs(getattr(best[key], metric)):
            best[key] = m
    bars, x0, y0, width, height = [], [], [], [], []
    stack_pos: dict[int, float] = {}
    stack_neg: dict[int, float] = {}
    for k_index, kind in enumerate(kinds):
        for (kind_, x), m in sorted(best.items(), key=lambda item: item[0][1]):
            if kind_ != kind:
                continue
            value = float(getattr(m, metric))
            left = x - 0.4 + offset
            if stacked:
                stack = stack_pos if value >= 0 else stack_neg
                base = stack.get(x, 0.0)
                stack[x] = base + value
                x0.append(left)
                width.append(slot)
                y0.append(base)
            else:
                w = slot / max(len(kinds), 1)
                x0.append(left + k_index * w)
                width.append(w)
                y0.append(0.0)
            height.append(value)
            bars.append(Bar(kind, m.layer, m, stance))
    return bars, x0, y0, width, height


def layout_stances(per_stance: list[tuple[str, list]], metric: str, kinds: list[str], num_layers: int, stacked: bool):
    """Bars of several stances side by side in each layer; ``per_stance`` holds
    (name, changes) pairs. Returns what :func:`layout_bars` returns."""
    out: tuple[list, ...] = ([], [], [], [], [])
    slot = 0.8 / max(len(per_stance), 1)
    for s, (name, changes) in enumerate(per_stance):
        parts = layout_bars(changes, metric, kinds, num_layers, stacked, slot=slot, offset=s * slot, stance=name)
        for acc, part in zip(out, parts):
            acc.extend(part)
    return out


def bar_colours(bars: list[Bar], kinds: list[str], stances: list[str]) -> list[QColor]:
    """One colour per kind for a single stance; for several, one colour per stance
    with each kind a lighter shade of it."""
    if len(stances) <= 1:
        return [QColor(theme.series_color(kinds.index(b.kind))) for b in bars]
    step = 80 / max(len(kinds) - 1, 1)
    return [QColor(theme.series_color(stances.index(b.stance))).lighter(100 + int(step * kinds.index(b.kind)))
            for b in bars]


class LayerChangeView(QWidget):
    """The per-layer bars of the chosen stances plus a spectrum pane for the clicked module."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.stances: list[str] = []
        self.changes: dict[str, list] = {}  # stance -> ModuleChange list, for the bars shown
        self.bars: list[Bar] = []
        self.hover_text = ""
        self._model_generation = Counter()  # analyses made on an older model are stale
        self._analysed: dict[tuple, list] = {}  # (model generation, stance file facts) -> changes
        self._analysis = None  # the latest analysis Job and the keys it computes
        self._analysis_keys: set = set()

        self.stances_button = QToolButton(text="Stances", popupMode=QToolButton.ToolButtonPopupMode.InstantPopup,
                                          toolTip="Stances to compare; follows the selection in the library")
        self.stances_menu = QMenu(self.stances_button)
        self.stances_button.setMenu(self.stances_menu)
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
        export = QPushButton("Export…", toolTip="Save the bars or the spectrum as PNG or SVG")
        export_menu = QMenu(export)
        export_menu.addAction("Layer bars…", lambda: export_plot(self.plot.getPlotItem(), self, "layer-changes"))
        export_menu.addAction("Spectrum…", lambda: self.spectrum.export())
        export.setMenu(export_menu)
        self.note = QLabel(" ", wordWrap=True)
        self.note.setProperty("role", "muted")

        self.plot = pg.PlotWidget()
        self.plot.showGrid(y=True, alpha=0.2)
        self.plot.setLabel("bottom", "layer")
        self.plot.getAxis("left").enableAutoSIPrefix(False)  # ratios: "×0.001" scaling misleads
        self.plot.getPlotItem().setMenuEnabled(False)
        self.legend = QLabel(" ", wordWrap=True)
        self.bar_item = ClickableBars()
        self.bar_item.hovered.connect(self._on_hover)
        self.bar_item.clicked.connect(self.show_spectrum)
        self.plot.addItem(self.bar_item)

        self.spectrum = SpectrumView(self.session)
        self.spectrum_title, self.sv_plot, self.energy_plot = self.spectrum.title, self.spectrum.sv_plot, self.spectrum.energy_plot

        controls = QHBoxLayout()
        for widget in (self.stances_button, self.metric_box, self.mode_box, self.kinds_button):
            controls.addWidget(widget)
        controls.addStretch(1)
        controls.addWidget(export)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.plot)
        split.addWidget(self.spectrum)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.legend)
        layout.addWidget(split, 1)
        layout.addWidget(self.note)

        session.catalog.changed.connect(self._fill_stances)
        session.host.model_changed.connect(self._on_model_changed)
        self._fill_stances()

    @property
    def stance(self) -> Optional[str]:
        """The first stance shown (the only one, usually)."""
        return self.stances[0] if self.stances else None

    # Choosing ------------------------------------------------------------------------

    @Slot()
    def _fill_stances(self) -> None:
        names = self.session.catalog.compatible_names()
        self.stances_menu.clear()
        for name in names:
            action = self.stances_menu.addAction(name)
            action.setCheckable(True)
            action.toggled.connect(self._on_menu_toggled)
        kept = [n for n in self.stances if n in names] or names[:1]
        self._set_stances(kept)

    @Slot(object)
    def _on_model_changed(self, _base) -> None:
        self._model_generation.bump()
        self._analysed.clear()
        self.changes = {}
        self.redraw()
        self.spectrum.clear()

    def show_stance(self, name: str) -> None:
        self.show_stances([name])

    @Slot(list)
    def show_stances(self, names: list) -> None:
        """Show the stances selected in the library (those that fit the loaded model);
        an empty selection keeps what is shown."""
        fits = [n for n in names if self.session.catalog.compatibility(n)[0]]
        if fits:
            self._set_stances(fits)
        elif names and self.session.base is not None:
            self.note.setText(f"{', '.join(names)} cannot be measured against the loaded model (made on another base).")

    @Slot()
    def _on_menu_toggled(self) -> None:
        self._set_stances([a.text() for a in self.stances_menu.actions() if a.isChecked()])

    def _key(self, name: str) -> Optional[tuple]:
        entry = self.session.entry(name)
        if entry is None or self.session.base is None:
            return None
        return self._model_generation.value, name, str(entry.path), entry.created, entry.bytes

    def _set_stances(self, names: list[str]) -> None:
        self.stances = list(names)
        for action in self.stances_menu.actions():
            action.blockSignals(True)
            action.setChecked(action.text() in names)
            action.blockSignals(False)
        label = ", ".join(names) or "Stances"
        self.stances_button.setText(label if len(label) <= _BUTTON_CHARS else label[: _BUTTON_CHARS - 1] + "…")
        self.stances_button.setToolTip(f"Shown: {label}\nStances to compare; follows the selection in the library")
        session = self.session
        if not names or session.base is None:
            self.changes = {}
            self.redraw()
            self.note.setText("Load a model and train or import a stance to see where it changes the weights."
                              if session.base is None or not session.catalog.compatible_names()
                              else "Select stances in the library (or under Stances) to see where they change the weights.")
            return
        keys = {n: self._key(n) for n in names}
        missing = [n for n in names if keys[n] not in self._analysed]
        if not missing:
            self._show_analysed()
            return
        self.note.setText(f"Analysing {', '.join(missing)} …")
        if self._analysis is not None and self._analysis.is_active and {keys[n] for n in missing} <= self._analysis_keys:
            return  # already on its way
        base, blender = session.base, session.blend.blender

        def job(progress, cancel):
            from stance_studio.core.analysis import analyse
            from stance_studio.core.deltas import LowRankDelta

            out = {}
            for name in missing:
                cancel.raise_if_set("analysis")
                ckpt = session.catalog.checkpoint(name)
                cheap = all(isinstance(d, LowRankDelta) for d in ckpt.deltas.values())
                out[keys[name]] = analyse(ckpt.deltas, base, original=blender.original, spectra=cheap)
            return out

        self._analysis = session.runner.submit(job, f"Analysing {', '.join(missing)}", key=ANALYSIS_KEY,
                                              interactive=True)
        self._analysis_keys = {keys[n] for n in missing}
        self._analysis.finished.connect(self._on_analysed)
        self._analysis.failed.connect(self._on_failed)

    @Slot(object)
    def _on_analysed(self, analysed: dict) -> None:
        # Kept even if the selection moved on (a later one may reuse it); drawn only
        # when every stance now chosen is analysed: stale results never paint.
        self._analysed.update(analysed)
        while len(self._analysed) > _CACHE_SIZE:
            self._analysed.pop(next(iter(self._analysed)))
        if self.stances and all(self._key(n) in self._analysed for n in self.stances):
            self._show_analysed()

    def _show_analysed(self) -> None:
        self.changes = {n: self._analysed[self._key(n)] for n in self.stances}
        hidden = {a.text() for a in self.kinds_menu.actions() if not a.isChecked()}
        self.kinds_menu.clear()
        for kind in sorted({m.kind for changes in self.changes.values() for m in changes}):
            action = self.kinds_menu.addAction(kind)
            action.setCheckable(True)
            action.setChecked(kind not in hidden)
            action.toggled.connect(self.redraw)
        facts = "; ".join(f"{n}: {len(c)} parameters ({sum(m.numel for m in c):,} values)" for n, c in self.changes.items())
        self.note.setText(f"{facts}. Hover a bar for its module; click it for the spectrum.")
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
        shown = [n for n in self.stances if n in self.changes]
        self.bars, x0, y0, width, height = layout_stances([(n, self.changes[n]) for n in shown], metric, kinds,
                                                          num_layers, self.mode_box.currentText() == "stacked")
        self.bar_item.set_bars(x0, y0, width, height, [pg.mkBrush(c) for c in bar_colours(self.bars, kinds, shown)])
        self.legend.setText(self._legend(kinds, shown))
        self.plot.setLabel("left", AXIS_LABELS[metric])
        ticks = [(i, str(i)) for i in range(0, num_layers, max(1, num_layers // 15))]
        if any(b.layer is None for b in self.bars):
            ticks.append((num_layers, "other"))
        self.plot.getAxis("bottom").setTicks([ticks])
        if self.bars:
            self.plot.enableAutoRange()

    @staticmethod
    def _legend(kinds: list[str], stances: list[str]) -> str:
        def swatch(colour: str, text: str) -> str:
            return f'<span style="color:{colour}">■</span> {text}'

        if len(stances) <= 1:
            return "&nbsp;&nbsp;".join(swatch(theme.series_color(i), k) for i, k in enumerate(kinds))
        names = "&nbsp;&nbsp;".join(swatch(theme.series_color(i), s) for i, s in enumerate(stances))
        return f"{names}&nbsp;&nbsp;— module kinds, dark to light: {', '.join(kinds)}" if kinds else names

    def tooltip_for(self, index: int) -> str:
        m = self.bars[index].module
        metric = self.metric_box.currentData()
        rank = f"\nrank for 90 % energy: {m.rank90}" if m.rank90 is not None else ""
        return (f"{self.bars[index].stance}: {m.name}\nshape {tuple(m.shape)}\n{METRIC_LABELS[metric]}: "
                f"{getattr(m, metric):.4g}{rank}")

    @Slot(int)
    def _on_hover(self, index: int) -> None:
        if index < 0 or index >= len(self.bars):
            self.hover_text = ""
            QToolTip.hideText()
            return
        self.hover_text = self.tooltip_for(index)
        QToolTip.showText(QCursor.pos(), self.hover_text, self.plot)

    @Slot(int)
    def show_spectrum(self, index: int) -> None:
        if 0 <= index < len(self.bars):
            self.spectrum.show_module(self.bars[index].stance, self.bars[index].module.name)

    def restyle(self) -> None:
        """Redraw what takes its colours from the theme."""
        self.redraw()
        self.spectrum.restyle()
