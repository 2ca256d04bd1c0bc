import pytest

from stance_studio.core.checkpoints import make_checkpoint, save_checkpoint
from stance_studio.core.errors import LibraryError
from stance_studio.core.library import Library


def test_lists_saved_stances_with_metadata(tiny, deltas_factory, library_path):
    lib = Library(library_path)
    lib.save(make_checkpoint("curious", deltas_factory(tiny), tiny, training={"method": "full"}, metrics={"retention": 0.97}))
    lib.save(make_checkpoint("confident", deltas_factory(tiny, rank=2), tiny, training={"method": "lora"}))
    entries = {e.name: e for e in lib.entries()}
    assert set(entries) == {"curious", "confident"}
    assert entries["curious"].method == "full" and entries["curious"].retention == pytest.approx(0.97)
    assert entries["confident"].retention is None
    assert entries["curious"].base_model == tiny.model_id
    assert entries["curious"].bytes == entries["curious"].path.stat().st_size


def test_corrupt_file_is_reported_and_others_still_listed(tiny, deltas_factory, library_path):
    lib = Library(library_path)
    lib.save(make_checkpoint("good", deltas_factory(tiny), tiny))
    (library_path / "broken.stance.safetensors").write_bytes(b"\x00\x01garbage")
    (library_path / ".tmp-half.part").write_bytes(b"ignored")
    entries, problems = lib.scan()
    assert [e.name for e in entries] == ["good"]
    assert len(problems) == 1 and problems[0].path.name == "broken.stance.safetensors"
    assert "broken.stance.safetensors" in problems[0].message


def test_rename_delete_and_resolve(tiny, deltas_factory, library_path):
    lib = Library(library_path)
    lib.save(make_checkpoint("a", deltas_factory(tiny), tiny))
    lib.rename("a", "b")
    assert lib.names() == ["b"]
    assert lib.load("b").name == "b"
    with pytest.raises(LibraryError, match="No checkpoint named 'a'"):
        lib.load("a")
    lib.delete("b")
    assert lib.names() == []


def test_a_refused_name_is_told_which_letters_are_allowed_and_shown_short():
    """'ćür' was refused with "use letters", though ć and ü are letters."""
    from stance_studio.core.library import validate_name

    with pytest.raises(LibraryError, match=r"'ćür' is not a valid stance name: use ASCII letters \(a-z, A-Z\)"):
        validate_name("ćür")
    with pytest.raises(LibraryError) as info:
        validate_name("x" * 5000)
    assert len(str(info.value)) < 300


def test_save_refuses_to_overwrite_and_bad_names(tiny, deltas_factory, library_path):
    lib = Library(library_path)
    lib.save(make_checkpoint("a", deltas_factory(tiny), tiny))
    with pytest.raises(LibraryError, match="already exists"):
        lib.save(make_checkpoint("a", deltas_factory(tiny), tiny))
    with pytest.raises(LibraryError, match="not a valid stance name"):
        lib.save(make_checkpoint("../escape", deltas_factory(tiny), tiny))


def test_import_copies_a_valid_file_and_rejects_a_bad_one(tiny, deltas_factory, library_path, tmp_path):
    outside = save_checkpoint(make_checkpoint("ext", deltas_factory(tiny), tiny), tmp_path / "ext.stance.safetensors")
    lib = Library(library_path)
    lib.import_file(outside)
    assert lib.names() == ["ext"]
    bad = tmp_path / "bad.stance.safetensors"
    bad.write_bytes(b"nope")
    with pytest.raises(Exception, match="bad.stance.safetensors"):
        lib.import_file(bad)
    assert lib.names() == ["ext"]


def test_library_folder_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STANCE_STUDIO_LIBRARY", str(tmp_path / "envlib"))
    assert Library().folder == tmp_path / "envlib"


def test_files_that_cannot_open_are_reported_never_listed(tiny, deltas_factory, library_path):
    """Bad metadata or tensor layout shows in the header: such files are problems, named, not stances."""
    import torch
    from safetensors.torch import save_file

    from stance_studio.core.checkpoints import FORMAT

    lib = Library(library_path)
    lib.save(make_checkpoint("good", deltas_factory(tiny), tiny))
    q = "model.layers.0.self_attn.q_proj.weight"
    save_file({f"{q}:delta": torch.zeros(32, 32)}, str(library_path / "listy.stance.safetensors"),
              metadata={"format": FORMAT, "base": "[1, 2]"})
    save_file({f"{q}:A": torch.zeros(2, 32), f"{q}:B": torch.zeros(32, 3)}, str(library_path / "misfit.stance.safetensors"),
              metadata={"format": FORMAT})
    save_file({f"{q}:A": torch.zeros(2, 32)}, str(library_path / "half.stance.safetensors"), metadata={"format": FORMAT})
    entries, problems = lib.scan()
    assert [e.name for e in entries] == ["good"]
    messages = {p.path.name: p.message for p in problems}
    assert set(messages) == {"listy.stance.safetensors", "misfit.stance.safetensors", "half.stance.safetensors"}
    assert "'base' must be a JSON object" in messages["listy.stance.safetensors"]
    assert "low-rank factors do not fit" in messages["misfit.stance.safetensors"]
    assert all(name in message for name, message in messages.items())
