import json

import pytest

from stance_studio.cli import main
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.library import Library
from stance_studio.core.tiny import tiny_base


@pytest.fixture
def filled_library(library_path, deltas_factory):
    base = tiny_base()
    lib = Library(library_path)
    lib.save(make_checkpoint("curious", deltas_factory(base, scale=0.5), base, training={"method": "full"}))
    lib.save(make_checkpoint("lowrank", deltas_factory(base, rank=2, seed=3), base, training={"method": "lora"}))
    return library_path


def test_list_json_follows_contract(filled_library, capsys):
    assert main(["list", "--library", str(filled_library), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"curious", "lowrank"}
    assert set(rows[0]) == {"name", "path", "bytes", "base", "method", "bits_per_weight"}
    assert all(r["bits_per_weight"] > 0 for r in rows)
    assert {r["method"] for r in rows} == {"full", "lora"}


def test_list_names_the_corrupt_file_on_stderr(filled_library, capsys):
    (filled_library / "bad.stance.safetensors").write_bytes(b"junk")
    assert main(["list", "--library", str(filled_library), "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 2
    assert "bad.stance.safetensors" in captured.err


def test_inspect_json_modules(filled_library, capsys):
    assert main(["inspect", "curious", "--model", "tiny", "--library", str(filled_library), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    modules = doc["modules"]
    assert len(modules) == 8  # q_proj and v_proj in 4 layers
    assert {"name", "layer", "kind", "relative_change"} <= set(modules[0])
    assert {m["kind"] for m in modules} == {"q_proj", "v_proj"}
    changes = [m["relative_change"] for m in modules]
    assert changes == sorted(changes, reverse=True) and changes[-1] > 0


def test_inspect_on_wrong_base_is_exit_2_with_one_line(filled_library, capsys):
    assert main(["inspect", "curious", "--model", "tiny:3", "--library", str(filled_library)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tiny:3" in err[0] and "Traceback" not in err[0]


def test_generate_json_columns(filled_library, capsys):
    code = main(["generate", "--model", "tiny", "--library", str(filled_library), "--prompt", "hello there",
                 "--variant", "base", "--variant", "curious", "--variant", "curious=0.5,lowrank=-1",
                 "--max-new-tokens", "8", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    cols = doc["columns"]
    assert [c["variant"] for c in cols] == ["base", "curious", "curious=0.5,lowrank=-1"]
    assert cols[0]["text"] != cols[1]["text"]


def test_generate_default_columns_are_base_and_library(filled_library, capsys):
    assert main(["generate", "--model", "tiny", "--library", str(filled_library), "--prompt", "hi",
                 "--max-new-tokens", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["variant"] for c in doc["columns"]] == ["base", "curious", "lowrank"]


def test_generate_text_output_shows_columns(filled_library, capsys):
    assert main(["generate", "--model", "tiny", "--library", str(filled_library), "--prompt", "hi",
                 "--variant", "base", "--variant", "curious", "--max-new-tokens", "4"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("base") and "curious" in first


@pytest.mark.parametrize("argv, needle", [
    (["generate", "--model", "tiny", "--prompt", "x", "--variant", "a=b"], "a=b"),
    (["generate", "--model", "tiny", "--prompt", "x", "--variant", "ghost"], "ghost"),
    (["inspect", "nothing-here", "--model", "tiny"], "nothing-here"),
    (["list", "--model", "/no/such/dir", "--json"], None),
])
def test_user_mistakes_exit_2_without_traceback(argv, needle, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    if needle is None:
        assert code == 0  # list never loads a model
        return
    assert code == 2 and needle in err and "Traceback" not in err


def test_export_peft_cli(filled_library, tmp_path, capsys):
    out = tmp_path / "adapter"
    assert main(["export-peft", "lowrank", str(out), "--library", str(filled_library), "--json"]) == 0
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert main(["export-peft", "curious", str(tmp_path / "x"), "--library", str(filled_library)]) == 2


def test_list_survives_metadata_that_is_not_an_object(filled_library, capsys):
    import torch
    from safetensors.torch import save_file

    from stance_studio.core.checkpoints import FORMAT

    path = filled_library / "odd.stance.safetensors"
    save_file({"model.norm.weight:delta": torch.zeros(32)}, str(path), metadata={"format": FORMAT, "base": "[1,2]"})
    assert main(["list", "--library", str(filled_library), "--json"]) == 0
    captured = capsys.readouterr()
    assert {r["name"] for r in json.loads(captured.out)} == {"curious", "lowrank"}
    assert "odd.stance.safetensors" in captured.err and "'base'" in captured.err and "Traceback" not in captured.err


def test_inspect_reports_bits_per_weight_of_a_packed_checkpoint(library_path, deltas_factory, capsys):
    from stance_studio.core.extraction import extract

    base = tiny_base()
    kept, info = extract(deltas_factory(base, kinds=("q_proj", "up_proj")), base, "rank:2+q4")
    Library(library_path).save(make_checkpoint("packed", kept, base, training={"method": "full"}, extraction=info))
    assert main(["inspect", "packed", "--model", "tiny", "--library", str(library_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["bits_per_weight"] == pytest.approx(info["bits_per_weight"], abs=1e-3) and doc["bits_per_weight"] < 8
    assert doc["extraction"]["representations"] == {"lowrank-q": len(kept)}
    assert main(["inspect", "packed", "--model", "tiny", "--library", str(library_path)]) == 0
    assert f"{info['bits_per_weight']:.2f} bits per touched weight ({len(kept)} lowrank-q)" in capsys.readouterr().out
