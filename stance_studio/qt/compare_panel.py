"""Side by side: one prompt, N columns (base, the current blend, stances, saved
blends), tokens streaming into each column, per-column metrics, copy and export.

Ctrl+Enter runs through one action, :attr:`ComparePanel.run_action`, which the main
window's Generate menu shows too (two bindings of one key would cancel each other).
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from stance_studio.core.compare import CompareResult, VariantColumn, compare
from stance_studio.core.generation import GenerationSettings
from stance_studio.core.jobs import ColumnText, Counter
from stance_studio.core.stance_classifier import RELIABLE_ACCURACY
from stance_studio.core.variants import column_weights
from stance_studio.qt import compare_export
from stance_studio.qt.compare_column import BASE, CURRENT_BLEND, STANCE, VARIANT, CompareColumn
from stance_studio.qt.compare_export import ShownComparison
from stance_studio.qt.compare_knobs import DecodingKnobs
from stance_studio.qt.session import Session
from stance_studio.qt.workers import Job, is_current


class ComparePanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.columns: list[CompareColumn] = []
        self._shown: Optional[ShownComparison] = None
        self._job: Optional[Job] = None
        self._runs = Counter()  # a new run makes the results of older ones stale
        # The running job's columns by row, with their tokens; None: removed since.
        self._run_columns: list[Optional[tuple[CompareColumn, int]]] = []
        settings = session.settings

        self.prompt = QPlainTextEdit(settings.get("compare/prompt"))
        self.prompt.setPlaceholderText("Ask something the stances were not trained on …")
        self.prompt.setMaximumHeight(110)
        self.run_action = QAction("&Run side by side", self)
        self.run_action.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
        self.run_action.triggered.connect(self.run)
        self.addAction(self.run_action)

        self.knobs = DecodingKnobs(settings)
        self.max_tokens = self.knobs.max_tokens

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
        layout.addWidget(self.knobs)
        layout.addWidget(scroll, 1)
        layout.addLayout(footer)

        for spec in settings.get_json("compare/columns") or [BASE]:
            self.add_column(str(spec))
        session.catalog.changed.connect(self._refresh_choices)
        session.saved.changed.connect(self._refresh_choices)
        session.blend.changed.connect(self._on_blend_changed)
        session.host.model_changed.connect(self._on_model_changed)

    # Columns -----------------------------------------------------------------------------

    def choices(self) -> list[tuple[str, str]]:
        out = [("Base model", BASE), ("Current blend", CURRENT_BLEND)]
        out += [(name, STANCE + name) for name in self.session.catalog.compatible_names()]
        out += [(f"Saved: {v.label}", VARIANT + v.label) for v in self.session.saved.all()]
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
        # A running job still streams rows for it: they go nowhere from now on.
        self._run_columns = [None if entry is not None and entry[0] is column else entry
                             for entry in self._run_columns]
        column.setParent(None)
        column.deleteLater()
        for i, col in enumerate(self.columns):
            col.set_index(i)
        self._save_columns()
        self._update_export()

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
        self._on_blend_changed(self.session.blend.weights)

    @Slot()
    def _on_variant_changed(self) -> None:
        # A column that now shows another variant starts from that variant's
        # weights, so a later blend change is not mistaken for a change of it.
        for column in self.columns:
            column.shown_weights = self.weights_for(column.spec) or ()
        self._save_columns()
        self._update_export()

    def _save_columns(self) -> None:
        self.session.settings.set_json("compare/columns", [c.spec for c in self.columns])

    def weights_for(self, spec: str) -> Optional[tuple[tuple[str, float], ...]]:
        """The blend weights a column spec stands for now (None if it is unknown)."""
        session = self.session
        return column_weights(spec, session.blend.weights, session.saved.all(),
                              lambda name: bool(session.catalog.compatibility(name)[0]))

    @Slot(dict)
    def _on_blend_changed(self, _weights: dict) -> None:
        for column in self.columns:
            now = self.weights_for(column.spec)
            if now is not None and now != column.shown_weights:
                column.shown_weights = now
                column.invalidate("The blend changed; press Run to generate with it.")
        self._update_export()

    @Slot(object)
    def _on_model_changed(self, _base) -> None:
        for column in self.columns:
            column.invalidate("New model loaded; press Run.")
        self._refresh_choices()
        self._update_export()

    # Running -----------------------------------------------------------------------------

    def generation_settings(self) -> GenerationSettings:
        return self.knobs.generation_settings()

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
        self.session.settings.set("compare/prompt", prompt)
        self.knobs.remember()
        if self._job is not None:
            self._job.cancel()
        stamp = self._runs.bump()
        self._run_columns = [(column, column.begin(weights)) for column, weights in plan]
        self._update_export()  # the columns no longer show the last run
        session, settings = self.session, self.generation_settings()
        base, blender = session.base, session.blend.blender
        labels = [(c.label(), _spec_text(w)) for c, w in plan]
        weights_list = [w for _, w in plan]

        def job(progress, cancel):
            columns = [VariantColumn(label, spec, [(session.catalog.checkpoint(n), a) for n, a in w])
                       for (label, spec), w in zip(labels, weights_list)]
            return compare(base, blender, columns, prompt, settings, progress, cancel, allow_mismatch=True)

        self._job = job_ = session.runner.submit(job, "Generating side by side", interactive=True)
        job_.stamp = stamp
        job_.progressed.connect(self._on_progress)
        job_.finished.connect(self._on_finished)
        job_.failed.connect(self._on_failed)
        job_.cancelled.connect(self._on_cancelled)
        job_.ended.connect(self._on_ended)
        self.run_button.setText("Run again")
        self.stop_button.setEnabled(True)
        busy = session.runner.current
        self.status.setText("Waiting for the model …" if busy is not None and not busy.yields else "Generating …")
        return job_

    def _current(self) -> bool:
        return is_current(self._runs, self.sender())

    @Slot(list)
    def _on_progress(self, reports: list) -> None:
        if not self._current():
            return
        latest: dict[int, str] = {}
        for report in reports:
            if isinstance(report.partial, ColumnText):
                latest[report.partial.column] = report.partial.text
            elif report.stage == "metrics" and report.message:
                self.status.setText(report.message)
        for index, text in latest.items():
            entry = self._run_columns[index] if index < len(self._run_columns) else None
            if entry is not None:
                entry[0].show_text(entry[1], text)
        if latest:
            self.status.setText("Generating …")

    @Slot(object)
    def _on_finished(self, result: CompareResult) -> None:
        if not self._current():
            return
        self._shown = ShownComparison(result.prompt, result.settings)
        for entry, col_result in zip(self._run_columns, result.columns):
            if entry is not None and entry[0].show_metrics(entry[1], col_result):
                self._shown.add(entry[0], entry[1], col_result)
        self._update_export()
        n = len(self._shown.rows)
        unreliable = [s.name for s in result.stances if not s.reliable]
        extra = "".join([f" Unreliable classifier (accuracy below {RELIABLE_ACCURACY:g}): {', '.join(unreliable)}." if unreliable else "",
                         *(f" {note}" for note in result.notes)])
        self.status.setText(f"Done: {n} column{'s' if n != 1 else ''}.{extra}")

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        if self._current():
            self.status.setText("Failed.")
            QMessageBox.warning(self, "Side by side failed", message)

    @Slot()
    def _on_cancelled(self) -> None:
        if self._current():
            for entry in filter(None, self._run_columns):
                entry[0].show_note(entry[1], "Stopped.")
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

    # Copy and export ---------------------------------------------------------------------------

    @property
    def result(self) -> Optional[CompareResult]:
        """The last run's results for the columns that still show them (None: nothing)."""
        return self._shown.result(self.columns) if self._shown is not None else None

    def _update_export(self) -> None:
        has_result = self.result is not None
        self.copy_button.setEnabled(has_result)
        self.export_button.setEnabled(has_result)

    @Slot()
    def copy_markdown(self) -> None:
        result = self.result
        if result is not None:
            compare_export.copy_markdown(result)
            self.status.setText("Copied the comparison as Markdown.")

    @Slot()
    def export_dialog(self) -> None:
        if self.result is not None:
            path, as_json = compare_export.ask_export_path(self)
            if path:
                self.export(path, as_json)

    def export(self, path: str, as_json: bool) -> None:
        result = self.result
        if result is not None and compare_export.write_export(self, path, result, as_json):
            self.status.setText(f"Exported to {path}.")


def _spec_text(weights) -> str:
    return "base" if not weights else ",".join(f"{n}={a:g}" for n, a in weights)
