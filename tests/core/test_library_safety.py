"""The library under faults: a path that is a file, a read-only folder, a full disk,
a killed save, reserved names and files that would shadow stances."""

import errno
import os
import tempfile
import time

import pytest

from stance_studio.core.checkpoints import make_checkpoint, save_checkpoint
from stance_studio.core.errors import LibraryError, StorageError
from stance_studio.core.library import Library, looks_like_path
from stance_studio.core.pipeline import build_stance
from stance_studio.core.training import TrainConfig


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder refuse new files: by permissions, or (as root, who ignores them)
    by refusing temporary files there."""

    def make(folder):
        if os.geteuid() != 0:
            folder.chmod(0o500)
            return
        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and os.path.realpath(dir).startswith(os.path.realpath(folder)):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)

    return make


def test_a_library_path_that_is_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "lib"
    target.write_text("not a folder")
    with pytest.raises(StorageError, match="is a file, not a folder"):
        Library(target)
    with pytest.raises(StorageError, match="Cannot create the stance library folder"):
        Library(target / "inside")
    assert target.read_text() == "not a folder"


def test_a_read_only_library_is_refused_before_training(tiny, tmp_path, read_only, monkeypatch):
    lib = Library(tmp_path / "lib")
    read_only(lib.folder)
    trained = []
    monkeypatch.setattr("stance_studio.core.pipeline.train", lambda *a, **k: trained.append(1))
    try:
        with pytest.raises(StorageError, match="not writable"):
            build_stance(tiny, "curious-uncertainty", "x", TrainConfig(steps=1), library=lib, probes=["hi"])
    finally:
        lib.folder.chmod(0o700)
    assert trained == []


def test_a_full_disk_during_save_leaves_nothing_behind(tiny, deltas_factory, tmp_path, monkeypatch):
    lib = Library(tmp_path / "lib")
    lib.save(make_checkpoint("kept", deltas_factory(tiny), tiny))
    before = (lib.folder / "kept.stance.safetensors").read_bytes()

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("stance_studio.core.checkpoints.save_file", full)
    with pytest.raises(StorageError, match="disk is full") as err:
        lib.save(make_checkpoint("new", deltas_factory(tiny), tiny))
    assert "new" in str(err.value)
    with pytest.raises(StorageError, match="disk is full"):
        lib.save(make_checkpoint("kept", deltas_factory(tiny, seed=3), tiny), overwrite=True)
    assert sorted(p.name for p in lib.folder.iterdir()) == ["kept.stance.safetensors"]
    assert (lib.folder / "kept.stance.safetensors").read_bytes() == before


def test_a_full_disk_reported_by_safetensors_is_a_storage_error(tiny, deltas_factory, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def full(tensors, filename, metadata=None):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("stance_studio.core.checkpoints.save_file", full)
    with pytest.raises(StorageError, match="disk is full"):
        save_checkpoint(make_checkpoint("n", deltas_factory(tiny), tiny), tmp_path / "n.stance.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_opening_the_library_removes_only_its_own_stale_temporaries(tmp_path):
    folder = tmp_path / "lib"
    folder.mkdir()
    old = time.time() - 2 * 3600
    stale = folder / ".tmp-abc123.part"
    fresh = folder / ".tmp-def456.part"
    foreign = [folder / ".tmp-notes.txt", folder / "user.part", folder / "x.stance.safetensors.bak"]
    for path in [stale, fresh, *foreign]:
        path.write_bytes(b"x")
        if path is not fresh:
            os.utime(path, (old, old))
    Library(folder)
    assert not stale.exists()
    assert fresh.exists() and all(p.exists() for p in foreign)


@pytest.mark.parametrize("name", ["base", "Base", " BASE ", "x.stance.safetensors"])
def test_reserved_and_path_like_names_are_refused(tiny, deltas_factory, tmp_path, name):
    lib = Library(tmp_path / "lib")
    with pytest.raises(LibraryError):
        lib.save(make_checkpoint(name, deltas_factory(tiny), tiny))
    with pytest.raises(LibraryError):
        lib.path_for(name)
    assert list(lib.folder.iterdir()) == []


def test_a_file_in_the_current_folder_never_shadows_a_stance(tiny, deltas_factory, tmp_path, monkeypatch):
    lib = Library(tmp_path / "lib")
    lib.save(make_checkpoint("a", deltas_factory(tiny), tiny))
    monkeypatch.chdir(tmp_path)
    save_checkpoint(make_checkpoint("other", deltas_factory(tiny, seed=9), tiny), tmp_path / "a")
    assert lib.resolve("a") == lib.folder / "a.stance.safetensors"
    assert lib.resolve("./a") == tmp_path / "a"
    assert lib.load("./a").stance["name"] == "other"
    (tmp_path / "b").write_bytes((tmp_path / "a").read_bytes())
    with pytest.raises(LibraryError, match=r"write '\./b'"):
        lib.resolve("b")
    with pytest.raises(LibraryError, match="does not exist"):
        lib.resolve("./missing.stance.safetensors")


@pytest.mark.parametrize("text,is_path", [
    ("a", False), ("my stance", False), ("v1.2", False), ("./a", True), ("../a", True), ("dir/a", True),
    ("/abs/a", True), ("~/a", True), ("a.stance.safetensors", True),
])
def test_what_looks_like_a_path(text, is_path):
    assert looks_like_path(text) is is_path


def test_a_pipe_or_device_named_like_a_checkpoint_is_never_read_and_named_for_what_it_is(tiny, deltas_factory, tmp_path):
    """A named pipe was reported as a file that "does not exist" (and reading one would
    wait forever); /dev/zero the same."""
    from stance_studio.core.checkpoints import read_header
    from stance_studio.core.datasets import load_dataset, load_probes
    from stance_studio.core.errors import CheckpointError, DatasetError

    lib = Library(tmp_path / "lib")
    lib.save(make_checkpoint("a", deltas_factory(tiny), tiny))
    fifo = lib.folder / "pipe.stance.safetensors"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.stance.safetensors"
    loop.symlink_to(loop)
    assert lib.names() == ["a"]
    assert any(p.path.name == "pipe.stance.safetensors" and "pipe" in p.message for p in lib.scan()[1])
    for target in (fifo, "/dev/zero"):
        with pytest.raises(LibraryError, match="is a device, pipe or socket, not a file"):
            lib.resolve(target)
        with pytest.raises(CheckpointError, match="is a device, pipe or socket, not a file"):
            read_header(target)
        with pytest.raises(DatasetError, match="is a device, pipe or socket, not a file"):
            load_dataset(target)
        with pytest.raises(DatasetError, match="is a device, pipe or socket, not a file"):
            load_probes(target)
    with pytest.raises(LibraryError, match="symbolic link that loops"):
        lib.resolve(loop)


def test_a_name_whose_file_is_not_a_checkpoint_says_what_is_there(tmp_path):
    """'inspect dir' with a folder dir.stance.safetensors in the library said "No
    checkpoint named 'dir'" beside the skipped-file warning naming it; 'base' the same."""
    lib = Library(tmp_path / "lib")
    (lib.folder / "dir.stance.safetensors").mkdir()
    (lib.folder / "loop.stance.safetensors").symlink_to(lib.folder / "loop.stance.safetensors")
    with pytest.raises(LibraryError, match=r"dir.stance.safetensors in .* is named like a stance but is a folder, not a file"):
        lib.resolve("dir")
    with pytest.raises(LibraryError, match="loop.stance.safetensors in .* is a symbolic link that loops"):
        lib.resolve("loop")
    with pytest.raises(LibraryError, match="'BASE' is the unchanged base model, not a checkpoint"):
        lib.resolve("BASE")
    with pytest.raises(LibraryError, match="No checkpoint named 'nope'"):
        lib.resolve("nope")
