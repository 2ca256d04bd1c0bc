"""One side-by-side column: which variant it shows, the streamed text and its metrics.

A column carries a generation counter (:class:`~stance_studio.core.jobs.Counter`). Choosing another variant, or a
change of the blend a "current blend" column shows, bumps it; text from a run
started under an older token is dropped, so a stale generation never paints into
the column's new variant.
"""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QComboBox, QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

from stance_studio.core.jobs import Counter
from stance_studio.core.repetition import MIN_DISTINCT
from stance_studio.core.variants import COLUMN_BASE, COLUMN_BLEND, COLUMN_SAVED, COLUMN_STANCE
from stance_studio.qt import theme

BASE, CURRENT_BLEND, STANCE, VARIANT = COLUMN_BASE, COLUMN_BLEND, COLUMN_STANCE, COLUMN_SAVED


class CompareColumn(QFrame):
    remove_requested = Signal(object)
    variant_changed = Signal()

    def __init__(self, spec: str, index: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("role", "column")
        self.setMinimumWidth(210)
        self.generation = Counter()
        self.shown_weights: tuple = ()
        self._spec = spec
        self.index = index

        self.swatch = QLabel("●")
        self.choice = QComboBox()
        self.choice.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.choice.setMinimumContentsLength(12)
        self.choice.currentIndexChanged.connect(self._on_choice)
        close = QToolButton(text="✕", toolTip="Remove this column", autoRaise=True)
        close.clicked.connect(self._on_close)
        self.text = QPlainTextEdit(readOnly=True)
        self.text.setPlaceholderText("Press Run (Ctrl+Enter) to generate.")
        self.metrics = QLabel(" ", wordWrap=True)
        self.metrics.setProperty("role", "muted")

        head = QHBoxLayout()
        head.addWidget(self.swatch)
        head.addWidget(self.choice, 1)
        head.addWidget(close)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(head)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.metrics)
        self.set_index(index)

    # Variant ------------------------------------------------------------------------------

    @property
    def spec(self) -> str:
        return self._spec

    def set_index(self, index: int) -> None:
        self.index = index
        self.swatch.setStyleSheet(f"color: {theme.series_color(index)}; font-size: 14pt;")

    def set_choices(self, choices: list[tuple[str, str]]) -> None:
        """Fill the variant menu with ``(label, spec)``; keeps the current spec."""
        self.choice.blockSignals(True)
        self.choice.clear()
        for label, spec in choices:
            self.choice.addItem(label, spec)
        index = self.choice.findData(self._spec)
        if index < 0:
            self.choice.addItem(f"{self._spec} (missing)", self._spec)
            index = self.choice.count() - 1
        self.choice.setCurrentIndex(index)
        self.choice.blockSignals(False)

    def label(self) -> str:
        return self.choice.currentText() or self._spec

    @Slot(int)
    def _on_choice(self, index: int) -> None:
        spec = self.choice.itemData(index)
        if spec is not None and spec != self._spec:
            self._spec = spec
            self.invalidate("Variant changed; press Run to generate.")
            self.variant_changed.emit()

    @Slot()
    def _on_close(self) -> None:
        self.remove_requested.emit(self)

    # Generations --------------------------------------------------------------------------

    def invalidate(self, note: str) -> None:
        """Forget the shown text: results of runs started before now are dropped."""
        self.generation.bump()
        self.text.setPlainText("")
        self.metrics.setText(note)

    def begin(self, weights: tuple) -> int:
        """Start a run for this column; returns the stamp the run must carry."""
        stamp = self.generation.bump()
        self.shown_weights = weights
        self.text.setPlainText("")
        self.metrics.setText("Generating …")
        return stamp

    def show_text(self, token: int, text: str) -> bool:
        if not self.generation.current(token):
            return False
        self.text.setPlainText(text)
        return True

    def show_metrics(self, token: int, result) -> bool:
        if not self.generation.current(token):
            return False
        self.text.setPlainText(result.text)
        identical = "identical to base" if result.identical_to_base else "differs from base"
        if result.loops:
            identical += " · repeats itself"
        reads = " · ".join(f"{name} {p:.2f}" for name, p in result.stance_probability.items())
        self.metrics.setText(
            (f"reads as: {reads}\n" if reads else "")
            + f"marker score {result.stance_score:+.2f}  (hedges {result.hedges:.1f}, boosters {result.boosters:.1f} "
            f"/100 w)\nKL to base {result.kl_to_base:.4f} · {identical} · {result.new_tokens} tokens"
        )
        self.metrics.setToolTip("Reads as: the probability, from each stance's classifier (the one behind the "
                                "stance rate), that this answer is in that stance; one answer, so a hint, not a rate "
                                "(stance-studio evaluate SPEC measures the rate over many prompts). Repeats itself: "
                                f"fewer than {MIN_DISTINCT:.0%} of the answer's word trigrams are distinct, a loop the "
                                "strict stance rate does not count. Marker score = hedges − boosters per 100 words: "
                                "it sees hedging alone. KL to base: mean per-token "
                                "KL(variant ‖ base) over this column's text.")
        return True

    def show_note(self, token: int, note: str) -> None:
        if self.generation.current(token):
            self.metrics.setText(note)
