"""The main window: panels in docks, layout remembered, menus and shortcuts wired,
errors shown as dialogs, the app starting and loading a model in the background."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox

from stance_studio.qt.main_window import MainWindow


@pytest.fixture
def window(qtbot, session):
    w = MainWindow(session)
    qtbot.addWidget(w)
    return w


def _actions(window):
    return {a.text().replace("&", ""): a for top in window.menuBar().actions() for a in top.menu().actions()}


def test_every_panel_is_a_dock(window):
    assert set(window.docks) == {"model", "library", "blend", "plots", "jobs"}
    assert all(d.widget() is not None and d.objectName() for d in window.docks.values())
    assert window.centralWidget() is window.compare


def test_layout_is_saved_and_restored(qtbot, session, window):
    window.docks["plots"].hide()
    window.save_layout()
    again = MainWindow(session)
    qtbot.addWidget(again)
    again.restore_layout()
    assert again.docks["plots"].isHidden() and not again.docks["blend"].isHidden()
    again.reset_layout()
    assert not again.docks["plots"].isHidden()


def test_menus_have_shortcuts(window):
    actions = _actions(window)
    assert actions["Train new stance…"].shortcut().toString() == "Ctrl+T"
    assert [k.toString() for k in actions["Run side by side"].shortcuts()] == ["Ctrl+Return", "Ctrl+Enter"]
    assert actions["Reset blend to base"].shortcut().toString() == "Ctrl+0"
    assert actions["Quit"].shortcut().toString()


def test_session_errors_become_dialogs(window, boxes):
    window.session.error.emit("Could not load the model", "models/x does not exist.")
    assert boxes.of("warning") == [("warning", "Could not load the model", "models/x does not exist.")]
    assert "does not exist" in window.statusBar().currentMessage()


def test_a_bad_model_path_shows_the_reason(qtbot, window, boxes, tmp_path):
    job = window.model_panel.load(str(tmp_path / "no-such-model"))
    with qtbot.waitSignal(job.ended, timeout=10000):
        pass
    assert boxes.of("warning") and "does not exist" in boxes.of("warning")[0][2]
    assert window.session.base is None
    assert "Not loaded" in window.model_panel.status.text()


def test_loading_the_tiny_model_in_the_background(qtbot, window):
    job = window.model_panel.load("tiny")
    assert window.model_panel.progress.isVisibleTo(window.model_panel)
    with qtbot.waitSignal(window.session.host.model_changed, timeout=10000):
        pass
    assert window.session.base.model_id == "tiny"
    assert window.model_panel.fields["Layers"].text() == "4"
    assert "tiny" in window.windowTitle()
    assert window.session.settings.recent_models()[0] == "tiny"
    qtbot.waitUntil(lambda: job.state == "finished", timeout=5000)
    assert not window.model_panel.progress.isVisibleTo(window.model_panel)


def test_training_needs_a_model_first(window, boxes):
    window.open_training()
    assert "Load a base model" in boxes.of("information")[0][2]


def test_dark_theme_switch_is_remembered(window):
    from stance_studio.qt import theme

    window.set_theme("dark")
    try:
        assert theme.current() == "dark"
        assert QApplication.instance().palette().window().color().name() == theme.colors("dark")["window"]
        assert window.session.settings.get("ui/theme") == "dark"
    finally:
        window.set_theme("light")


def test_about_box(window, boxes):
    window.about()
    assert boxes.of("about") and "Stance Studio" in boxes.of("about")[0][2]


def test_create_window_loads_the_requested_model(qtbot, tmp_path):
    from stance_studio.qt.app import create_window

    window = create_window("tiny", library=str(tmp_path / "lib"))
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.session.base is not None, timeout=10000)
    assert window.session.library.folder == tmp_path / "lib"
    window.close()


def test_window_fits_a_1280_pixel_wide_screen_with_a_stance_in_every_panel(qtbot, loaded, write_stance):
    """Long legends, notes and many columns wrap or scroll: they never widen the window."""
    from stance_studio.qt.compare_column import CURRENT_BLEND, STANCE

    write_stance(loaded.library, loaded.base, "a-stance-with-a-rather-long-name", kinds=("q_proj", "v_proj", "up_proj"))
    loaded.refresh_library()
    window = MainWindow(loaded)
    qtbot.addWidget(window)
    window.show()
    name = "a-stance-with-a-rather-long-name"
    for spec in (STANCE + name, CURRENT_BLEND, STANCE + name, STANCE + name):
        window.compare.add_column(spec)
    window.plots.layers.show_stance(name)
    qtbot.waitUntil(lambda: bool(window.plots.layers.changes) and not loaded.runner.busy, timeout=10000)
    assert "up_proj" in window.plots.layers.legend.text()
    assert window.minimumSizeHint().width() <= 1280


def test_quitting_during_training_asks_once(qtbot, loaded, boxes):
    window = MainWindow(loaded)
    qtbot.addWidget(window)
    window.show()
    window.open_training()
    dialog = window._training_dialog
    dialog.steps.setValue(100000)
    dialog.policy.setText("all")
    dialog.name_edit.setText("never")
    job = dialog.start()
    with qtbot.waitSignal(job.progressed, timeout=60000):
        pass
    window.close()
    assert [c[1] for c in boxes.of("question")] == ["Quit Stance Studio"]
    assert job.state in ("running", "cancelled") and job._task.cancel.is_set()
    assert not window.isVisible() and not dialog.isVisible()
    assert loaded.entry("never") is None


def test_quitting_waits_out_a_job_that_cannot_stop_with_the_window_hidden(qtbot, loaded, monkeypatch, capsys):
    import threading
    import time

    from stance_studio.qt.model_host import ModelHost

    monkeypatch.setattr(ModelHost, "SHUTDOWN_WAIT_MS", 100)
    window = MainWindow(loaded)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    started, stopped, hidden = threading.Event(), threading.Event(), []

    def first_gguf_load(progress, cancel):
        started.set()
        time.sleep(0.8)  # dequantizing: no cancel check in here
        hidden.append(not window.isVisible())
        stopped.set()

    loaded.runner.submit(first_gguf_load, "Loading model.gguf")
    assert started.wait(5)
    window.close()
    assert stopped.is_set() and loaded.runner._thread.isFinished()  # waited for, never abandoned
    assert hidden == [True]  # the window was gone while we waited
    assert "waiting for Loading model.gguf" in capsys.readouterr().err


def test_the_model_is_loaded_at_start_unless_turned_off(qtbot, tmp_path):
    from stance_studio.qt.app import create_window
    from stance_studio.qt.settings import Settings

    settings = Settings()
    settings.set("model/last", "tiny")
    settings.set("model/load_on_start", False)
    settings.sync()
    window = create_window(library=str(tmp_path / "lib"))
    qtbot.addWidget(window)
    assert not window.session.runner.busy and window.session.base is None
    assert not window.model_panel.on_start_box.isChecked()
    window.model_panel.on_start_box.setChecked(True)  # the panel's box is the setting
    window.close()

    again = create_window(library=str(tmp_path / "lib"))
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: again.session.base is not None, timeout=10000)
    assert again.session.base.model_id == "tiny"
    again.close()


def test_the_library_environment_variable_wins_over_the_chosen_folder(qtbot, tmp_path, monkeypatch, boxes):
    import os

    from stance_studio.qt.session import Session
    from stance_studio.qt.settings import Settings

    settings = Settings()
    settings.set("library/folder", str(tmp_path / "chosen"))
    session = Session(settings)
    try:
        assert str(session.library.folder) == os.environ["STANCE_STUDIO_LIBRARY"]
        window = MainWindow(session)
        qtbot.addWidget(window)
        assert session.catalog.set_folder(str(tmp_path / "other")) is False
        assert "STANCE_STUDIO_LIBRARY" in boxes.of("warning")[0][2]
        assert str(session.library.folder) == os.environ["STANCE_STUDIO_LIBRARY"]
        assert settings.get("library/folder") == str(tmp_path / "chosen")
    finally:
        session.shutdown()
    monkeypatch.delenv("STANCE_STUDIO_LIBRARY")
    unset = Session(settings)
    try:
        assert unset.library.folder == tmp_path / "chosen"  # without it, the chosen folder
        assert unset.catalog.set_folder(str(tmp_path / "other")) and unset.library.folder == tmp_path / "other"
    finally:
        unset.shutdown()


def test_first_model_load_offers_the_builtin_stances_once_after_the_load_ended(qtbot, session, boxes):
    from stance_studio.core.tiny import tiny_base

    window = MainWindow(session)
    qtbot.addWidget(window)
    boxes.answer = QMessageBox.StandardButton.No
    session.host.set_base(tiny_base())
    # not asked from inside the model-changed signal (the load's own handlers come first) …
    assert not boxes.of("question")
    # … but from the event loop right after, and only on the first load
    qtbot.waitUntil(lambda: bool(boxes.of("question")), timeout=5000)
    assert "built-in stances" in boxes.of("question")[0][2]
    session.host.set_base(tiny_base())
    qtbot.wait(50)
    assert len(boxes.of("question")) == 1
