"""Start the desktop app: ``stance-studio`` with no sub-command calls :func:`run`."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from stance_studio.core.errors import StanceStudioError
from stance_studio.core.failures import describe


def create_window(model_spec: Optional[str] = None, library: Optional[str] = None, load: bool = True):
    """Build the session and main window (QApplication must exist).

    Starts loading a model in the background when ``load``: ``model_spec`` if given
    (``--model``), else the last one used unless the ``model/load_on_start`` setting
    is off."""
    from PySide6.QtWidgets import QApplication

    from stance_studio.qt import theme
    from stance_studio.qt.main_window import MainWindow
    from stance_studio.qt.session import Session
    from stance_studio.qt.settings import Settings

    settings = Settings()
    theme.apply_theme(QApplication.instance(), settings.get("ui/theme"))
    try:
        session = Session(settings, library_folder=library)
    except OSError as exc:
        raise StanceStudioError(f"Cannot open the stance library: {describe(exc)}") from exc
    window = MainWindow(session)
    window.resize(1440, 900)
    window.restore_layout()
    if load and (model_spec or settings.get("model/load_on_start")):
        spec = model_spec or settings.get("model/last") or "bundled"
        if spec != "bundled":
            window.model_panel.set_spec(spec)
        session.host.load_model(spec)
    return window


def create_window_or_explain(model_spec: Optional[str] = None, library: Optional[str] = None, load: bool = True):
    """:func:`create_window`, and when it cannot be made (e.g. the library folder is a
    file), the reason in a dialog as well as on the console, where a desktop user
    would never look."""
    try:
        return create_window(model_spec, library, load)
    except StanceStudioError as exc:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.critical(None, "Cannot start Stance Studio", str(exc))
        raise


def collect_garbage_in_gui_thread(app) -> None:
    """Run Python's cyclic garbage collector only on the GUI thread, on a timer.

    Left automatic, it runs in whichever thread allocates, and the worker allocates
    all the time: a Qt object it frees there (a widget, a watcher) corrupts Qt."""
    from pyqtgraph.util.garbage_collector import GarbageCollector

    if getattr(app, "_stance_gc", None) is None:
        app._stance_gc = GarbageCollector(interval=1.0)


def run(model_spec: Optional[str] = None, library: Optional[str] = None, argv: Optional[Sequence[str]] = None) -> int:
    """Open the main window, load the model in the background, run the event loop."""
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from stance_studio.core.resources import resource
    from stance_studio.qt.settings import APPLICATION, ORGANISATION

    QCoreApplication.setOrganizationName(ORGANISATION)
    QCoreApplication.setApplicationName(APPLICATION)
    app = QApplication.instance() or QApplication(list(argv) if argv is not None else sys.argv[:1])
    try:
        app.setWindowIcon(QIcon(str(resource("icons", "stance-studio.svg"))))
    except StanceStudioError:
        pass
    collect_garbage_in_gui_thread(app)
    window = create_window_or_explain(model_spec, library)
    window.show()
    return app.exec()
