"""The base-model panel: choose the bundled model, a folder or a GGUF file (recent
ones remembered), load it in the background, and see what is loaded. One load at a
time: Load and Return in the model box do nothing while one is under way."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from stance_studio.core.devices import DEVICES, DTYPE_CHOICES
from stance_studio.qt.formatting import human_bytes, human_count
from stance_studio.qt.session import Session
from stance_studio.qt.workers import Job

BUNDLED_LABEL = "Bundled: SmolLM2-135M-Instruct"


class ModelPanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self._job: Job | None = None

        self.spec_box = QComboBox(editable=True)
        self.spec_box.setToolTip("The bundled model, a model folder (config.json), a .gguf file, or a hub id.")
        self.spec_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.spec_box.lineEdit().returnPressed.connect(self.load_selected)
        browse = QToolButton(text="…", toolTip="Choose a model folder or a GGUF file")
        menu = QMenu(browse)
        menu.addAction("Model folder…", self.browse_folder)
        menu.addAction("GGUF file…", self.browse_gguf)
        browse.setMenu(menu)
        browse.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.device_box = QComboBox(toolTip="Where the model runs: auto picks a CUDA GPU, then Apple's MPS, "
                                    "then the CPU")
        self.device_box.addItems(list(DEVICES))
        self.dtype_box = QComboBox(toolTip="Compute precision: auto is bfloat16 on GPUs that support it, float32 "
                                   "elsewhere. Stance deltas are always float32.")
        self.dtype_box.addItems(list(DTYPE_CHOICES))
        self.spec_box.currentIndexChanged.connect(self._show_placement)
        self.trust_box = QCheckBox("Trust remote code")
        self.trust_box.setToolTip("Run the model folder's own Python code. Only for models you trust.")
        self.on_start_box = QCheckBox("Load at start", checked=session.settings.get("model/load_on_start"))
        self.on_start_box.setToolTip("Load the last model when Stance Studio starts.")
        self.on_start_box.toggled.connect(self._on_load_on_start)
        self.load_button = QPushButton("Load", clicked=self.load_selected)
        self.load_button.setProperty("role", "primary")
        self.cancel_button = QPushButton("Cancel", clicked=self.cancel)
        self.cancel_button.setVisible(False)

        self.progress = QProgressBar(textVisible=True)
        self.progress.setVisible(False)
        self.status = QLabel("No model loaded.", wordWrap=True)
        self.status.setProperty("role", "muted")

        self.info = QFormLayout()
        self.info.setContentsMargins(0, 4, 0, 0)
        self.fields = {key: QLabel("–", textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
                       for key in ("Model", "Architecture", "Layers", "Parameters", "Weights", "Runs on", "Loaded in")}
        for key, label in self.fields.items():
            label.setWordWrap(True)
            self.info.addRow(key, label)

        row = QHBoxLayout()
        row.addWidget(self.spec_box, 1)
        row.addWidget(browse)
        placement = QHBoxLayout()
        placement.addWidget(QLabel("Device"))
        placement.addWidget(self.device_box, 1)
        placement.addWidget(QLabel("Precision"))
        placement.addWidget(self.dtype_box, 1)
        checks = QVBoxLayout()
        checks.addWidget(self.trust_box)
        checks.addWidget(self.on_start_box)
        buttons = QHBoxLayout()
        buttons.addLayout(checks)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.load_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(placement)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(self.info)
        layout.addStretch(1)

        self._fill_recent()
        session.host.model_loading.connect(self._on_loading)
        session.host.model_changed.connect(self._on_model_changed)

    # Choosing -----------------------------------------------------------------------

    def _fill_recent(self) -> None:
        self.spec_box.clear()
        self.spec_box.addItem(BUNDLED_LABEL, "bundled")
        for spec in self.session.settings.recent_models():
            if spec not in ("bundled", ""):
                self.spec_box.addItem(spec, spec)
        last = self.session.settings.get("model/last")
        index = self.spec_box.findData(last)
        self.spec_box.setCurrentIndex(max(index, 0))
        self._show_placement()

    @Slot()
    def _show_placement(self) -> None:
        """Show the device and precision remembered for the chosen model."""
        device, dtype = self.session.settings.placement(self.selected_spec())
        self.device_box.setCurrentText(device if device in DEVICES else "auto")
        self.dtype_box.setCurrentText(dtype if dtype in DTYPE_CHOICES else "auto")

    def selected_spec(self) -> str:
        text = self.spec_box.currentText().strip()
        if text == BUNDLED_LABEL or not text:
            return "bundled"
        return text

    def set_spec(self, spec: str) -> None:
        index = self.spec_box.findData(spec)
        if index < 0:
            self.spec_box.insertItem(1, spec, spec)
            index = 1
        self.spec_box.setCurrentIndex(index)

    @Slot()
    def browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder (with config.json)")
        if folder:
            self.set_spec(folder)

    @Slot()
    def browse_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model file", str(Path.home()), "GGUF models (*.gguf)")
        if path:
            self.set_spec(path)

    # Loading ------------------------------------------------------------------------

    @Slot(bool)
    def _on_load_on_start(self, on: bool) -> None:
        self.session.settings.set("model/load_on_start", on)

    @Slot()
    def load_selected(self) -> Optional[Job]:
        if self._job is not None:
            return None  # Return in the model box while Load is disabled
        return self.load(self.selected_spec())

    def load(self, spec: str) -> Optional[Job]:
        """Start loading ``spec``; None if a load is already under way."""
        device, dtype = self.device_box.currentText(), self.dtype_box.currentText()
        self.session.settings.remember_placement(spec, device, dtype)
        return self.session.host.load_model(spec, trust_remote_code=self.trust_box.isChecked(), device=device, dtype=dtype)

    @Slot()
    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()

    @Slot(str, object)
    def _on_loading(self, spec: str, job: Job) -> None:
        self._job = job
        job.report_to(self)
        self.load_button.setEnabled(False)
        self.cancel_button.setVisible(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"Loading {spec} …")

    @Slot(list)
    def _on_progress(self, reports: list) -> None:
        last = reports[-1]
        if last.total:
            self.progress.setRange(0, last.total)
            self.progress.setValue(last.done)
        if last.message:
            self.status.setText(last.message)

    @Slot()
    def _on_ended(self) -> None:
        self.load_button.setEnabled(True)
        self.cancel_button.setVisible(False)
        self.progress.setVisible(False)
        self._job = None

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.status.setText(f"Not loaded: {message}")

    @Slot()
    def _on_cancelled(self) -> None:
        self.status.setText("Loading cancelled.")

    @Slot(object)
    def _on_model_changed(self, base) -> None:
        if base is None:
            self.status.setText("No model loaded.")
            for label in self.fields.values():
                label.setText("–")
            return
        self.status.setText("Ready.")
        self.fields["Model"].setText(base.model_id)
        self.fields["Model"].setToolTip(str(base.source))
        self.fields["Architecture"].setText(base.architecture)
        self.fields["Layers"].setText(str(base.num_layers))
        self.fields["Parameters"].setText(human_count(base.num_parameters()))
        self.fields["Weights"].setText(human_bytes(sum(p.numel() * p.element_size() for p in base.model.parameters())))
        self.fields["Runs on"].setText(f"{base.device} ({str(base.dtype).removeprefix('torch.')})")
        where = " (from cache)" if base.from_cache else ""
        self.fields["Loaded in"].setText(f"{base.load_seconds:.1f} s{where}")
        self._fill_recent()
