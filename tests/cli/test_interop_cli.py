import json

import numpy as np
import pytest
import torch

from stance_studio.cli import main
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.library import Library
from stance_studio.core.tiny import tiny_base


@pytest.fixture
def lib(library_path, deltas_factory):
    base = tiny_base()
    library = Library(library_path)
    library.save(make_checkpoint("lowrank", deltas_factory(base, rank=2, seed=3, scale=0.3), base))
    library.save(make_checkpoint("dense", deltas_factory(base, seed=4, scale=0.05), base))
    steer = make_checkpoint("steer", {}, base, training={"method": "steer"})
    steer.kind = "activation"
    steer.directions = {n: torch.full((32,), float(n + 1)) for n in range(4)}
    steer.steering = {"apply_layers": [2], "scale": 0.5, "norms": [1.0] * 4}
    library.save(steer)
    return library_path


def test_export_model_writes_a_loadable_folder(lib, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    assert main(["export-model", "lowrank=0.5,dense=-1", str(out), "--model", "tiny", "--library", str(lib),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["folder"] == str(out) and doc["variant"] == "lowrank=0.5,dense=-1"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 4


def test_export_model_of_a_steering_stance_is_exit_2_naming_the_way(lib, tmp_path, capsys):
    assert main(["export-model", "steer", str(tmp_path / "m"), "--model", "tiny", "--library", str(lib)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "export-gguf" in err[0]
    assert not (tmp_path / "m").exists()


def test_export_gguf_both_kinds(lib, tmp_path, capsys):
    from gguf import GGUFReader

    assert main(["export-gguf", "lowrank", str(tmp_path / "a.gguf"), "--model", "tiny", "--library", str(lib)]) == 0
    assert GGUFReader(str(tmp_path / "a.gguf")).fields["adapter.type"].contents() == "lora"
    capsys.readouterr()
    assert main(["export-gguf", "steer", str(tmp_path / "s.gguf"), "--library", str(lib), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "control vector"
    reader = GGUFReader(str(tmp_path / "s.gguf"))
    assert [t.name for t in reader.tensors] == ["direction.2"]
    assert np.array_equal(np.array(reader.tensors[0].data), np.full(32, 1.5, dtype=np.float32))
    assert main(["export-gguf", "dense", str(tmp_path / "d.gguf"), "--model", "tiny", "--library", str(lib)]) == 2
    assert "rank policy" in capsys.readouterr().err
    assert not (tmp_path / "d.gguf").exists()


def test_import_peft_round_trip(lib, tmp_path, capsys):
    assert main(["export-peft", "lowrank", str(tmp_path / "adapter"), "--library", str(lib)]) == 0
    capsys.readouterr()
    assert main(["import-peft", str(tmp_path / "adapter"), "--name", "back", "--model", "tiny", "--library", str(lib),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "back" and doc["ranks"] == [2]
    library = Library(lib)
    a, b = library.load("lowrank"), library.load("back")
    assert sorted(a.deltas) == sorted(b.deltas)
    assert all(torch.equal(a.deltas[n].A, b.deltas[n].A) and torch.equal(a.deltas[n].B, b.deltas[n].B) for n in a.deltas)
    assert main(["import-peft", str(tmp_path / "adapter"), "--name", "back", "--model", "tiny",
                 "--library", str(lib)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["import-peft", str(tmp_path), "--name", "x", "--model", "tiny", "--library", str(lib)]) == 2
    assert "adapter_config.json" in capsys.readouterr().err


def test_inspect_a_steering_stance_shows_per_layer_norms(lib, capsys):
    assert main(["inspect", "steer", "--model", "tiny", "--library", str(lib), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "activation" and doc["modules"] == []
    assert [r["layer"] for r in doc["layers"]] == [0, 1, 2, 3]
    assert [r["applied"] for r in doc["layers"]] == [False, False, True, False]
    assert doc["layers"][1]["norm"] == pytest.approx(2.0 * 32 ** 0.5)
    assert doc["layers"][2]["applied_norm"] == pytest.approx(0.5 * 3.0 * 32 ** 0.5)
    assert main(["inspect", "steer", "--model", "tiny", "--library", str(lib)]) == 0
    assert "activation steering" in capsys.readouterr().out


def test_sweep_layers_cli(lib, capsys):
    assert main(["sweep-layers", "steer", "--model", "tiny", "--library", str(lib), "--layers", "1,3", "--limit", "1",
                 "--max-new-tokens", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["layer"] for r in doc["rows"]] == [None, 1, 3] and doc["probes"] == 1
    assert main(["sweep-layers", "lowrank", "--model", "tiny", "--library", str(lib)]) == 2
    assert "not a steering stance" in capsys.readouterr().err


@pytest.mark.parametrize("layers", ["", " , "])
def test_sweep_layers_refuses_an_empty_layer_list(lib, capsys, layers):
    """An empty --layers used to sweep every layer in silence."""
    assert main(["sweep-layers", "steer", "--model", "tiny", "--library", str(lib), "--layers", layers]) == 2
    out, err = capsys.readouterr()
    assert f"--layers {layers!r} names no layer" in err and not out and "Traceback" not in err


@pytest.mark.parametrize("pair", [("steer", "lowrank"), ("lowrank", "steer"), ("steer", "steer")])
def test_interference_with_a_steering_stance_is_exit_2_naming_it(lib, capsys, pair):
    """It used to exit 0 with an empty table, as if the two stances did not overlap."""
    assert main(["interference", *pair, "--library", str(lib)]) == 2
    out, err = capsys.readouterr()
    assert "'steer' is a steering stance" in err and "weight deltas" in err and not out
    assert len(err.strip().splitlines()) == 1
