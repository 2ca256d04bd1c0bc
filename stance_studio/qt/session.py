"""The app's state, shared by every panel, as four small parts:

- ``host`` (:class:`~.model_host.ModelHost`): the loaded base model and the job runners;
- ``catalog`` (:class:`~.library_state.LibraryState`): the library folder, its
  entries, their compatibility with the model, cached checkpoints;
- ``blend`` (:class:`~.blend_state.BlendState`): the stances the model runs with and
  at what weight;
- ``saved`` (:class:`~.saved_blends.SavedBlends`): the named blends.

No widgets here. This object only builds the parts and wires them: a new model
resets the blend and re-judges compatibility; a stance renamed or gone from the
library is renamed in or dropped from the blend. Its signals ``message`` and
``error`` carry every part's status messages and errors. The few shortcuts below
(``base``, ``library``, ``runner``, ``entries``, ``entry``, ``refresh_library``) read
the parts; everything else is asked of the part itself.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QObject, Signal, Slot

from stance_studio.core.library import LibraryEntry
from stance_studio.qt.blend_state import BLEND_KEY, BlendState
from stance_studio.qt.library_state import LIBRARY_ENV, LibraryState
from stance_studio.qt.model_host import ModelHost
from stance_studio.qt.saved_blends import SavedBlends
from stance_studio.qt.settings import Settings
from stance_studio.qt.workers import JobRunner

__all__ = ["BLEND_KEY", "LIBRARY_ENV", "Session"]


class Session(QObject):
    message = Signal(str)  # a short status-bar message
    error = Signal(str, str)  # title, message: shown as a dialog

    def __init__(self, settings: Settings, library_folder: Optional[str] = None,
                 runner: Optional[JobRunner] = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._shut_down = False
        # The library first: a folder that cannot be used fails before any thread starts.
        self.catalog = LibraryState(settings, library_folder, parent=self)
        self.host = ModelHost(settings, runner, parent=self)
        self.blend = BlendState(self.host.runner, self.catalog.checkpoint, parent=self)
        self.saved = SavedBlends(settings, parent=self)
        # Wired before any panel connects, so the parts agree before panels hear of it.
        self.host.model_changed.connect(self._on_model_changed)
        self.catalog.renamed.connect(self.blend.rename)
        self.catalog.changed.connect(self._on_library_changed)
        for part in (self.host, self.catalog, self.blend):
            part.error.connect(self.error)
        self.host.message.connect(self.message)
        self.catalog.refresh()

    @Slot(object)
    def _on_model_changed(self, base) -> None:
        self.blend.set_base(base)
        self.catalog.set_base(base)

    @Slot()
    def _on_library_changed(self) -> None:
        self.blend.keep_only(self.catalog.names())

    # Shortcuts ----------------------------------------------------------------------

    @property
    def base(self):
        """The loaded base model (None: none yet)."""
        return self.host.base

    @property
    def library(self):
        """The core :class:`~stance_studio.core.library.Library` in use."""
        return self.catalog.library

    @property
    def runner(self) -> JobRunner:
        """The model worker's runner."""
        return self.host.runner

    @property
    def entries(self) -> list[LibraryEntry]:
        return self.catalog.entries

    def entry(self, name: str) -> Optional[LibraryEntry]:
        return self.catalog.entry(name)

    def refresh_library(self) -> None:
        self.catalog.refresh()

    def shutdown(self) -> None:
        """Stop watching the folder and stop both worker threads (waiting until they have)."""
        if self._shut_down:
            return
        self._shut_down = True
        self.catalog.shutdown()
        self.host.shutdown()
