import gc

from PySide6.QtWidgets import QApplication

from stance_studio.qt.app import collect_garbage_in_gui_thread


def test_garbage_is_collected_on_the_gui_thread_only(qtbot):
    app = QApplication.instance()
    collect_garbage_in_gui_thread(app)
    collector = app._stance_gc
    # automatic collection is off (it would run in the worker thread too); a GUI timer does it
    assert not gc.isenabled() and collector.timer.isActive()
    collect_garbage_in_gui_thread(app)
    assert app._stance_gc is collector
