"""The library panel lists checkpoints with their facts and compatibility, follows
the folder, and renames, deletes (after confirmation) and imports files."""

from __future__ import annotations

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


def test_import_copies_a_checkpoint_and_refuses_a_pickle(qtbot, loaded, write_stance, tmp_path, monkeypatch, boxes):
    from stance_studio.core.library import Library

    elsewhere = Library(tmp_path / "elsewhere")
    source = write_stance(elsewhere, loaded.base, "traveller")
    pickle = tmp_path / "evil.pt"
    pickle.write_bytes(b"\x80\x04K\x01.")
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(lambda *a, **k: ([str(source), str(pickle)], "")))
    panel = LibraryPanel(loaded)
    qtbot.addWidget(panel)
    panel.import_dialog()
    assert _column(panel, 1) == ["traveller"]
    assert len(boxes.of("warning")) == 1 and "pickle" in boxes.of("warning")[0][2]


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
