"""First launch with shipped checkpoints for the loaded model: they are offered first
and added without training; training stays on offer, and another model is offered
training only."""

import pytest

from stance_studio.core import shipped
from stance_studio.core.checkpoints import make_checkpoint, save_checkpoint
from stance_studio.core.datasets import builtin_stances
from stance_studio.core.tiny import tiny_base
from stance_studio.core.training import TrainConfig
from stance_studio.qt.first_run import offer_builtin_training
from tests.conftest import make_deltas


@pytest.fixture
def shipped_folder(tmp_path, monkeypatch):
    """A shipped set for the default tiny model (random deltas, real manifest)."""
    base, folder = tiny_base(), tmp_path / "shipped"
    folder.mkdir()
    stances = []
    for seed, name in enumerate(builtin_stances()):
        path = folder / f"{name}.stance.safetensors"
        ckpt = make_checkpoint(name, make_deltas(base, rank=2, seed=seed), base, training={"method": "full"})
        save_checkpoint(ckpt, path)
        stances.append(shipped.ShippedStance(name, path, shipped.sha256_of(path), path.stat().st_size,
                                             ckpt.base["fingerprint"]))
    shipped._write_manifest(shipped.ShippedSet(folder, base.model_id, shipped.model_fingerprint(base), "rank:2",
                                               tuple(stances)), TrainConfig())
    monkeypatch.setattr(shipped, "default_folder", lambda: folder)
    return folder


def test_shipped_stances_are_added_without_training(qtbot, loaded, boxes, shipped_folder):
    assert loaded.entries == []
    assert offer_builtin_training(loaded, None) == []  # no training queued
    questions = boxes.of("question")
    assert len(questions) == 1 and "ready-made" in questions[0][2] and loaded.base.model_id in questions[0][2]
    qtbot.waitUntil(lambda: len(loaded.entries) == 3, timeout=20000)
    assert sorted(e.name for e in loaded.entries) == sorted(builtin_stances())
    for entry in loaded.entries:
        assert entry.path.read_bytes() == (shipped_folder / entry.path.name).read_bytes()
        assert loaded.catalog.compatibility(entry.name)[0] is True
    assert sorted(loaded.catalog.compatible_names()) == sorted(builtin_stances())  # side by side columns


def test_choosing_no_still_offers_training(qtbot, loaded, boxes, shipped_folder):
    from PySide6.QtWidgets import QMessageBox

    boxes.answer = QMessageBox.StandardButton.No
    assert offer_builtin_training(loaded, None) == []
    titles = [title for _, title, _ in boxes.of("question")]
    assert titles == ["Add the built-in stances", "Train the built-in stances"]
    assert loaded.entries == []


def test_another_model_is_offered_training_only(qtbot, session, boxes, shipped_folder):
    from PySide6.QtWidgets import QMessageBox

    session.host.set_base(tiny_base(seed=1))
    boxes.answer = QMessageBox.StandardButton.No
    offer_builtin_training(session, None)
    assert [title for _, title, _ in boxes.of("question")] == ["Train the built-in stances"]
