"""The decoding knobs of the side-by-side panel (new tokens, greedy or sampling,
temperature, top-p, seed): they start from the settings and are remembered on Run."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QCheckBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSpinBox, QWidget

from stance_studio.core.generation import GenerationSettings
from stance_studio.qt.settings import Settings


class DecodingKnobs(QWidget):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.max_tokens = QSpinBox(minimum=1, maximum=2048, value=settings.get("compare/max_new_tokens"))
        self.greedy = QCheckBox("Greedy", checked=settings.get("compare/greedy"))
        self.greedy.setToolTip("Greedy decoding is deterministic; untick to sample with a fixed seed.")
        self.temperature = QDoubleSpinBox(minimum=0.05, maximum=3.0, singleStep=0.05, value=settings.get("compare/temperature"))
        self.top_p = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.05, value=settings.get("compare/top_p"))
        self.seed = QSpinBox(minimum=0, maximum=999_999, value=min(999_999, settings.get("compare/seed")))
        self.seed.setToolTip("Seed of the sampler; the same seed gives the same samples.")
        self.greedy.toggled.connect(self._on_greedy)
        self._on_greedy(self.greedy.isChecked())

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for label, widget, tip in (("Tokens", self.max_tokens, "Most new tokens per column"), (None, self.greedy, None),
                                   ("Temp.", self.temperature, "Sampling temperature"),
                                   ("Top-p", self.top_p, "Nucleus sampling: keep the most likely tokens up to this mass"),
                                   ("Seed", self.seed, None)):
            if label:
                caption = QLabel(label, toolTip=tip or widget.toolTip())
                caption.setBuddy(widget)
                layout.addWidget(caption)
            if tip:
                widget.setToolTip(tip)
            layout.addWidget(widget)
        layout.addStretch(1)

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_tokens.value(), greedy=self.greedy.isChecked(),
                                  temperature=self.temperature.value(), top_p=self.top_p.value(), seed=self.seed.value())

    def remember(self) -> None:
        s = self.settings
        s.set("compare/max_new_tokens", self.max_tokens.value())
        s.set("compare/greedy", self.greedy.isChecked())
        s.set("compare/temperature", self.temperature.value())
        s.set("compare/top_p", self.top_p.value())
        s.set("compare/seed", self.seed.value())

    @Slot(bool)
    def _on_greedy(self, greedy: bool) -> None:
        for widget in (self.temperature, self.top_p, self.seed):
            widget.setEnabled(not greedy)
