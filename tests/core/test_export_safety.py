"""Exporting a PEFT adapter never deletes or damages what the app did not write."""

import errno
import json
import os

import pytest

from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core import peft_export
from stance_studio.core.errors import StorageError
from stance_studio.core.peft_export import export_peft


@pytest.fixture
def lowrank(tiny, deltas_factory):
    return make_checkpoint("s", deltas_factory(tiny, rank=2, kinds=("q_proj",)), tiny)


def test_export_into_an_adapter_folder_keeps_the_users_other_files(lowrank, tmp_path):
    out = tmp_path / "adapter"
    export_peft(lowrank, out)
    (out / "notes.txt").write_text("my notes")
    (out / "runs").mkdir()
    (out / "runs" / "log.csv").write_text("1,2\n")
    (out / "adapter_config.json").write_text('{"old": true}')
    export_peft(lowrank, out)
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "runs" / "log.csv").read_text() == "1,2\n"
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "notes.txt", "runs"]


def test_a_folder_without_an_adapter_is_refused_untouched(lowrank, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"precious")
    with pytest.raises(StorageError, match="holds no PEFT adapter"):
        export_peft(lowrank, out)
    assert [p.name for p in out.iterdir()] == ["model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == b"precious"


def test_a_file_as_target_is_refused_untouched(lowrank, tmp_path):
    target = tmp_path / "adapter"
    target.write_text("a file")
    with pytest.raises(StorageError, match="is a file"):
        export_peft(lowrank, target)
    assert target.read_text() == "a file"


def test_an_unwritable_target_is_a_storage_error(lowrank, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="permission denied"):
            export_peft(lowrank, ro / "adapter")
    finally:
        ro.chmod(0o700)


def test_full_disk_during_export_leaves_the_old_adapter_whole(lowrank, tmp_path, monkeypatch):
    out = tmp_path / "adapter"
    export_peft(lowrank, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("stance_studio.core.peft_export.save_file", full)
    with pytest.raises(StorageError, match="disk is full"):
        export_peft(lowrank, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(StorageError, match="disk is full"):
        export_peft(lowrank, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_a_failed_config_write_leaves_the_old_weights_too(tiny, deltas_factory, lowrank, tmp_path, monkeypatch):
    """The adapter's two files are replaced as a pair: when the second cannot be written,
    the first is not replaced either (new weights never sit beside the old config)."""
    out = tmp_path / "adapter"
    export_peft(lowrank, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = make_checkpoint("s", deltas_factory(tiny, rank=2, scale=0.7, kinds=("q_proj",)), tiny)

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(peft_export._ADAPTER_FILES, "adapter_config.json", full)
    with pytest.raises(StorageError, match="disk is full"):
        export_peft(other, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_export_target_that_is_empty_or_inside_the_library_is_refused(tmp_path, monkeypatch):
    """An empty path meant the current folder; a path in the library put an export
    among the stances (a GGUF named x.stance.safetensors listed as a broken stance)."""
    from stance_studio.core.errors import StorageError
    from stance_studio.core.storage import check_export_target

    library = tmp_path / "lib"
    library.mkdir()
    monkeypatch.chdir(library)
    for target in ("", "  ", library, library / "x.stance.safetensors", library / "sub" / "adapter", "."):
        with pytest.raises(StorageError, match="is empty|is the stance library|is inside the stance library"):
            check_export_target(target, library, "PEFT adapter")
    assert list(library.iterdir()) == []
    assert check_export_target(tmp_path / "out", library, "model") == tmp_path / "out"
    assert check_export_target(tmp_path / "lib2", library, "model") == tmp_path / "lib2"  # a sibling is fine
