"""The research report's comparisons in one window, measured on the loaded model:
training methods side by side (the report's table), extraction policies on one
tuned stance (size against retention), and dose–response sweeps (a tab of its
own). The job runs on the model worker; each row appears as soon as it is
measured, and the table exports as Markdown, CSV or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pyqtgraph as pg
from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from stance_studio.core import experiment_tables as tables
from stance_studio.core.errors import StanceStudioError
from stance_studio.qt.dataset_picker import FROM_FILE, add_builtin_datasets
from stance_studio.qt.dose_response import DoseResponseView
from stance_studio.qt.experiment_run import ExperimentRun, FollowsRun, ask_export_path, fill_table, write_table
from stance_studio.qt.layer_sweep_plot import layer_axis_label, plot_layer_sweep, sweep_job
from stance_studio.qt.plots import export_plot
from stance_studio.qt.policy_plot import plot_policies
from stance_studio.qt.session import Session
from stance_studio.qt.workers import Job

EXPERIMENTS = {
    "methods": "Training methods: the report's comparison table",
    "policies": "Extraction policies: size against retention",
    "layers": "Steering layer sweep: where the stance is steerable",
}
NOTES = {
    "methods": "Trains the dataset (a quarter held out) with each of the report's five methods and measures every "
               "tuned model: stance rate on the probe prompts, stance fit on the held-out examples, perplexity "
               "change on a neutral text, KL to base, share of answers identical to base, marker score. "
               "[low, high] is a 95 % interval; with several seeds, mean ± spread.",
    "policies": "Trains the dataset once (full fine-tuning), then keeps the delta with each policy and measures "
                "its retention: 1.0 reproduces the tuned model, 0.0 is no better than base.",
    "layers": "Applies a steering stance's vector at each layer alone (times the stance's strength) and measures "
              "the probes' stance rate (and the strict rate, which counts no looping answer; dashed), marker "
              "score, KL to base and identical answers, against depth fraction. "
              "Build a steering stance first: Train ▸ New stance with method steer, or "
              "`stance-studio train DATASET --method steer`.",
}


class ExperimentsWindow(FollowsRun, QDialog):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from stance_studio.core.experiments import POLICY_CANDIDATES

        self.session = session
        self.setWindowTitle("Experiments")
        self.resize(1000, 640)
        self.kind = "methods"
        self.rows: list[dict] = []

        self.experiment_box = QComboBox()
        for key, text in EXPERIMENTS.items():
            self.experiment_box.addItem(text, key)
        self.experiment_box.currentIndexChanged.connect(self._on_experiment_changed)
        self.dataset_box = QComboBox()
        add_builtin_datasets(self.dataset_box)
        self.dataset_box.activated.connect(self._on_dataset_chosen)
        self.steps = QSpinBox(minimum=0, maximum=100000, value=0, specialValueText="each method's default",
                              toolTip="Optimiser steps per training run (0: the method's default)")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.seeds = QSpinBox(minimum=1, maximum=20, value=1,
                              toolTip="Repeat the experiment with this many seeds (seed, seed+1, …); each figure "
                                      "then reads mean ± spread over them")
        self.lr = QDoubleSpinBox(minimum=0.0, maximum=1.0, decimals=6, singleStep=1e-5, value=0.0,
                                 specialValueText="each method's default",
                                 toolTip="Learning rate of every training run (0: the method's default)")
        self.steering_box = QComboBox(toolTip="The steering stance whose vectors are swept")
        self.every = QSpinBox(minimum=1, maximum=64, value=1, toolTip="Sweep every K-th layer (1: every layer)")
        self.probes_limit = QSpinBox(minimum=0, maximum=10000, value=0, specialValueText="all probes",
                                     toolTip="Use only the first N probe prompts (0: all)")
        self.policies = QLineEdit(" ".join(POLICY_CANDIDATES),
                                  toolTip="Extraction policies to compare, separated by spaces or commas "
                                          "(all, top:K, rank:R, energy:F, budget:F, aware, fp16, bf16, joined by +)")
        self.note = QLabel(wordWrap=True)
        self.note.setProperty("role", "muted")
        form = QFormLayout()
        form.addRow("Experiment", self.experiment_box)
        form.addRow("Dataset", self.dataset_box)
        form.addRow("Steps", self.steps)
        form.addRow("Learning rate", self.lr)
        form.addRow("Seed", self.seed)
        form.addRow("Seeds", self.seeds)
        form.addRow("Policies", self.policies)
        form.addRow("Steering stance", self.steering_box)
        form.addRow("Every K-th layer", self.every)
        form.addRow("Probes", self.probes_limit)
        self._policies_label = form.labelForField(self.policies)
        self._form = form

        self.run_button = QPushButton("Run", default=True, clicked=self.run)
        self.run_button.setProperty("role", "primary")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar(textVisible=True)
        self.status = QLabel("Choose an experiment and a dataset, then Run.", wordWrap=True)
        self.runner = ExperimentRun(
            session, self, run_button=self.run_button, cancel_button=self.cancel_button, progress=self.progress,
            status=self.status, add_rows=lambda new: self._set_rows(self.rows + new), finished=self._finished,
            count=lambda: len(self.rows),
            inputs=lambda: (self.experiment_box, self.dataset_box, self.steps, self.lr, self.seed, self.seeds,
                            self.policies, self.steering_box, self.every, self.probes_limit))
        controls = QHBoxLayout()
        controls.addWidget(self.progress, 1)
        controls.addWidget(self.cancel_button)
        controls.addWidget(self.run_button)

        self.table = QTableWidget(0, 0, editTriggers=QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setAlternatingRowColors(True)
        self.plot = pg.PlotWidget()
        self.plot.setLogMode(x=True)
        self.plot.setLabel("bottom", "stored size (% of the base model)")
        self.plot.setLabel("left", "retention")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        for side in ("bottom", "left"):  # fractions and scores: a "(x0.001)" rescaling misleads
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        self.plot.getPlotItem().setMenuEnabled(False)
        self.scatter = pg.ScatterPlotItem(size=10, hoverable=True, tip=lambda x, y, data: data)
        self.plot.addItem(self.scatter)
        self._labels: list[pg.TextItem] = []
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.table)
        self.splitter.addWidget(self.plot)
        self.splitter.setSizes([560, 440])

        self.copy_button = QPushButton("Copy as Markdown", enabled=False, clicked=self.copy_markdown)
        self.export_button = QPushButton("Export…", enabled=False, clicked=self.export_dialog)
        self.plot_export = QPushButton("Export plot…", clicked=lambda: export_plot(self.plot.getPlotItem(), self,
                                                                                   "size-vs-retention"))
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.plot_export)
        bottom.addWidget(self.copy_button)
        bottom.addWidget(self.export_button)

        self.comparisons = QWidget()
        layout = QVBoxLayout(self.comparisons)
        layout.addLayout(form)
        layout.addWidget(self.note)
        layout.addLayout(controls)
        layout.addWidget(self.splitter, 1)
        layout.addLayout(bottom)
        self.dose = DoseResponseView(session)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.comparisons, "Methods and policies")
        self.tabs.addTab(self.dose, "Dose–response")
        QVBoxLayout(self).addWidget(self.tabs)
        self.set_experiment("methods")

    # Set-up ---------------------------------------------------------------------------

    def set_experiment(self, kind: str) -> None:
        """Show ``kind``: ``methods``, ``policies`` or ``dose`` (the dose–response tab)."""
        if kind == "dose":
            self.tabs.setCurrentWidget(self.dose)
            return
        self.tabs.setCurrentWidget(self.comparisons)
        self.experiment_box.setCurrentIndex(list(EXPERIMENTS).index(kind))
        self._on_experiment_changed()

    @Slot()
    def _on_experiment_changed(self) -> None:
        if self.runner.is_active:
            return
        self.kind = self.experiment_box.currentData()
        policies = self.kind == "policies"
        layers = self.kind == "layers"
        self.policies.setVisible(policies)
        self._policies_label.setVisible(policies)
        for widget, shown in ((self.steering_box, layers), (self.every, layers), (self.probes_limit, layers),
                              (self.dataset_box, not layers), (self.steps, not layers), (self.lr, not layers),
                              (self.seed, not layers), (self.seeds, not layers)):
            widget.setVisible(shown)
            self._form.labelForField(widget).setVisible(shown)
        if layers:
            self._fill_steering()
        self.plot.setVisible(policies or layers)
        self.plot_export.setVisible(policies or layers)
        self._set_axes()
        self.steps.setSpecialValueText("each method's default" if not policies else "default (20)")
        self.lr.setSpecialValueText("each method's default" if not policies else "default (5e-5)")
        self.note.setText(NOTES[self.kind])
        self._set_rows([])

    def _fill_steering(self) -> None:
        current = self.steering_box.currentText()
        self.steering_box.clear()
        for entry in self.session.entries:
            if entry.metadata.get("kind") == "activation":
                self.steering_box.addItem(entry.name)
        if current:
            self.steering_box.setCurrentText(current)

    def _set_axes(self) -> None:
        layers = self.kind == "layers"
        self.plot.setLogMode(x=not layers)
        self.plot.setLabel("bottom", "depth fraction of the layer steered" if layers
                           else "stored size (% of the base model)")
        self.plot.setLabel("left", layer_axis_label(self.rows) if layers else "retention")

    @Slot(int)
    def _on_dataset_chosen(self, index: int) -> None:
        if self.dataset_box.itemData(index) != FROM_FILE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Choose a stance dataset", "", "Stance datasets (*.jsonl);;All files (*)")
        if not path:
            self.dataset_box.setCurrentIndex(0)
            return
        self.dataset_box.insertItem(index, Path(path).name, path)
        self.dataset_box.setCurrentIndex(index)

    def dataset(self) -> str:
        return str(self.dataset_box.currentData())

    # Running --------------------------------------------------------------------------

    @Slot()
    def run(self) -> Optional[Job]:
        from stance_studio.core import experiments, seeds as repeated
        from stance_studio.core.training import TrainConfig

        if self.runner.is_active:
            return None
        if self.session.base is None:
            QMessageBox.information(self, "Experiments", "Load a base model first (File ▸ Load model).")
            return None
        kind, dataset, steps, seed = self.kind, self.dataset(), self.steps.value() or None, self.seed.value()
        lr = self.lr.value() or None
        n_seeds = self.seeds.value()
        blender = self.session.blend.blender
        base = self.session.base
        sweep = None
        try:
            if kind == "policies":
                policies = experiments.parse_policies(self.policies.text().replace(",", " ").split())
                config = TrainConfig(seed=seed, lr=lr, **({"steps": steps} if steps else {}))
            if kind == "layers":
                sweep = self._sweep_job()
        except StanceStudioError as exc:
            QMessageBox.warning(self, "Cannot run the experiment", str(exc))
            return None

        def job(progress, cancel):
            if sweep is not None:
                return sweep(progress, cancel)
            if kind == "policies" and n_seeds > 1:
                return repeated.compare_policies_seeds(base, dataset, policies, config, seeds=n_seeds,
                                                       progress=progress, cancel=cancel, blender=blender)
            if kind == "policies":
                return experiments.compare_policies(base, dataset, policies, config, progress=progress,
                                                    cancel=cancel, blender=blender)
            if n_seeds > 1:
                return repeated.compare_methods_seeds(base, dataset, seeds=n_seeds, seed=seed, steps=steps, lr=lr,
                                                      progress=progress, cancel=cancel, blender=blender)
            return experiments.compare_methods(base, dataset, steps=steps, seed=seed, lr=lr, progress=progress,
                                               cancel=cancel, blender=blender)

        self._set_rows([])
        return self.runner.start(job, f"Experiment: {EXPERIMENTS[kind].split(':')[0].lower()}")

    def _sweep_job(self):
        return sweep_job(self.session, self.steering_box.currentText(), self.every.value(), self.probes_limit.value())

    def _finished(self, result) -> None:
        rows = result if isinstance(result, list) else result["rows"]  # the layer sweep's rows, or an ExperimentResult
        self._set_rows(list(rows))
        if self.kind == "layers":
            self.status.setText(f"Done: {len(rows) - 1} layers swept against the base model.")
        else:
            self.status.setText(f"Done: {result.summary()}")

    # Results --------------------------------------------------------------------------

    def _set_rows(self, rows: list[dict]) -> None:
        self.rows = rows
        fill_table(self.table, tables.headers(self.kind), rows, lambda row: tables.cells(self.kind, row))
        self.copy_button.setEnabled(bool(rows))
        self.export_button.setEnabled(bool(rows))
        if self.kind in ("policies", "layers"):
            for item in self._labels:
                self.plot.removeItem(item)
            draw = plot_policies if self.kind == "policies" else plot_layer_sweep
            self._labels = draw(self.plot, self.scatter, rows)

    def show_layer_sweep(self, doc: dict) -> None:
        """Show a layer sweep measured elsewhere (a saved `sweep-layers --json` result),
        with the form set to what it was measured with: stance, layer spacing, probes."""
        self.set_experiment("layers")
        name, rows = doc["checkpoint"], list(doc["rows"])
        if self.steering_box.findText(name) < 0:
            self.steering_box.addItem(name)
        self.steering_box.setCurrentText(name)
        layers = [r["layer"] for r in rows if r.get("layer") is not None]
        steps = {b - a for a, b in zip(layers, layers[1:])}
        self.every.setValue(steps.pop() if len(steps) == 1 and layers[0] == 0 else 1)
        self.probes_limit.setValue(int(doc.get("probes") or 0))
        self._set_rows(rows)
        self.status.setText(f"{len(layers)} layers swept on {doc.get('probes')} probes "
                            f"(measured by `stance-studio sweep-layers {name} --json`).")

    def title(self) -> str:
        if self.kind == "layers":
            model = self.session.base.model_id if self.session.base is not None else "no model"
            return f"{EXPERIMENTS[self.kind]} — {self.steering_box.currentText()} on {model}"
        name = self.dataset_box.currentText().removeprefix("Built-in: ")
        model = self.session.base.model_id if self.session.base is not None else "no model"
        return f"{EXPERIMENTS[self.kind]} — {name} on {model}"

    @Slot()
    def copy_markdown(self) -> None:
        QApplication.clipboard().setText(tables.to_markdown(self.kind, self.rows, self.title()))
        self.status.setText("Copied the table as Markdown.")

    @Slot()
    def export_dialog(self) -> None:
        path = ask_export_path(self, f"{self.kind}-comparison.md")
        if path:
            self.export(path)

    def export(self, path: str) -> bool:
        """Write the table to ``path``; the format follows the file's extension."""
        return write_table(
            self, self.status, path, markdown=lambda: tables.to_markdown(self.kind, self.rows, self.title()),
            csv=lambda: tables.to_csv(self.kind, self.rows),
            json_text=lambda: json.dumps({"experiment": self.kind, "title": self.title(), "rows": self.rows},
                                         indent=2))

    def closeEvent(self, event) -> None:
        running = [job for job in (self.job, self.dose.job) if job is not None and job.is_active]
        if running:
            answer = QMessageBox.question(self, "Experiments", "The experiment is still running. Cancel it?")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            for job in running:
                job.cancel()
        super().closeEvent(event)
