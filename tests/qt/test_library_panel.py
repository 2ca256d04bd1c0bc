"""The library panel lists checkpoints with their facts and compatibility, follows
the folder, and renames, deletes (after confirmation) and imports files."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from stance_studio.qt.library_panel import STANCE_MIME, LibraryPanel


def _column(panel, col):
    return [panel.table.item(r, col).text() for r in range(panel.table.rowCount())]


def _row(panel, name):
    return _column(panel, 1).index(name)


def _panel(qtbot, session, write_stance=None, *names):
    """A library panel over ``session``'s library, after writing stances ``names``."""
    for name in names:
        write_stance(session.library, session.base, name)
    session.refresh_library()
    panel = LibraryPanel(session)
    qtbot.addWidget(panel)
    return panel


def test_lists_entries_with_compatibility(qtbot, loaded, write_stance):
    from stance_studio.core.tiny import tiny_base

    write_stance(loaded.library, loaded.base, "curious")
    write_stance(loaded.library, tiny_base(seed=3), "foreign")
    loaded.refresh_library()
    panel = LibraryPanel(loaded)
    qtbot.addWidget(panel)
    assert sorted(_column(panel, 1)) == ["curious", "foreign"]
    assert panel.table.item(_row(panel, "curious"), 0).text() == "✓"
    mark = panel.table.item(_row(panel, "foreign"), 0)
    assert mark.text() == "✗" and "tiny:3" in mark.toolTip() and "tiny" in mark.toolTip()
    assert panel.table.item(_row(panel, "curious"), 4).text() == "90 %"
    assert panel.table.item(_row(panel, "curious"), 2).text() == "full"


def test_without_a_model_compatibility_is_unknown(qtbot, session, tiny, write_stance):
    write_stance(session.library, tiny, "curious")
    session.refresh_library()
    panel = LibraryPanel(session)
    qtbot.addWidget(panel)
    assert panel.table.item(0, 0).text() == "·"


def test_unreadable_files_are_reported_not_listed(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "good")
    (loaded.library.folder / "broken.stance.safetensors").write_bytes(b"\x00garbage")
    loaded.refresh_library()
    panel = LibraryPanel(loaded)
    qtbot.addWidget(panel)
    assert _column(panel, 1) == ["good"]
    assert panel.problems.isVisibleTo(panel)
    assert "broken.stance.safetensors" in panel.problems.toolTip()


def test_folder_changes_update_the_list(qtbot, loaded, write_stance):
    panel = LibraryPanel(loaded)
    qtbot.addWidget(panel)
    path = write_stance(loaded.library, loaded.base, "appeared")
    qtbot.waitUntil(lambda: _column(panel, 1) == ["appeared"], timeout=5000)
    path.unlink()
    qtbot.waitUntil(lambda: panel.table.rowCount() == 0, timeout=5000)


def test_rename(qtbot, loaded, write_stance, monkeypatch):
    panel = _panel(qtbot, loaded, write_stance, "old")
    panel.select("old")
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("new name", True)))
    panel.rename_selected()
    assert _column(panel, 1) == ["new name"]
    assert (loaded.library.folder / "new name.stance.safetensors").is_file()


def test_rename_to_a_bad_name_shows_the_reason(qtbot, loaded, write_stance, monkeypatch, boxes):
    panel = _panel(qtbot, loaded, write_stance, "old")
    panel.select("old")
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("../escape", True)))
    panel.rename_selected()
    assert boxes.of("warning") and "not a valid stance name" in boxes.of("warning")[0][2]
    assert _column(panel, 1) == ["old"]


def test_delete_asks_first_and_respects_cancel(qtbot, loaded, write_stance, boxes):
    path = write_stance(loaded.library, loaded.base, "doomed")
    panel = _panel(qtbot, loaded)
    panel.select("doomed")
    boxes.answer = QMessageBox.StandardButton.Cancel
    panel.delete_selected()
    assert path.exists() and "doomed" in boxes.of("question")[0][2]
    boxes.answer = QMessageBox.StandardButton.Yes
    panel.delete_selected()
    assert not path.exists() and panel.table.rowCount() == 0


def test_import_runs_off_the_gui_thread_and_refuses_a_pickle(qtbot, loaded, write_stance, tmp_path, monkeypatch, boxes):
    import threading

    from stance_studio.core.library import Library

    elsewhere = Library(tmp_path / "elsewhere")
    source = write_stance(elsewhere, loaded.base, "traveller")
    pickle = tmp_path / "evil.pt"
    pickle.write_bytes(b"\x80\x04K\x01.")
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(lambda *a, **k: ([str(source), str(pickle)], "")))
    threads = []
    original = Library.import_file

    def import_file(self, path, name=None):
        threads.append(threading.current_thread())
        return original(self, path, name)

    monkeypatch.setattr(Library, "import_file", import_file)
    messages = []
    loaded.message.connect(messages.append)
    panel = LibraryPanel(loaded)
    qtbot.addWidget(panel)
    job = panel.import_dialog()
    assert job.is_active and job in loaded.host.side_runner.active_jobs()
    with qtbot.waitSignal(job.ended, timeout=10000):
        pass
    assert len(threads) == 2 and threading.main_thread() not in threads
    assert _column(panel, 1) == ["traveller"] and panel.selected_names() == ["traveller"]
    assert len(boxes.of("warning")) == 1
    title, text = boxes.of("warning")[0][1:]
    assert title == "Could not import" and "evil.pt" in text and "pickle" in text
    assert messages[-1] == "Imported traveller."


def test_base_and_created_columns_sort_by_value_and_can_be_shown(qtbot, loaded, write_stance):
    from PySide6.QtCore import Qt

    from stance_studio.qt.library_panel import COLUMNS

    for name in ("a", "b", "c"):
        write_stance(loaded.library, loaded.base, name)
    loaded.refresh_library()
    facts = {  # as text, neither the sizes nor the (time-zoned) dates sort in this order
        "a": (2_000_000, "2024-01-01T10:00:00+05:00"),  # 05:00 UTC
        "b": (900, "2024-01-01T06:00:00+00:00"),  # 06:00 UTC
        "c": (10_240, "2023-12-31T23:30:00-06:00"),  # 05:30 UTC
    }
    for entry in loaded.entries:
        entry.bytes, entry.created = facts[entry.name]
    panel = LibraryPanel(loaded)
    qtbot.addWidget(panel)
    size, created, base = (COLUMNS.index(t) for t in ("Size", "Created", "Base"))
    panel.table.sortItems(size, Qt.SortOrder.AscendingOrder)
    assert _column(panel, 1) == ["b", "c", "a"] and _column(panel, size)[0] == "900 B"
    panel.table.sortItems(created, Qt.SortOrder.AscendingOrder)
    assert _column(panel, 1) == ["a", "c", "b"]
    assert set(_column(panel, base)) == {loaded.base.model_id}
    menu = panel.columns_menu()
    assert [a.text() for a in menu.actions()] == ["Method", "Size", "Retention", "Base", "Created"]
    action = next(a for a in menu.actions() if a.text() == "Created")
    action.setChecked(True)
    action.setChecked(False)
    assert not panel.column_shown("Created") and panel.table.isColumnHidden(created)
    action.setChecked(True)
    assert panel.column_shown("Created")


@pytest.fixture
def styled():
    """The app's real look (style sheet and palette), undone afterwards."""
    from PySide6.QtWidgets import QApplication

    from stance_studio.qt import theme

    app = QApplication.instance()
    sheet, palette, style = app.styleSheet(), app.palette(), app.style().name()
    theme.apply_theme(app, "light")
    yield
    app.setStyleSheet(sheet)
    app.setPalette(palette)
    app.setStyle(style)


def test_readable_at_360_pixels_wide_and_more_columns_when_wider(qtbot, loaded, write_stance, styled):
    panel = _panel(qtbot, loaded, write_stance, "curious-uncertainty", "confident-expertise")
    panel.resize(360, 520)
    panel.show()
    qtbot.waitExposed(panel)
    header = panel.table.horizontalHeader()

    def fits():
        return header.length() <= panel.table.viewport().width()  # no sideways scrolling

    assert panel.width() <= 360 and fits()
    assert header.sectionSize(1) >= panel.table.fontMetrics().horizontalAdvance("curious-uncertainty") + 8
    assert [panel.column_shown(t) for t in ("Size", "Retention", "Method", "Created", "Base")] == [True, True, False, False, False]
    panel.resize(640, 520)
    qtbot.waitUntil(lambda: panel.column_shown("Created"), timeout=2000)
    assert panel.column_shown("Method") and fits()
    panel.show_column("Method", False)  # a choice from the header menu outlasts resizing
    panel.resize(900, 520)
    qtbot.waitUntil(lambda: panel.column_shown("Base"), timeout=2000)
    assert not panel.column_shown("Method") and fits()


def test_rows_drag_as_stance_names(qtbot, loaded, write_stance):
    panel = _panel(qtbot, loaded, write_stance, "curious")
    items = [panel.table.item(0, c) for c in range(panel.table.columnCount())]
    data = panel.table.mimeData(items)
    assert bytes(data.data(STANCE_MIME)) == b'["curious"]'


def test_details_show_how_the_stance_was_made(qtbot, loaded, write_stance):
    panel = _panel(qtbot, loaded, write_stance, "curious")
    seen = []
    panel.selection_changed.connect(seen.append)
    panel.select("curious")
    text = panel.details.toPlainText()
    assert "curious" in text and "full" in text and "Retention" in text
    assert seen[-1] == ["curious"]


def test_details_count_the_modules_extraction_kept(qtbot, loaded, deltas_factory):
    """The details read the record extraction writes (``kept_modules``)."""
    from stance_studio.core.checkpoints import make_checkpoint

    deltas = deltas_factory(loaded.base, kinds=("q_proj", "v_proj"))
    kept = sorted(deltas)[:3]
    ckpt = make_checkpoint("kept3", {n: deltas[n] for n in kept}, loaded.base,
                           extraction={"policy": "top:3", "kept_modules": kept})
    loaded.library.save(ckpt)
    panel = _panel(qtbot, loaded)
    panel.select("kept3")
    lines = [line.replace("\xa0", " ").strip() for line in panel.details.toPlainText().splitlines()]
    assert lines[lines.index("Kept modules") + 1] == "3"


def test_details_show_what_training_measured(qtbot, loaded, deltas_factory):
    """The figures train records (stance fit, the tuned model's marker score and KL) reach the details."""
    from stance_studio.core.checkpoints import make_checkpoint

    metrics = {"retention": 0.98, "stance_fit_nats": 1.0767, "stance_fit_ci95": [0.93, 1.25],
               "stance_fit_train_nats": 3.06, "tuned_stance_score": -0.2047, "tuned_kl_to_base": 1.4823}
    loaded.library.save(make_checkpoint("measured", deltas_factory(loaded.base), loaded.base, metrics=metrics))
    panel = _panel(qtbot, loaded)
    panel.select("measured")
    lines = [line.replace("\xa0", " ").strip() for line in panel.details.toPlainText().splitlines()]
    after = lambda label: lines[lines.index(label) + 1]  # noqa: E731
    assert after("Stance fit, held-out") == "+1.08 [+0.93, +1.25] nats/token"
    assert after("Stance fit, training split") == "+3.06 nats/token"
    assert after("Marker score") == "-0.205" and after("KL to base") == "1.48"
