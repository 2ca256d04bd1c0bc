"""The training dialog's dataset box: a built-in stance, a file, or one written in the
editor, with a preview of its examples, and the reason when a file cannot be used."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from stance_studio.core.errors import StanceStudioError
from stance_studio.qt.dataset_editor import DatasetEditor
from stance_studio.qt.session import Session
from stance_studio.qt.training_job import builtin_datasets

FROM_FILE = "__file__"


def add_builtin_datasets(box: QComboBox) -> dict[str, Path]:
    """Fill ``box`` with the built-in stances (data: their paths) and 'From a file…'."""
    try:
        builtins = builtin_datasets()
    except StanceStudioError:
        builtins = {}
    for name, path in builtins.items():
        box.addItem(f"Built-in: {name}", str(path))
    box.addItem("From a file…", FROM_FILE)
    return builtins


class DatasetPicker(QGroupBox):
    """``changed`` fires after every choice, readable or not: then :attr:`dataset` is
    the loaded dataset, or None with the reason in :meth:`problem`."""

    changed = Signal()

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__("Dataset", parent)
        self.session = session
        self.dataset = None
        self.path: Optional[Path] = None  # the last file chosen, readable or not
        self.error: Optional[str] = None
        self.box = QComboBox()
        self.builtins = add_builtin_datasets(self.box)
        self.box.activated.connect(self._on_chosen)
        new_button = QPushButton("New dataset…", clicked=self.new_dataset)
        self.preview = QTableWidget(0, 2)
        self.preview.setHorizontalHeaderLabels(["Prompt", "Response"])
        self.preview.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.preview.verticalHeader().setVisible(False)
        self.preview.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.note = QLabel(" ", wordWrap=True)
        self.note.setProperty("role", "muted")
        row = QHBoxLayout()
        row.addWidget(self.box, 1)
        row.addWidget(new_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.note)

    def problem(self) -> Optional[str]:
        """Why no dataset can be trained on (naming the file), or None."""
        if self.dataset is not None:
            return None
        if self.error:
            return self.error
        return "Choose a dataset: a built-in stance, a JSONL file or a new one."

    @Slot(int)
    def _on_chosen(self, index: int) -> None:
        data = self.box.itemData(index)
        if data == FROM_FILE:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a stance dataset", str(Path.home()),
                                                  "JSON lines (*.jsonl);;All files (*)")
            if path:
                self.load(Path(path))
        else:
            self.load(Path(data))

    @Slot()
    def new_dataset(self) -> None:
        editor = DatasetEditor(folder=self.session.library.folder.parent, parent=self)
        if editor.exec() == QDialog.DialogCode.Accepted and editor.saved_path is not None:
            self.load(editor.saved_path)

    def load(self, path: Path) -> bool:
        """Read ``path`` and show a preview; False (and the reason shown) if it is bad."""
        from stance_studio.core.datasets import load_dataset

        path = Path(path)
        self.preview.setRowCount(0)
        self.path = path
        if self.box.findData(str(path)) < 0:
            self.box.insertItem(self.box.count() - 1, f"File: {path.name}", str(path))
        self.box.setCurrentIndex(self.box.findData(str(path)))  # what was chosen, readable or not
        try:
            dataset = load_dataset(path, tokenizer=self.session.base.tokenizer if self.session.base else None)
        except (StanceStudioError, OSError) as exc:
            message = str(exc) if isinstance(exc, StanceStudioError) else f"{path}: {exc.strerror or exc}"
            self.dataset, self.error = None, message if path.name in message else f"{path}: {message}"
            self._show_note(self.error, "bad")
            self.changed.emit()
            return False
        self.dataset, self.error = dataset, None
        self.preview.setRowCount(len(dataset.examples))
        for r, example in enumerate(dataset.examples):
            self.preview.setItem(r, 0, QTableWidgetItem(example.prompt))
            self.preview.setItem(r, 1, QTableWidgetItem(example.response))
        self.preview.resizeRowsToContents()
        self._show_note(f"{len(dataset.examples)} examples from {path}", "muted")
        self.changed.emit()
        return True

    def _show_note(self, text: str, role: str) -> None:
        self.note.setText(text)
        self.note.setProperty("role", role)
        self.note.style().unpolish(self.note)
        self.note.style().polish(self.note)
