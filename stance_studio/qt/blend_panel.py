"""The blend panel: one slider per stance (α from -1 to 2, with a number box),
applied live to the loaded model; reset to base; save the blend as a named variant.

A slider only records its stance's weight. A throttle hands the whole blend to the
session at once on the first change, then at most every ``APPLY_INTERVAL_MS`` while a
drag goes on and once more at its end; the session applies it on the model worker (a
newer request replaces a pending one), so the model follows a drag without blocking
the window.
"""

from __future__ import annotations

import json

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider
from superqt.utils import QSignalThrottler

from stance_studio.core.errors import StanceStudioError
from stance_studio.qt.library_panel import STANCE_MIME
from stance_studio.qt.session import Session

ALPHA_MIN, ALPHA_MAX = -1.0, 2.0
APPLY_INTERVAL_MS = 40


class _StanceSlider(QWidget):
    """Name, slider and zero button for one stance."""

    changed = Signal(str, float)

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.label = QLabel(name)
        self.label.setProperty("role", "heading")
        self.slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(ALPHA_MIN, ALPHA_MAX)
        self.slider.setSingleStep(0.05)
        self.slider.setDecimals(2)
        self.slider.setValue(0.0)
        self.slider.setToolTip(f"Weight α of {name}: 0 = off, 1 = as trained, negative = the opposite")
        self.slider.valueChanged.connect(self._on_value)
        self.zero = QToolButton(text="→ 0", toolTip=f"Set {name} to 0 (off)", autoRaise=True)
        self.zero.clicked.connect(self._on_zero)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 2, 0, 6)
        layout.setVerticalSpacing(0)
        layout.addWidget(self.label, 0, 0)
        layout.addWidget(self.zero, 0, 1)
        layout.addWidget(self.slider, 1, 0, 1, 2)
        layout.setColumnStretch(0, 1)

    def value(self) -> float:
        return round(float(self.slider.value()), 4)

    def set_value(self, alpha: float) -> None:
        """Show ``alpha`` without reporting it as a user change."""
        self.slider.blockSignals(True)
        self.slider.setValue(alpha)
        self.slider.blockSignals(False)

    def set_compatible(self, ok: bool, reason: str) -> None:
        self.slider.setEnabled(ok)
        self.zero.setEnabled(ok)
        self.label.setEnabled(ok)
        self.setToolTip("" if ok else reason)

    @Slot(float)
    def _on_value(self, alpha: float) -> None:
        self.changed.emit(self.name, round(float(alpha), 4))

    @Slot()
    def _on_zero(self) -> None:
        self.slider.setValue(0.0)


class BlendPanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.rows: dict[str, _StanceSlider] = {}
        self._pending: dict[str, float] = {}
        self._throttle = QSignalThrottler(parent=self)
        self._throttle.setTimeout(APPLY_INTERVAL_MS)
        self._throttle.triggered.connect(self._apply_pending)
        self.setAcceptDrops(True)

        self.rows_box = QWidget()
        self.rows_layout = QVBoxLayout(self.rows_box)
        self.rows_layout.setContentsMargins(4, 4, 4, 4)
        self.rows_layout.addStretch(1)
        scroll = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        scroll.setWidget(self.rows_box)
        self.empty = QLabel("No stances yet. Train one (Stance ▸ Train new stance…) or import a checkpoint; "
                            "drop stances from the library here.", wordWrap=True)
        self.empty.setProperty("role", "muted")

        self.status = QLabel("Base model (no stance applied).", wordWrap=True)
        self.status.setProperty("role", "muted")
        self.reset_button = QPushButton("Reset to base", clicked=self.reset)
        self.save_button = QPushButton("Save blend…", clicked=self.save_dialog)
        buttons = QHBoxLayout()
        buttons.addWidget(self.reset_button)
        buttons.addWidget(self.save_button)
        buttons.addStretch(1)

        self.variants = QListWidget()
        self.variants.setMaximumHeight(110)
        self.variants.setToolTip("Saved blends: double-click to apply. They are also side-by-side columns.")
        self.variants.itemDoubleClicked.connect(self._apply_variant_item)
        delete_variant = QPushButton("Delete saved", clicked=self.delete_selected_variant)
        apply_variant = QPushButton("Apply saved", clicked=self.apply_selected_variant)
        vrow = QHBoxLayout()
        vrow.addWidget(QLabel("Saved blends"))
        vrow.addStretch(1)
        vrow.addWidget(apply_variant)
        vrow.addWidget(delete_variant)

        layout = QVBoxLayout(self)
        layout.addWidget(self.empty)
        layout.addWidget(scroll, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addLayout(vrow)
        layout.addWidget(self.variants)

        session.catalog.changed.connect(self.rebuild)
        session.blend.changed.connect(self._show_weights)
        session.blend.applied.connect(self._on_applied)
        session.saved.changed.connect(self._fill_variants)
        session.host.model_changed.connect(self._on_model_changed)
        self.rebuild()
        self._fill_variants()

    # Rows -----------------------------------------------------------------------------

    @Slot()
    def rebuild(self) -> None:
        names = [e.name for e in self.session.entries]
        for name in list(self.rows):
            if name not in names:
                self.rows.pop(name).deleteLater()
        for index, name in enumerate(names):
            row = self.rows.get(name)
            if row is None:
                row = _StanceSlider(name)
                row.changed.connect(self._on_slider)
                self.rows[name] = row
            self.rows_layout.insertWidget(index, row)
            ok, reason = self.session.catalog.compatibility(name)
            row.set_compatible(bool(ok), reason)
            row.set_value(self.session.blend.weights.get(name, 0.0))
        self.empty.setVisible(not names)

    @Slot(object)
    def _on_model_changed(self, _base) -> None:
        self.rebuild()
        self.status.setText("Base model (no stance applied)." if _base is not None else "No model loaded.")

    @Slot(str, float)
    def _on_slider(self, name: str, alpha: float) -> None:
        self._pending[name] = alpha
        self._throttle.throttle()

    @Slot()
    def _apply_pending(self) -> None:
        if not self._pending:
            return
        weights = dict(self.session.blend.weights)
        weights.update(self._pending)
        self._pending.clear()
        if self.session.base is None:
            self.status.setText("Load a model to apply stances.")
            return
        busy = self.session.runner.current
        if busy is not None and busy.key != "blend" and not busy.yields:
            self.status.setText(f"Will apply after: {busy.title} …")
        self.session.blend.set_blend(weights)

    def flush(self) -> None:
        """Apply a pending slider change now (tests, before a generation)."""
        self._throttle.cancel()
        self._apply_pending()

    @Slot(dict)
    def _show_weights(self, weights: dict) -> None:
        for name, row in self.rows.items():
            if name not in self._pending:
                row.set_value(weights.get(name, 0.0))

    @Slot(dict, float)
    def _on_applied(self, weights: dict, seconds: float) -> None:
        if weights != self.session.blend.weights:
            return  # a newer request is on its way
        if not weights:
            self.status.setText("Base model (no stance applied).")
        else:
            spec = ", ".join(f"{n} = {a:+.2f}" for n, a in sorted(weights.items()))
            self.status.setText(f"Applied {spec}  ({seconds * 1000:.0f} ms)")

    @Slot()
    def reset(self) -> None:
        self._throttle.cancel()
        self._pending.clear()
        self.session.blend.set_blend({})

    def set_weight(self, name: str, alpha: float) -> None:
        row = self.rows.get(name)
        if row is not None:
            row.slider.setValue(alpha)

    # Drops ------------------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasFormat(STANCE_MIME):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        try:
            names = json.loads(bytes(event.mimeData().data(STANCE_MIME)).decode())
        except ValueError:
            return
        for name in names:
            self.add_stance(name)
        event.acceptProposedAction()

    @Slot(str)
    def add_stance(self, name: str) -> None:
        """Turn a stance on at α = 1 (if it is off) and show its slider."""
        row = self.rows.get(name)
        if row is None or not row.slider.isEnabled():
            return
        if row.value() == 0.0:
            row.slider.setValue(1.0)
        row.slider.setFocus()

    # Saved variants ------------------------------------------------------------------------

    @Slot()
    def _fill_variants(self) -> None:
        self.variants.clear()
        for variant in self.session.saved.all():
            item = QListWidgetItem(f"{variant.label}    ({variant.spec})")
            item.setData(Qt.ItemDataRole.UserRole, variant.label)
            self.variants.addItem(item)

    @Slot()
    def save_dialog(self) -> None:
        if not self.session.blend.weights:
            QMessageBox.information(self, "Save blend", "Move at least one slider away from 0 first.")
            return
        label, ok = QInputDialog.getText(self, "Save blend", "Name for this blend:")
        if ok:
            try:
                self.session.saved.save(label, self.session.blend.weights)
            except StanceStudioError as exc:
                QMessageBox.warning(self, "Could not save the blend", str(exc))

    def _selected_variant(self):
        item = self.variants.currentItem()
        label = item.data(Qt.ItemDataRole.UserRole) if item else None
        return next((v for v in self.session.saved.all() if v.label == label), None)

    @Slot()
    def apply_selected_variant(self) -> None:
        variant = self._selected_variant()
        if variant is None:
            return
        missing = [n for n, _ in variant.weights if not self.session.catalog.compatibility(n)[0]]
        if missing:
            QMessageBox.warning(self, "Cannot apply blend",
                                f"{variant.label} uses stances that are missing or do not fit the loaded model: "
                                + ", ".join(missing))
            return
        self._pending.clear()
        self.session.blend.set_blend(dict(variant.weights))

    @Slot(QListWidgetItem)
    def _apply_variant_item(self, _item) -> None:
        self.apply_selected_variant()

    @Slot()
    def delete_selected_variant(self) -> None:
        variant = self._selected_variant()
        if variant is not None:
            self.session.saved.delete(variant.label)
