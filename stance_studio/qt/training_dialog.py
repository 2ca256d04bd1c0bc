"""Train a new stance: dataset (built-in, a file, or written in the editor) with a
preview, method, modules, hyper-parameters and extraction policy; the run goes to the
model worker with a progress bar, live loss, elapsed/remaining time and cancel."""

from __future__ import annotations

import time
from typing import Optional

from PySide6.QtCore import QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from stance_studio.core.errors import StanceStudioError
from stance_studio.core.extraction import DEFAULT_POLICY
from stance_studio.core.jobs import TrainStep
from stance_studio.core.training import DEFAULT_LR, DEFAULT_MODULES, TrainConfig
from stance_studio.qt.dataset_picker import DatasetPicker
from stance_studio.qt.formatting import human_bytes, human_seconds, percent
from stance_studio.qt.plots import LossPlot
from stance_studio.qt.session import Session
from stance_studio.qt.training_job import check_name, check_policy, make_config, submit_steering, submit_training
from stance_studio.qt.workers import Job

METHODS = {
    "full": "Full fine-tuning (all parameters)",
    "selective": "Selective (only the named modules)",
    "lora": "LoRA adapters on the named modules",
    "steer": "Activation steering vectors (no training)",
}
# Patterns, not names: "depth:0.6:q_proj" is the layer at 60 % of the depth of whatever model is loaded.
MODULE_PRESETS = ["q_proj,v_proj", "q_proj,k_proj,v_proj,o_proj", "gate_proj,up_proj,down_proj", "depth:0.6:q_proj"]


class TrainingDialog(QDialog):
    trained = Signal(str)  # name of the new checkpoint
    training_started = Signal(str)
    loss_point = Signal(int, object, bool)  # step, loss (None if non-finite), skipped
    training_stopped = Signal(str)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.setWindowTitle("Train a stance")
        self.resize(980, 700)
        self.job: Optional[Job] = None
        self._started = 0.0
        self._train_started: Optional[float] = None
        self._last = None
        s = session.settings

        self.picker = DatasetPicker(session)
        self.picker.changed.connect(self._on_dataset_changed)

        # Method and hyper-parameters --------------------------------------------------
        self.name_edit = QLineEdit(placeholderText="name in the library")
        self.method_box = QComboBox()
        for key, label in METHODS.items():
            self.method_box.addItem(label, key)
        self.method_box.setCurrentIndex(max(0, list(METHODS).index(s.get("training/method")) if s.get("training/method") in METHODS else 0))
        self.method_box.currentIndexChanged.connect(self._on_method)
        self.modules_edit = QComboBox(editable=True)
        self.modules_edit.addItems(MODULE_PRESETS)
        self.modules_edit.setToolTip("Comma-separated module name patterns, e.g. q_proj,v_proj, layers.3.self_attn.q_proj, "
                                     "or depth:0.6:q_proj (the layer at 60 % of the model's depth)")
        self.steps = QSpinBox(minimum=1, maximum=100000, value=s.get("training/steps"))
        defaults = TrainConfig()
        self.lr = QLineEdit(f"{defaults.effective_lr:g}")
        self.lr.setToolTip("Learning rate; each method starts at its default ("
                           + ", ".join(f"{m} {lr:g}" for m, lr in DEFAULT_LR.items()) + ")")
        self.rank = QSpinBox(minimum=1, maximum=1024, value=defaults.rank)
        self.lora_alpha = QDoubleSpinBox(minimum=0.0, maximum=4096, value=0.0, specialValueText="2 × rank")
        self.lora_alpha.setToolTip("LoRA scaling alpha (the update is scaled by alpha / rank); 0 means 2 × rank")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=defaults.seed)
        self.grad_clip = QDoubleSpinBox(minimum=0.0, maximum=100.0, singleStep=0.1, value=defaults.grad_clip,
                                        specialValueText="off")
        self.grad_clip.setToolTip("Largest gradient norm before clipping; 0 turns clipping off")
        self.batch = QSpinBox(minimum=1, maximum=256, value=defaults.batch_size)
        self.holdout = QDoubleSpinBox(minimum=0.0, maximum=0.9, singleStep=0.05, decimals=2, value=defaults.holdout,
                                      specialValueText="none")
        self.holdout.setToolTip("Share of the dataset kept out of training (seeded, at least 2 examples) to "
                                "measure stance fit on unseen references; 0 trains on everything")
        self.policy = QLineEdit(s.get("training/policy") or DEFAULT_POLICY)
        self.policy.setToolTip("What the checkpoint keeps: all, top:K, rank:R, energy:F, budget:F (a share of the "
                               "base model's bytes), aware, fp16/bf16, joined by + (e.g. rank:16+fp16); "
                               f"empty means the default {DEFAULT_POLICY}")
        self.policy.textChanged.connect(self._validate)
        self.lr.textChanged.connect(self._validate)
        self.name_edit.textChanged.connect(self._validate)
        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("Method", self.method_box)
        form.addRow("Modules", self.modules_edit)
        form.addRow("Steps", self.steps)
        form.addRow("Learning rate", self.lr)
        form.addRow("LoRA rank", self.rank)
        form.addRow("LoRA alpha", self.lora_alpha)
        form.addRow("Batch size", self.batch)
        form.addRow("Gradient clip", self.grad_clip)
        form.addRow("Seed", self.seed)
        form.addRow("Held out", self.holdout)
        form.addRow("Extraction policy", self.policy)
        self.form_problem = QLabel(" ", wordWrap=True)
        self.form_problem.setProperty("role", "bad")
        hp_group = QGroupBox("Method")
        hp_layout = QVBoxLayout(hp_group)
        hp_layout.addLayout(form)
        hp_layout.addWidget(self.form_problem)
        hp_layout.addStretch(1)

        # Progress ------------------------------------------------------------------------
        self.progress = QProgressBar(textVisible=True)
        self.stage = QLabel("Not started.")
        self.times = QLabel(" ")
        self.times.setProperty("role", "muted")
        self.loss_plot = LossPlot()
        self.loss_plot.setMinimumHeight(180)
        self.train_button = QPushButton("Train", clicked=self.start)
        self.train_button.setProperty("role", "primary")
        self.cancel_button = QPushButton("Cancel training", clicked=self.cancel, enabled=False)
        close = QPushButton("Close", clicked=self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.stage, 1)
        buttons.addWidget(self.times)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.train_button)
        buttons.addWidget(close)

        top = QHBoxLayout()
        top.addWidget(self.picker, 3)
        top.addWidget(hp_group, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top, 3)
        layout.addWidget(self.progress)
        layout.addWidget(self.loss_plot, 2)
        layout.addLayout(buttons)

        self._clock = QTimer(self, interval=500)
        self._clock.timeout.connect(self._tick)
        self._on_method()
        if self.picker.builtins:
            self.picker.load(next(iter(self.picker.builtins.values())))

    # Dataset ----------------------------------------------------------------------------

    @property
    def dataset(self):
        return self.picker.dataset

    @Slot()
    def _on_dataset_changed(self) -> None:
        if self.picker.dataset is not None:
            self.name_edit.setText(self._free_name(self.picker.dataset.name or self.picker.path.stem))
        self._validate()

    def _free_name(self, stem: str) -> str:
        taken = {e.name for e in self.session.entries}
        name, n = stem, 2
        while name in taken:
            name, n = f"{stem}-{n}", n + 1
        return name

    # Form -------------------------------------------------------------------------------

    @Slot()
    def _on_method(self) -> None:
        method = self.method_box.currentData()
        trains = method != "steer"  # steering vectors are read off the model, not trained
        self.modules_edit.setEnabled(method not in ("full", "steer"))
        if method in DEFAULT_MODULES and method != "full" and not self.modules_edit.currentText().strip():
            self.modules_edit.setEditText(",".join(DEFAULT_MODULES[method]))
        self.rank.setEnabled(method == "lora")
        self.lora_alpha.setEnabled(method == "lora")
        for widget in (self.lr, self.steps, self.grad_clip, self.batch, self.policy):
            widget.setEnabled(trains)
        if trains:
            self.lr.setText(f"{DEFAULT_LR[method]:g}")
        self._validate()

    def values(self) -> dict:
        method = self.method_box.currentData()
        modules = [m.strip() for m in self.modules_edit.currentText().split(",") if m.strip()]
        return {
            "method": method, "modules": modules if method != "full" else [], "steps": self.steps.value(),
            "lr": float(self.lr.text()), "rank": self.rank.value(), "lora_alpha": self.lora_alpha.value() or None,
            "seed": self.seed.value(), "grad_clip": self.grad_clip.value(), "batch_size": self.batch.value(),
            "holdout": self.holdout.value(),
        }

    def problem(self) -> Optional[str]:
        """The first reason training cannot start, or None."""
        if self.session.base is None:
            return "Load a base model first."
        return self.picker.problem() or self.form_problem_text()

    def form_problem_text(self) -> Optional[str]:
        """What is wrong in the form itself (the dataset aside)."""
        if self.session.base is None:
            return "Load a base model first."
        name = self.name_edit.text().strip()
        if not name:
            return "Give the stance a name."
        if check_name(name):
            return check_name(name)
        if self.session.entry(name) is not None:
            return f"A stance named {name!r} already exists; choose another name."
        try:
            lr = float(self.lr.text())
        except ValueError:
            return f"Learning rate {self.lr.text()!r} is not a number."
        if not lr > 0:
            return "The learning rate must be positive."
        if self.method_box.currentData() in ("selective", "lora") and not self.modules_edit.currentText().strip():
            return "Name the modules to train (e.g. q_proj,v_proj)."
        return check_policy(self.policy.text().strip() or DEFAULT_POLICY)

    @Slot()
    def _validate(self) -> None:
        """Show the first problem under the form. Form problems disable Train; a bad
        dataset does not, so pressing Train explains it in a dialog."""
        form = self.form_problem_text()
        dataset = self.picker.problem() if form is None else None
        if dataset is not None and self.picker.error:
            dataset = f"The dataset {self.picker.path.name} cannot be used; the reason is under its preview."
        self.form_problem.setText(form or dataset or " ")
        self.train_button.setEnabled(form is None and self.job is None)

    # Running ----------------------------------------------------------------------------

    @Slot()
    def start(self) -> Optional[Job]:
        problem = self.problem()
        if problem:
            dataset = self.session.base is not None and problem == self.picker.problem()
            QMessageBox.warning(self, "Cannot train on this dataset" if dataset else "Cannot train", problem)
            return None
        name = self.name_edit.text().strip()
        try:
            if self.method_box.currentData() == "steer":
                job = submit_steering(self.session, self.picker.path, name, self.seed.value())
            else:
                config = make_config(self.values())
                job = submit_training(self.session, self.picker.path, name, config,
                                      self.policy.text().strip() or DEFAULT_POLICY)
        except (StanceStudioError, TypeError, ValueError) as exc:
            QMessageBox.warning(self, "Cannot train", str(exc))
            return None
        s = self.session.settings
        s.set("training/steps", self.steps.value())
        s.set("training/method", self.method_box.currentData())
        s.set("training/policy", self.policy.text().strip())
        self.job, self._name = job, name
        job.report_to(self)
        self.loss_plot.clear_points()
        self.progress.setRange(0, 0)
        self.stage.setText("Waiting for the model …")
        self.cancel_button.setEnabled(True)
        self.train_button.setEnabled(False)
        self._started, self._train_started = time.monotonic(), None
        self._clock.start()
        self.training_started.emit(name)
        return job

    @Slot()
    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.stage.setText("Cancelling …")

    @Slot()
    def _on_started(self) -> None:
        self._started = time.monotonic()
        self.stage.setText("Starting …")

    @Slot(list)
    def _on_progress(self, reports: list) -> None:
        for report in reports:
            step = report.partial
            if isinstance(step, TrainStep):
                if self._train_started is None:
                    self._train_started = time.monotonic()
                self.loss_plot.add_point(step.step, step.loss, step.skipped)
                self.loss_point.emit(step.step, step.loss, step.skipped)
        last = reports[-1]
        self._last = last
        if last.total:
            self.progress.setRange(0, last.total)
            self.progress.setValue(last.done)
        self.stage.setText(f"{last.stage}: {last.message}" if last.message else f"{last.stage} {last.done}/{last.total}")

    @Slot()
    def _tick(self) -> None:
        elapsed = time.monotonic() - self._started
        remaining = None
        last = self._last
        if last is not None and last.stage == "train" and last.done and self._train_started is not None:
            per_step = (time.monotonic() - self._train_started) / last.done
            remaining = per_step * (last.total - last.done)
        self.times.setText(f"elapsed {human_seconds(elapsed)}" + (f" · remaining ≈ {human_seconds(remaining)}" if remaining is not None else ""))

    @Slot(object)
    def _on_finished(self, ckpt) -> None:
        retention = ckpt.metrics.get("retention") if hasattr(ckpt, "metrics") else None
        text = f"Saved {ckpt.name}: {human_bytes(ckpt.nbytes)}, retention {percent(retention)}."
        if getattr(ckpt, "kind", "") == "activation":
            text = (f"Saved {ckpt.name}: steering vectors, {human_bytes(ckpt.nbytes)}; marker score on the probes "
                    f"{ckpt.metrics['stance_score']:+.2f} (base {ckpt.metrics['stance_score_base']:+.2f}).")
        self.stage.setText(text)
        self.session.refresh_library()
        self.trained.emit(ckpt.name)
        self.training_stopped.emit(text)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.stage.setText("Training failed.")
        self.training_stopped.emit("Training failed.")
        QMessageBox.critical(self, "Training failed", message)

    @Slot()
    def _on_cancelled(self) -> None:
        self.stage.setText("Cancelled; nothing was written.")
        self.training_stopped.emit("Training cancelled.")

    @Slot()
    def _on_ended(self) -> None:
        self.job = None
        self._clock.stop()
        self._tick()
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self._validate()

    def closeEvent(self, event) -> None:
        if self.job is not None:
            answer = QMessageBox.question(self, "Training is running", "Keep training in the background?\n\n"
                                          "Yes: close this window and keep training. No: cancel the training.",
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
            if answer == QMessageBox.StandardButton.No:
                self.cancel()
        super().closeEvent(event)
