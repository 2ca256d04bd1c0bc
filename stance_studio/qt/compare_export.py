"""Copy and export of a side-by-side comparison.

Only what the columns still show leaves the app: each result of a run is tied to the
column and generation token it was painted under, and is left out once that column is
removed or shows something else (another variant, a changed blend, a new model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from stance_studio.core.generation import GenerationSettings
from stance_studio.qt.compare_column import CompareColumn
from stance_studio.core.compare import ColumnResult, CompareResult, to_json, to_markdown


class ShownComparison:
    """The results of one finished run, each with the column and token it was shown under."""

    def __init__(self, prompt: str, settings: GenerationSettings) -> None:
        self.prompt = prompt
        self.settings = settings
        self.rows: list[tuple[CompareColumn, int, ColumnResult]] = []

    def add(self, column: CompareColumn, token: int, result: ColumnResult) -> None:
        self.rows.append((column, token, result))

    def result(self, columns: Sequence[CompareColumn]) -> Optional[CompareResult]:
        """The rows still on screen among ``columns`` (the panel's), in their order;
        None if none is."""
        rows = [(column, r) for column, token, r in self.rows if column in columns and column.generation.current(token)]
        if not rows:
            return None
        rows.sort(key=lambda row: columns.index(row[0]))
        return CompareResult(self.prompt, self.settings, [r for _, r in rows])


def copy_markdown(result: CompareResult) -> None:
    QGuiApplication.clipboard().setText(to_markdown(result))


def ask_export_path(parent: QWidget) -> tuple[str, bool]:
    """The file the user chose ('' if none) and whether it is to be JSON."""
    path, chosen = QFileDialog.getSaveFileName(parent, "Export comparison", "comparison.md",
                                               "Markdown (*.md);;JSON (*.json)")
    return path, chosen.startswith("JSON") or path.endswith(".json")


def write_export(parent: QWidget, path: str, result: CompareResult, as_json: bool) -> bool:
    """Write ``result`` as Markdown or JSON; a failure is explained in a dialog."""
    text = json.dumps(to_json(result), indent=2) if as_json else to_markdown(result)
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        QMessageBox.warning(parent, "Could not export", f"Could not write {path}: {exc.strerror or exc}")
        return False
    return True
