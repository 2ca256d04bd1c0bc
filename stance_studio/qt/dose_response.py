"""The experiments window's dose–response tab: measure a stance (or a blend
direction) across weights α, or two stances over an (α, β) grid, on the model
worker. Lines (or the heat map) and the table fill in as points are measured; the
table exports like the other experiments."""

from __future__ import annotations

import json
from typing import Optional

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from stance_studio.core import experiment_tables as tables
from stance_studio.core import sweep_tables
from stance_studio.core.errors import StanceStudioError, SweepRangeError
from stance_studio.core.generation import GenerationSettings
from stance_studio.core.metrics import EVAL_SETTINGS
from stance_studio.core.sweep import DEFAULT_ALPHAS, DEFAULT_GRID, parse_range
from stance_studio.qt.dose_plots import DoseHeatMap, DoseLines
from stance_studio.qt.experiment_run import ExperimentRun, FollowsRun, ask_export_path, fill_table, write_table
from stance_studio.qt.plots import export_plot
from stance_studio.qt.session import Session
from stance_studio.qt.workers import Job

ONE_DIRECTION = "none: sweep one direction"
NOTE = ("Each point applies α × the direction (a stance, or a blend such as a=1,b=-0.5) and measures it on the "
        "probe prompts with the evaluation the rest of the app uses; α = 0 is the base model. With a second stance, "
        "every (α, β) of the grid is measured and shown as a heat map.")


class DoseResponseView(FollowsRun, QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.rows: list[dict] = []
        self.axes: list[str] = ["alpha"]
        self.names: tuple[str, ...] = ()

        self.direction = QComboBox(editable=True, toolTip="A stance, or a blend direction such as a=1,b=-0.5")
        self.second = QComboBox(toolTip="A second stance makes an (α, β) grid: α scales the first, β the second")
        self.alphas = QLineEdit(DEFAULT_ALPHAS, toolTip="LO:HI:STEP, or a list such as 0,0.5,1")
        self.betas = QLineEdit("", placeholderText="as α", toolTip="The second stance's weights (LO:HI:STEP or a list)")
        self.probe_count = QSpinBox(minimum=0, maximum=100000, value=0, specialValueText="all",
                                    toolTip="Measure on the first N shipped probe prompts (0: all of them)")
        self.max_tokens = QSpinBox(minimum=1, maximum=4096, value=EVAL_SETTINGS.max_new_tokens,
                                   toolTip="Tokens generated per answer (greedy), as in evaluate --max-new-tokens")
        self.metric = QComboBox(toolTip="The metric the heat map shows")
        self.metric.currentIndexChanged.connect(self._redraw)
        form = QFormLayout()
        form.addRow("Direction", self.direction)
        form.addRow("Second stance (grid)", self.second)
        form.addRow("Weights α", self.alphas)
        form.addRow("Weights β", self.betas)
        form.addRow("Probe prompts", self.probe_count)
        form.addRow("Tokens per answer", self.max_tokens)
        form.addRow("Heat map shows", self.metric)
        self._form = form
        self.second.currentIndexChanged.connect(self._on_mode_changed)
        note = QLabel(NOTE, wordWrap=True)
        note.setProperty("role", "muted")

        self.run_button = QPushButton("Run sweep", clicked=self.run)
        self.run_button.setProperty("role", "primary")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar(textVisible=True)
        controls = QHBoxLayout()
        controls.addWidget(self.progress, 1)
        controls.addWidget(self.cancel_button)
        controls.addWidget(self.run_button)

        self.lines = DoseLines()
        self.heat = DoseHeatMap()
        self.plots = QStackedWidget()
        self.plots.addWidget(self.lines)
        self.plots.addWidget(self.heat)
        self.table = QTableWidget(0, 0, editTriggers=QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setAlternatingRowColors(True)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.plots)
        splitter.addWidget(self.table)
        splitter.setSizes([520, 160])

        self.status = QLabel("Choose a stance, then Run sweep.", wordWrap=True)
        self.runner = ExperimentRun(
            session, self, run_button=self.run_button, cancel_button=self.cancel_button, progress=self.progress,
            status=self.status, add_rows=lambda new: self._set_rows(self.rows + new), finished=self._finished,
            count=lambda: len(self.rows), unit="points", failed_title="The sweep failed",
            inputs=lambda: (self.direction, self.second, self.alphas, self.betas, self.probe_count, self.max_tokens))
        self.copy_button = QPushButton("Copy as Markdown", enabled=False, clicked=self.copy_markdown)
        self.export_button = QPushButton("Export…", enabled=False, clicked=self.export_dialog)
        self.plot_export = QPushButton("Export plot…", clicked=self.export_plot)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.plot_export)
        bottom.addWidget(self.copy_button)
        bottom.addWidget(self.export_button)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addLayout(controls)
        layout.addWidget(splitter, 1)
        layout.addLayout(bottom)
        session.catalog.changed.connect(self.refresh_stances)
        session.host.model_changed.connect(self.refresh_stances)
        self.refresh_stances()
        self._on_mode_changed()

    # Set-up ---------------------------------------------------------------------------

    @Slot()
    def refresh_stances(self, *_) -> None:
        names = self.session.catalog.compatible_names() if self.session.base is not None else []
        text, second = self.direction.currentText(), self.second.currentText()
        self.direction.clear()
        self.direction.addItems(names)
        self.direction.setEditText(text if text else (names[0] if names else ""))
        self.second.blockSignals(True)
        self.second.clear()
        self.second.addItems([ONE_DIRECTION] + names)
        self.second.setCurrentIndex(max(self.second.findText(second), 0))
        self.second.blockSignals(False)
        self._on_mode_changed()

    @property
    def is_grid(self) -> bool:
        return self.second.currentIndex() > 0

    @Slot()
    def _on_mode_changed(self, *_) -> None:
        grid = self.is_grid
        if self.alphas.text().strip() == (DEFAULT_ALPHAS if grid else DEFAULT_GRID):
            self.alphas.setText(DEFAULT_GRID if grid else DEFAULT_ALPHAS)
        for field in (self.betas, self.metric):
            field.setVisible(grid)
            self._form.labelForField(field).setVisible(grid)

    def plan(self):
        """(named directions, weights per axis, probes) from the controls; raises on bad input."""
        from stance_studio.core.datasets import load_probes
        from stance_studio.core.variants import parse_variant

        variant = parse_variant(self.direction.currentText())
        if variant.is_base:
            raise SweepRangeError("Sweeping base changes nothing; choose a stance or a blend such as a=1,b=-0.5.")
        alphas = parse_range(self.alphas.text())
        named = [list(variant.weights)]
        weights = [alphas]
        if self.is_grid:
            if len(variant.weights) != 1:
                raise SweepRangeError("A grid sweeps two stances: choose one stance as the direction and one as the second.")
            named.append([(self.second.currentText(), 1.0)])
            weights.append(parse_range(self.betas.text()) if self.betas.text().strip() else alphas)
        known = set(self.session.catalog.compatible_names())
        for terms in named:
            for name, _ in terms:
                if name not in known:
                    raise StanceStudioError(f"{name!r} is not a stance in the library that fits the loaded model.")
        probes = load_probes()
        if self.probe_count.value():
            probes = probes[: self.probe_count.value()]
        return named, weights, probes

    # Running --------------------------------------------------------------------------

    @Slot()
    def run(self) -> Optional[Job]:
        from stance_studio.core.sweep import run_sweep

        if self.runner.is_active:
            return None
        if self.session.base is None:
            QMessageBox.information(self, "Dose–response", "Load a base model first (File ▸ Load model).")
            return None
        try:
            named, weights, probes = self.plan()
        except StanceStudioError as exc:
            QMessageBox.warning(self, "Cannot run the sweep", str(exc))
            return None
        base, blender, session = self.session.base, self.session.blend.blender, self.session
        settings = GenerationSettings(max_new_tokens=self.max_tokens.value())

        def job(progress, cancel):
            directions = [[(session.catalog.checkpoint(name), w) for name, w in terms] for terms in named]
            return run_sweep(base, blender, directions, weights, probes, settings, progress=progress, cancel=cancel)

        self.axes = ["alpha", "beta"][: len(named)]
        self.names = tuple(",".join(n if w == 1.0 else f"{n}={w:g}" for n, w in terms) for terms in named)
        self._set_rows([])
        return self.runner.start(job, "Experiment: dose–response")

    def _finished(self, result) -> None:
        self._set_rows(list(result["rows"]))
        self.status.setText(f"Done: {len(self.rows)} points measured on {result['probes']} probe prompts.")

    # Results --------------------------------------------------------------------------

    def columns(self):
        return sweep_tables.columns(self.rows, self.axes)

    def _set_rows(self, rows: list[dict]) -> None:
        self.rows = rows
        cols = self.columns()
        fill_table(self.table, tables.headers(cols), rows, lambda row: tables.cells(cols, row),
                   left_columns=[len(self.axes)])
        self.copy_button.setEnabled(bool(rows))
        self.export_button.setEnabled(bool(rows))
        keys = sweep_tables.numeric_keys(rows, skip=self.axes)
        if keys != [self.metric.itemData(i) for i in range(self.metric.count())]:
            current = self.metric.currentData()
            self.metric.blockSignals(True)
            self.metric.clear()
            for key in keys:
                self.metric.addItem(sweep_tables.label(key), key)
            self.metric.setCurrentIndex(max(self.metric.findData(current), 0))
            self.metric.blockSignals(False)
        self._redraw()

    @Slot()
    def _redraw(self, *_) -> None:
        grid = len(self.axes) == 2
        self.plots.setCurrentWidget(self.heat if grid else self.lines)
        if grid:
            key = self.metric.currentData()
            if key:
                names = (self.names + ("", ""))[:2]
                self.heat.set_rows(self.rows, key, sweep_tables.label(key), names)
        else:
            name = self.names[0] if self.names else ""
            self.lines.set_rows(self.rows, f"α × {name}" if name else "α")

    def title(self) -> str:
        model = self.session.base.model_id if self.session.base is not None else "no model"
        return f"Dose–response: {' × '.join(self.names) or 'no direction'} on {model}"

    @Slot()
    def copy_markdown(self) -> None:
        QApplication.clipboard().setText(tables.to_markdown(self.columns(), self.rows, self.title()))
        self.status.setText("Copied the table as Markdown.")

    @Slot()
    def export_dialog(self) -> None:
        path = ask_export_path(self, "dose-response.md")
        if path:
            self.export(path)

    def export(self, path: str) -> bool:
        """Write the table to ``path``; the format follows the file's extension."""
        return write_table(
            self, self.status, path, markdown=lambda: tables.to_markdown(self.columns(), self.rows, self.title()),
            csv=lambda: tables.to_csv(self.columns(), self.rows),
            json_text=lambda: json.dumps({"experiment": "dose-response", "title": self.title(), "axes": self.axes,
                                          "directions": list(self.names), "rows": self.rows}, indent=2))

    @Slot()
    def export_plot(self) -> None:
        target = self.heat.ci if self.plots.currentWidget() is self.heat else self.lines.ci
        export_plot(target, self, "dose-response")
