"""Side by side: one prompt, N columns (base, the current blend, stances, saved
blends), tokens streaming into each column, per-column metrics, copy and export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from stance_studio.core.generation import GenerationSettings
from stance_studio.qt.compare_column import BASE, CURRENT_BLEND, STANCE, VARIANT, CompareColumn
from stance_studio.qt.compare_run import CompareResult, run_comparison, to_json, to_markdown
from stance_studio.qt.session import Session
from stance_studio.qt.workers import Job


class ComparePanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.columns: list[CompareColumn] = []
        self.result: Optional[CompareResult] = None
        self._job: Optional[Job] = None
        self._run_id = 0
        self._run_columns: list[tuple[CompareColumn, int]] = []
        settings = session.settings

        self.prompt = QPlainTextEdit(settings.get("compare/prompt"))
        self.prompt.setPlaceholderText("Ask something the stances were not trained on …")
        self.prompt.setMaximumHeight(110)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self.prompt, self.run, context=Qt.ShortcutContext.WidgetShortcut)

        self.max_tokens = QSpinBox(minimum=1, maximum=2048, value=settings.get("compare/max_new_tokens"))
        self.greedy = QCheckBox("Greedy", checked=settings.get("compare/greedy"))
        self.greedy.setToolTip("Greedy decoding is deterministic; untick to sample with a fixed seed.")
        self.temperature = QDoubleSpinBox(minimum=0.05, maximum=3.0, singleStep=0.05, value=settings.get("compare/temperature"))
        self.top_p = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.05, value=settings.get("compare/top_p"))
        self.seed = QSpinBox(minimum=0, maximum=999_999, value=min(999_999, settings.get("compare/seed")))
        self.seed.setToolTip("Seed of the sampler; the same seed gives the same samples.")
        self.greedy.toggled.connect(self._on_greedy)
        self._on_greedy(self.greedy.isChecked())

        self.run_button = QPushButton("Run", clicked=self.run, toolTip="Generate for every column (Ctrl+Enter)")
        self.run_button.setProperty("role", "primary")
        self.stop_button = QPushButton("Stop", clicked=self.stop, enabled=False)
        add = QToolButton(text="+ Column", toolTip="Add a column")
        add.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.add_menu = QMenu(add)
        self.add_menu.aboutToShow.connect(self._fill_add_menu)
        add.setMenu(self.add_menu)
        self.copy_button = QPushButton("Copy", clicked=self.copy_markdown, enabled=False,
                                       toolTip="Copy the comparison as Markdown")
        self.export_button = QPushButton("Export…", clicked=self.export_dialog, enabled=False)
        self.status = QLabel(" ")
        self.status.setProperty("role", "muted")

        knobs = QHBoxLayout()
        for label, widget, tip in (("Tokens", self.max_tokens, "Most new tokens per column"), (None, self.greedy, None),
                                   ("Temp.", self.temperature, "Sampling temperature"),
                                   ("Top-p", self.top_p, "Nucleus sampling: keep the most likely tokens up to this mass"),
                                   ("Seed", self.seed, None)):
            if label:
                caption = QLabel(label, toolTip=tip or widget.toolTip())
                caption.setBuddy(widget)
                knobs.addWidget(caption)
            if tip:
                widget.setToolTip(tip)
            knobs.addWidget(widget)
        knobs.addStretch(1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        top = QHBoxLayout()
        top.addWidget(self.prompt, 1)
        top.addLayout(buttons)
        footer = QHBoxLayout()
        footer.addWidget(self.status, 1)
        footer.addWidget(add)
        footer.addWidget(self.copy_button)
        footer.addWidget(self.export_button)

        self.columns_box = QWidget()
        self.columns_layout = QHBoxLayout(self.columns_box)
        self.columns_layout.setContentsMargins(0, 0, 0, 0)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, childrenCollapsible=False)
        self.columns_layout.addWidget(self.splitter)
        scroll = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        scroll.setWidget(self.columns_box)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(knobs)
        layout.addWidget(scroll, 1)
        layout.addLayout(footer)

        for spec in settings.get_json("compare/columns") or [BASE]:
            self.add_column(str(spec))
        session.library_changed.connect(self._refresh_choices)
        session.variants_changed.connect(self._refresh_choices)
        session.blend_changed.connect(self._on_blend_changed)
        session.model_changed.connect(self._on_model_changed)

    # Columns -----------------------------------------------------------------------------

    def choices(self) -> list[tuple[str, str]]:
        out = [("Base model", BASE), ("Current blend", CURRENT_BLEND)]
        out += [(name, STANCE + name) for name in self.session.compatible_names()]
        out += [(f"Saved: {v.label}", VARIANT + v.label) for v in self.session.variants()]
        return out

    def add_column(self, spec: str = BASE) -> CompareColumn:
        column = CompareColumn(spec, len(self.columns))
        column.set_choices(self.choices())
        column.shown_weights = self.weights_for(spec) or ()
        column.remove_requested.connect(self.remove_column)
        column.variant_changed.connect(self._on_variant_changed)
        self.columns.append(column)
        self.splitter.addWidget(column)
        self._save_columns()
        return column

    @Slot(object)
    def remove_column(self, column: CompareColumn) -> None:
        if column not in self.columns or len(self.columns) == 1:
            return
        self.columns.remove(column)
        column.setParent(None)
        column.deleteLater()
        for i, col in enumerate(self.columns):
            col.set_index(i)
        self._save_columns()

    def add_stance_column(self, name: str) -> CompareColumn:
        return self.add_column(STANCE + name)

    def _fill_add_menu(self) -> None:
        self.add_menu.clear()
        for label, spec in self.choices():
            self.add_menu.addAction(label, lambda s=spec: self.add_column(s))

    @Slot()
    def _refresh_choices(self) -> None:
        choices = self.choices()
        for column in self.columns:
            column.set_choices(choices)
        self._on_blend_changed(self.session.blend_weights)

    @Slot()
    def _on_variant_changed(self) -> None:
        # A column that now shows another variant starts from that variant's
        # weights, so a later blend change is not mistaken for a change of it.
        for column in self.columns:
            column.shown_weights = self.weights_for(column.spec) or ()
        self._save_columns()

    def _save_columns(self) -> None:
        self.session.settings.set_json("compare/columns", [c.spec for c in self.columns])

    def weights_for(self, spec: str) -> Optional[tuple[tuple[str, float], ...]]:
        """The blend weights a column spec stands for now (None if it is unknown)."""
        if spec == BASE:
            return ()
        if spec == CURRENT_BLEND:
            return tuple(sorted(self.session.blend_weights.items()))
        if spec.startswith(STANCE):
            name = spec[len(STANCE):]
            return ((name, 1.0),) if self.session.compatibility(name)[0] else None
        if spec.startswith(VARIANT):
            label = spec[len(VARIANT):]
            variant = next((v for v in self.session.variants() if v.label == label), None)
            if variant is None or any(not self.session.compatibility(n)[0] for n, _ in variant.weights):
                return None
            return variant.weights
        return None

    @Slot(dict)
    def _on_blend_changed(self, _weights: dict) -> None:
        for column in self.columns:
            now = self.weights_for(column.spec)
            if now is not None and now != column.shown_weights:
                column.shown_weights = now
                column.invalidate("The blend changed; press Run to generate with it.")

    @Slot(object)
    def _on_model_changed(self, _base) -> None:
        for column in self.columns:
            column.invalidate("New model loaded; press Run.")
        self._refresh_choices()

    # Running -----------------------------------------------------------------------------

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_tokens.value(), greedy=self.greedy.isChecked(),
                                  temperature=self.temperature.value(), top_p=self.top_p.value(), seed=self.seed.value())

    @Slot(bool)
    def _on_greedy(self, greedy: bool) -> None:
        for widget in (self.temperature, self.top_p, self.seed):
            widget.setEnabled(not greedy)

    @Slot()
    def run(self) -> Optional[Job]:
        prompt = self.prompt.toPlainText().strip()
        if self.session.base is None:
            QMessageBox.information(self, "Side by side", "Load a base model first.")
            return None
        if not prompt:
            QMessageBox.information(self, "Side by side", "Type a prompt first.")
            return None
        plan = []
        for column in self.columns:
            weights = self.weights_for(column.spec)
            if weights is None:
                QMessageBox.warning(self, "Side by side", f"Column {column.index + 1} ({column.label()}) names a stance "
                                    "that is missing or does not fit the loaded model; choose another variant.")
                return None
            plan.append((column, weights))
        self._remember_settings(prompt)
        if self._job is not None:
            self._job.cancel()
        self._run_id += 1
        self._run_columns = [(column, column.begin(weights)) for column, weights in plan]
        session, settings = self.session, self.generation_settings()
        base, blender = session.base, session.blender
        labels = [(c.label(), _spec_text(w)) for c, w in plan]
        weights_list = [w for _, w in plan]

        def job(progress, cancel):
            from stance_studio.core.metrics import marker_rates

            columns = [(label, spec, [(session.checkpoint(n), a) for n, a in w])
                       for (label, spec), w in zip(labels, weights_list)]
            return run_comparison(base, blender, columns, prompt, settings, marker_rates, progress, cancel)

        self._job = job_ = session.runner.submit(job, "Generating side by side")
        job_.run_id = self._run_id
        job_.progressed.connect(self._on_progress)
        job_.finished.connect(self._on_finished)
        job_.failed.connect(self._on_failed)
        job_.cancelled.connect(self._on_cancelled)
        job_.ended.connect(self._on_ended)
        self.run_button.setText("Run again")
        self.stop_button.setEnabled(True)
        self.status.setText("Waiting for the model …" if session.runner.current else "Generating …")
        return job_

    def _current(self) -> bool:
        return getattr(self.sender(), "run_id", None) == self._run_id

    @Slot(list)
    def _on_progress(self, reports: list) -> None:
        if not self._current():
            return
        latest: dict[int, str] = {}
        for report in reports:
            if report.stage == "token":
                latest[report.info["column"]] = report.info["text"]
            elif report.stage == "metrics" and report.message:
                self.status.setText(report.message)
        for index, text in latest.items():
            if index < len(self._run_columns):
                column, token = self._run_columns[index]
                column.show_text(token, text)
        if latest:
            self.status.setText("Generating …")

    @Slot(object)
    def _on_finished(self, result: CompareResult) -> None:
        if not self._current():
            return
        for (column, token), col_result in zip(self._run_columns, result.columns):
            column.show_metrics(token, col_result)
        self.result = result
        self.copy_button.setEnabled(True)
        self.export_button.setEnabled(True)
        n = len(result.columns)
        self.status.setText(f"Done: {n} column{'s' if n != 1 else ''}.")

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        if self._current():
            self.status.setText("Failed.")
            QMessageBox.warning(self, "Side by side failed", message)

    @Slot()
    def _on_cancelled(self) -> None:
        if self._current():
            for column, token in self._run_columns:
                column.show_note(token, "Stopped.")
            self.status.setText("Stopped.")

    @Slot()
    def _on_ended(self) -> None:
        if self._current():
            self._job = None
            self.stop_button.setEnabled(False)

    @Slot()
    def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def _remember_settings(self, prompt: str) -> None:
        s = self.session.settings
        s.set("compare/prompt", prompt)
        s.set("compare/max_new_tokens", self.max_tokens.value())
        s.set("compare/greedy", self.greedy.isChecked())
        s.set("compare/temperature", self.temperature.value())
        s.set("compare/top_p", self.top_p.value())
        s.set("compare/seed", self.seed.value())

    # Copy and export ---------------------------------------------------------------------------

    @Slot()
    def copy_markdown(self) -> None:
        if self.result is not None:
            QGuiApplication.clipboard().setText(to_markdown(self.result))
            self.status.setText("Copied the comparison as Markdown.")

    @Slot()
    def export_dialog(self) -> None:
        if self.result is None:
            return
        path, chosen = QFileDialog.getSaveFileName(self, "Export comparison", "comparison.md",
                                                   "Markdown (*.md);;JSON (*.json)")
        if path:
            self.export(path, as_json=chosen.startswith("JSON") or path.endswith(".json"))

    def export(self, path: str, as_json: bool) -> None:
        text = json.dumps(to_json(self.result), indent=2) if as_json else to_markdown(self.result)
        try:
            Path(path).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            QMessageBox.warning(self, "Could not export", f"Could not write {path}: {exc.strerror or exc}")
            return
        self.status.setText(f"Exported to {path}.")


def _spec_text(weights) -> str:
    return "base" if not weights else ",".join(f"{n}={a:g}" for n, a in weights)
