"""The stance library as the GUI sees it: the folder, its entries and problems, each
entry's compatibility with the loaded model, a folder watcher, and checkpoints
loaded lazily (in a job) and cached per file and modification time.

The folder is, first to last: the one given on the command line,
``STANCE_STUDIO_LIBRARY``, the one chosen in the GUI (a setting), the per-user default
— the same order as the CLI, so a script and the GUI see the same library.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

import shiboken6
from PySide6.QtCore import QFileSystemWatcher, QObject, QTimer, Signal, Slot

from stance_studio.core.checkpoints import StanceCheckpoint, load_checkpoint
from stance_studio.core.compatibility import compatibility
from stance_studio.core.errors import StanceStudioError
from stance_studio.core.library import Library, LibraryEntry, LibraryProblem
from stance_studio.qt.settings import Settings

LIBRARY_ENV = "STANCE_STUDIO_LIBRARY"


class LibraryState(QObject):
    changed = Signal()
    renamed = Signal(str, str)  # old name, new name (before ``changed``)
    error = Signal(str, str)

    def __init__(self, settings: Settings, folder: Optional[str] = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        env_folder = os.environ.get(LIBRARY_ENV, "")
        # Set when the environment variable decides the folder (the GUI may not change it).
        self.env_folder = env_folder if env_folder and not folder else ""
        # Opened before any worker thread starts: a folder that cannot be used fails
        # here cleanly, with no running thread left to abort the process.
        self.library = Library(folder or env_folder or settings.get("library/folder") or None)
        self.base = None
        self.entries: list[LibraryEntry] = []
        self.problems: list[LibraryProblem] = []
        self._compat: dict[str, tuple[bool, str]] = {}
        self._cache: dict[Path, tuple[int, StanceCheckpoint]] = {}
        self._cache_lock = threading.Lock()
        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(self._on_folder_changed)
        self._rescan = QTimer(self, singleShot=True, interval=250)
        self._rescan.timeout.connect(self.refresh)
        self._watch_folder()

    def set_folder(self, folder: str) -> bool:
        """Switch to ``folder`` and remember it; refused (False, with a dialog) while
        ``STANCE_STUDIO_LIBRARY`` decides the folder."""
        if self.env_folder:
            self.error.emit("Library folder is set by the environment",
                            f"{LIBRARY_ENV} is set to {self.env_folder}, which takes precedence over a folder chosen "
                            "here (as on the command line). Unset it and restart to choose another folder.")
            return False
        self.library = Library(folder)
        self.settings.set("library/folder", folder)
        self._watch_folder()
        self.refresh()
        return True

    def _watch_folder(self) -> None:
        if self._watcher.directories():
            self._watcher.removePaths(self._watcher.directories())
        self._watcher.addPath(str(self.library.folder))

    @Slot(str)
    def _on_folder_changed(self, _path: str) -> None:
        self._rescan.start()

    @Slot()
    def refresh(self) -> None:
        """Re-read the library headers (fast) and tell every panel."""
        try:
            self.entries, self.problems = self.library.scan()
        except OSError as exc:
            self.entries, self.problems = [], [LibraryProblem(self.library.folder, str(exc))]
        self._update_compatibility()
        self.changed.emit()

    @Slot(object)
    def set_base(self, base) -> None:
        """The loaded model changed: every entry's compatibility is judged again."""
        self.base = base
        self._update_compatibility()
        self.changed.emit()

    def names(self) -> set[str]:
        return {e.name for e in self.entries}

    def entry(self, name: str) -> Optional[LibraryEntry]:
        return next((e for e in self.entries if e.name == name), None)

    def _update_compatibility(self) -> None:
        self._compat = {}
        if self.base is None:
            return
        for entry in self.entries:
            try:
                self._compat[entry.name] = compatibility(entry.metadata, self.base)
            except (KeyError, ValueError, StanceStudioError) as exc:
                self._compat[entry.name] = (False, str(exc))

    def compatibility(self, name: str) -> tuple[Optional[bool], str]:
        """(True/False, reason) for a library stance against the loaded model;
        (None, ...) while no model is loaded."""
        if self.base is None:
            return None, "No model loaded."
        return self._compat.get(name, (False, f"{name} is not in the library."))

    def compatible_names(self) -> list[str]:
        return [e.name for e in self.entries if self.compatibility(e.name)[0]]

    def checkpoint(self, name: str) -> StanceCheckpoint:
        """The checkpoint ``name`` from the library (cached; call it in a job)."""
        path = self.library.resolve(name)
        mtime = path.stat().st_mtime_ns
        with self._cache_lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == mtime:
                return hit[1]
        ckpt = load_checkpoint(path)
        ckpt.name = name
        with self._cache_lock:
            self._cache[path] = (mtime, ckpt)
        return ckpt

    def rename(self, name: str, new_name: str) -> None:
        self.library.rename(name, new_name)
        self.renamed.emit(name, new_name)
        self.refresh()

    def delete(self, name: str) -> None:
        self.library.delete(name)
        self.refresh()

    def shutdown(self) -> None:
        """Stop watching, here in the GUI thread: Python's cycle collector frees a
        dropped session from whichever thread it happens to run in (the model worker
        included), and a watcher torn down from another thread corrupts memory."""
        self._rescan.stop()
        shiboken6.delete(self._watcher)
