"""Shipped checkpoints: rebuilt with train's job for a model, installed only after
every file's SHA-256 and base fingerprint check out."""

import json
import shutil

import pytest

from stance_studio.core import shipped
from stance_studio.core.errors import CheckpointError, IncompatibleBaseError, StanceStudioError
from stance_studio.core.library import Library
from stance_studio.core.tiny import tiny_base
from stance_studio.core.training import TrainConfig

NAMES = ["curious-uncertainty", "confident-expertise"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two built-in stances shipped for the tiny model (built once for the module)."""
    root = tmp_path_factory.mktemp("shipped")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STANCE_STUDIO_CACHE", str(root / "cache"))
        result = shipped.rebuild(tiny_base(), root / "set", names=NAMES, policy="rank:2",
                                 config=TrainConfig(steps=2, lr=3e-3))
    return result


@pytest.fixture
def folder(built, tmp_path):
    """A private copy of the built set (tests may damage it)."""
    return shutil.copytree(built.folder, tmp_path / "set")


def test_rebuild_writes_checkpoints_and_a_manifest(built):
    doc = json.loads((built.folder / "manifest.json").read_text())
    assert doc["format"] == shipped.FORMAT and doc["model"] == "tiny" and doc["policy"] == "rank:2"
    assert [s["name"] for s in doc["stances"]] == NAMES and doc["steps"] == 2
    for entry in doc["stances"]:
        path = built.folder / entry["file"]
        assert shipped.sha256_of(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
    again = shipped.load_set(built.folder)
    assert again == built and again.matches(tiny_base()) and not again.matches(tiny_base(seed=1))


def test_install_copies_verified_files_once(folder, tmp_path):
    base, library = tiny_base(), Library(tmp_path / "lib")
    assert [s.name for s in shipped.installable(base, library, folder)] == NAMES
    written = shipped.install(base, library, folder=folder)
    assert sorted(library.names()) == sorted(NAMES) and len(written) == 2
    for path in written:
        assert path.read_bytes() == (folder / path.name).read_bytes()
        assert library.load(path.name[: -len(".stance.safetensors")]).deltas
    assert shipped.installable(base, library, folder) == []
    assert shipped.install(base, library, folder=folder) == []  # already there: skipped
    assert len(shipped.install(base, library, names=[NAMES[0]], folder=folder, overwrite=True)) == 1


def test_another_model_is_refused_naming_both(folder, tmp_path):
    other, library = tiny_base(seed=1), Library(tmp_path / "lib")
    assert shipped.installable(other, library, folder) == []
    with pytest.raises(IncompatibleBaseError) as err:
        shipped.install(other, library, folder=folder)
    assert "tiny" in str(err.value) and other.model_id in str(err.value) and other.model_id != "tiny"
    assert library.names() == []


def test_a_corrupt_file_is_refused_by_name_and_nothing_is_installed(folder, tmp_path):
    library = Library(tmp_path / "lib")
    victim = folder / f"{NAMES[1]}.stance.safetensors"
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as err:
        shipped.install(tiny_base(), library, folder=folder)
    assert victim.name in str(err.value) and "SHA-256" in str(err.value)
    assert library.names() == []  # not even the intact one
    victim.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        shipped.install(tiny_base(), library, folder=folder)


def test_a_checkpoint_whose_base_differs_from_its_manifest_is_refused(folder, tmp_path, built):
    """A file swapped for one made on another model, with the manifest's hash updated."""
    from stance_studio.core.checkpoints import make_checkpoint, save_checkpoint
    from tests.conftest import make_deltas

    other = tiny_base(seed=2)
    target = folder / f"{NAMES[0]}.stance.safetensors"
    save_checkpoint(make_checkpoint(NAMES[0], make_deltas(other, rank=2), other), target)
    doc = json.loads((folder / "manifest.json").read_text())
    doc["stances"][0]["sha256"] = shipped.sha256_of(target)
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(IncompatibleBaseError) as err:
        shipped.install(tiny_base(), Library(tmp_path / "lib"), folder=folder)
    assert target.name in str(err.value) and "tiny:2" in str(err.value)


def test_no_set_and_a_bad_manifest_are_clear_errors(tmp_path):
    assert shipped.load_set(tmp_path) is None and shipped.installable(tiny_base(), Library(tmp_path / "l"), tmp_path) == []
    with pytest.raises(StanceStudioError, match="rebuild-builtins"):
        shipped.install(tiny_base(), Library(tmp_path / "l"), folder=tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(StanceStudioError) as err:
        shipped.load_set(tmp_path)
    assert "manifest.json" in str(err.value)


def test_rebuilding_one_stance_keeps_the_others_and_refuses_a_mixed_set(folder):
    """Rebuilding only one stance wrote a manifest naming only it: the others' files
    stayed, unlisted; into a set made on another model it mixed two models."""
    before = {s.name: s.sha256 for s in shipped.load_set(folder).stances}
    with pytest.raises(StanceStudioError, match="holds a shipped set made on tiny with policy rank:2 .*"
                                                "confident-expertise among them.*would leave a set of mixed"):
        shipped.rebuild(tiny_base(seed=1), folder, names=["curious-uncertainty"], policy="rank:2",
                        config=TrainConfig(steps=1))
    assert {s.name: s.sha256 for s in shipped.load_set(folder).stances} == before  # nothing written
    again = shipped.rebuild(tiny_base(), folder, names=["curious-uncertainty"], policy="rank:2",
                            config=TrainConfig(steps=1, lr=3e-3, seed=4))
    names = {s.name: s.sha256 for s in shipped.load_set(folder).stances}
    assert set(names) == set(NAMES) and names["confident-expertise"] == before["confident-expertise"]
    assert names["curious-uncertainty"] != before["curious-uncertainty"] and len(again.stances) == 2
