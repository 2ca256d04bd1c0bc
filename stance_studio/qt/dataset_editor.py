"""A small editor for writing a new stance dataset: prompt/response pairs saved as
JSONL (one ``{"prompt": ..., "response": ...}`` object per line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


def write_jsonl(path: Path, pairs: list[tuple[str, str]]) -> None:
    """Write ``pairs`` atomically enough for a small hand-written dataset."""
    text = "".join(json.dumps({"prompt": p, "response": r}, ensure_ascii=False) + "\n" for p, r in pairs)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class DatasetEditor(QDialog):
    """Edit prompt/response rows; :attr:`saved_path` is set after a successful save."""

    def __init__(self, rows: Optional[list[tuple[str, str]]] = None, folder: Optional[Path] = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New stance dataset")
        self.resize(820, 480)
        self.folder = folder or Path.home()
        self.saved_path: Optional[Path] = None
        intro = QLabel("Write a few prompts and the responses in the stance you want (5–20 pairs is typical). "
                       "Use prompts that are not among the neutral probe prompts.", wordWrap=True)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Prompt", "Response in the stance"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setWordWrap(True)
        for prompt, response in rows or [("", "")] * 3:
            self.add_row(prompt, response)
        add = QPushButton("Add row", clicked=lambda: self.add_row())
        remove = QPushButton("Remove selected", clicked=self.remove_selected)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        layout.addWidget(buttons)

    def add_row(self, prompt: str = "", response: str = "") -> None:
        r = self.table.rowCount()
        self.table.insertRow(r)
        self.table.setItem(r, 0, QTableWidgetItem(prompt))
        self.table.setItem(r, 1, QTableWidgetItem(response))

    @Slot()
    def remove_selected(self) -> None:
        for r in sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True):
            self.table.removeRow(r)

    def pairs(self) -> list[tuple[str, str]]:
        out = []
        for r in range(self.table.rowCount()):
            prompt, response = (self.table.item(r, c).text().strip() if self.table.item(r, c) else "" for c in (0, 1))
            if prompt or response:
                out.append((prompt, response))
        return out

    def problem(self) -> Optional[str]:
        pairs = self.pairs()
        if not pairs:
            return "The dataset is empty: write at least one prompt and response."
        for i, (prompt, response) in enumerate(pairs, 1):
            if not prompt or not response:
                return f"Row {i} needs both a prompt and a response."
        return None

    @Slot()
    def save(self, path: Optional[str] = None) -> None:
        problem = self.problem()
        if problem:
            QMessageBox.warning(self, "Cannot save the dataset", problem)
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save dataset", str(self.folder / "my-stance.jsonl"),
                                                  "JSON lines (*.jsonl)")
            if not path:
                return
        target = Path(path)
        if target.suffix != ".jsonl":
            target = target.with_suffix(".jsonl")
        try:
            write_jsonl(target, self.pairs())
        except OSError as exc:
            QMessageBox.warning(self, "Cannot save the dataset", f"Could not write {target}: {exc.strerror or exc}")
            return
        self.saved_path = target
        self.accept()
