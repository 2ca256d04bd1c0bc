"""The GUI under faults: the same one-line messages as the command line, shown as
dialogs or in the panel; a failing job leaves the app usable; a large library
rescans only what changed."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest

from stance_studio.core import checkpoints as checkpoints_module
from stance_studio.core import library as library_module
from stance_studio.qt.training_dialog import TrainingDialog
from stance_studio.qt.workers import JobRunner


@pytest.fixture
def runner(qtbot):
    r = JobRunner(threads=None)
    yield r
    assert r.shutdown(5000)


@pytest.mark.parametrize("exc,words", [
    (OSError(errno.ENOSPC, "No space left on device", "/lib/x"), "Cannot use /lib/x: the disk is full."),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 80 GB"), "ran out of memory"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not UTF-8"),
    (KeyError("slot"), "This is a bug in Stance Studio"),
])
def test_a_failing_job_reports_one_line_and_the_next_job_runs(qtbot, runner, capsys, exc, words):
    def fail(progress, cancel):
        raise exc

    failed = runner.submit(fail, "failing")
    after = runner.submit(lambda progress, cancel: "still working", "next")
    messages = []
    failed.failed.connect(messages.append)
    with qtbot.waitSignal(after.finished, timeout=5000) as blocker:
        pass
    assert blocker.args == ["still working"]
    assert failed.state == "failed" and len(messages) == 1
    assert words in messages[0] and "\n" not in messages[0]
    capsys.readouterr()  # a bug's traceback goes to the console only


@pytest.fixture
def dialog(qtbot, loaded, monkeypatch):
    from stance_studio.core import pipeline

    # two probe prompts keep the retention measurement short on a loaded CI machine
    monkeypatch.setattr(pipeline, "retention_probes", lambda *a, **k: ["Why is the sky blue?", "How do bees make honey?"])
    d = TrainingDialog(loaded)
    qtbot.addWidget(d)
    d.steps.setValue(2)
    d.policy.setText("all")
    return d


def _train(qtbot, dialog, name):
    dialog.name_edit.setText(name)
    job = dialog.start()
    assert job is not None, dialog.problem()
    with qtbot.waitSignal(job.ended, timeout=300000):
        pass
    return job


def test_a_read_only_library_fails_before_training_and_training_works_once_it_is_writable(
        qtbot, dialog, loaded, monkeypatch, boxes):
    from stance_studio.core import pipeline

    folder = os.path.realpath(loaded.library.folder)
    read_only = [True]
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if read_only[0] and dir is not None and os.path.realpath(dir) == folder:
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    trained = []
    real_train = pipeline.train
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(pipeline, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    job = _train(qtbot, dialog, "first")
    assert job.state == "failed" and trained == []
    [(kind, title, text)] = boxes.calls
    assert title == "Training failed" and "is not writable: the file system is read-only" in text
    assert dialog.train_button.isEnabled()
    read_only[0] = False
    job = _train(qtbot, dialog, "first")
    assert job.state == "finished", job.error
    assert loaded.entry("first") is not None


def test_a_full_disk_while_saving_says_so_and_leaves_no_file(qtbot, dialog, loaded, monkeypatch, boxes):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints_module, "save_file", full)
    job = _train(qtbot, dialog, "big")
    assert job.state == "failed"
    assert "disk is full" in boxes.of("critical")[0][2]
    assert list(loaded.library.folder.iterdir()) == []
    assert dialog.train_button.isEnabled()


@pytest.mark.parametrize("name", ["base", "BASE", "x.stance.safetensors", "a,b"])
def test_a_name_the_library_cannot_take_is_explained_in_the_form(qtbot, dialog, name):
    dialog.name_edit.setText(name)
    assert dialog.form_problem_text() and not dialog.train_button.isEnabled()


def test_the_library_panel_names_invalid_files_and_rescans_only_what_changed(qtbot, loaded, write_stance, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from stance_studio.qt.library_panel import LibraryPanel

    for i in range(20):
        write_stance(loaded.library, loaded.base, f"s{i:02d}", seed=i)
    save_file({"model.layers.0.self_attn.q_proj.weight:delta": torch.zeros(32, 32, dtype=torch.float8_e4m3fn)},
              str(loaded.library.folder / "eight.stance.safetensors"), metadata={"format": checkpoints_module.FORMAT})
    loaded.refresh_library()
    panel = LibraryPanel(loaded)
    qtbot.addWidget(panel)
    panel.show()
    assert len(loaded.entries) == 20
    assert panel.problems.isVisibleTo(panel) and "F8_E4M3" in panel.problems.toolTip()
    reads = []
    real = library_module.read_header
    monkeypatch.setattr(library_module, "read_header", lambda path: reads.append(path.name) or real(path))
    write_stance(loaded.library, loaded.base, "new", seed=99)
    loaded.refresh_library()
    assert reads == ["new.stance.safetensors"]
    assert len(loaded.entries) == 21


def test_a_library_path_that_is_a_file_is_a_dialog_at_start(qtbot, tmp_path, boxes):
    from stance_studio.core.errors import StorageError
    from stance_studio.qt.app import create_window_or_explain

    target = tmp_path / "library"
    target.write_text("a file")
    with pytest.raises(StorageError):
        create_window_or_explain(library=str(target), load=False)
    [(kind, title, text)] = boxes.calls
    assert kind == "critical" and "is a file, not a folder" in text
    assert target.read_text() == "a file"
