import json

import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.errors import ExportError
from stance_studio.core.model_export import export_model

IDS = torch.tensor([[1, 7, 30, 99, 5, 12]])


def test_exported_blend_loads_in_transformers_with_the_apps_logits(tiny, deltas_factory, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = make_checkpoint("a", deltas_factory(tiny, rank=2, scale=0.3), tiny)
    b = make_checkpoint("b", deltas_factory(tiny, kinds=("o_proj",), scale=0.1, seed=1, include_norm=True), tiny)
    blend = [(a, 0.7), (b, -0.4)]
    blender = Blender(tiny)
    base_logits = tiny.model(IDS).logits.detach().clone()
    blender.apply(blend)
    ours = tiny.model(IDS).logits.detach().clone()
    blender.reset()

    out = export_model(tiny, blend, tmp_path / "merged", blender=blender, spec="a=0.7,b=-0.4")
    assert blender.is_base and torch.equal(tiny.model(IDS).logits, base_logits)  # the live model is untouched
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    theirs = loaded(IDS).logits.detach()
    assert not torch.allclose(ours, base_logits, atol=1e-3)
    # the app adds x Δᵀ to x W0ᵀ at runtime; the folder holds W0 + Δ: equal up to float rounding
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("Why is the sky blue?").input_ids == tiny.tokenizer("Why is the sky blue?").input_ids
    assert json.loads((out / "stance-studio-export.json").read_text())["variant"] == "a=0.7,b=-0.4"


def test_the_blend_in_force_is_put_back(tiny, deltas_factory, tmp_path):
    a = make_checkpoint("a", deltas_factory(tiny, rank=2, scale=0.3), tiny)
    blender = Blender(tiny)
    blender.apply([(a, 0.5)])
    live = tiny.model(IDS).logits.detach().clone()
    export_model(tiny, [(a, 1.0)], tmp_path / "m", blender=blender)
    assert blender.active == [(a, 0.5)]
    assert torch.equal(tiny.model(IDS).logits, live)


def test_a_folder_with_user_files_is_refused_and_left_alone(tiny, deltas_factory, tmp_path):
    a = make_checkpoint("a", deltas_factory(tiny, rank=2), tiny)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export_model(tiny, [(a, 1.0)], out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary left behind


def test_an_earlier_export_is_replaced_but_not_if_a_user_added_a_file(tiny, deltas_factory, tmp_path):
    a = make_checkpoint("a", deltas_factory(tiny, rank=2), tiny)
    out = export_model(tiny, [(a, 1.0)], tmp_path / "m")
    export_model(tiny, [(a, 0.5)], out)
    assert json.loads((out / "stance-studio-export.json").read_text())["stances"][0]["alpha"] == 0.5
    (out / "README.md").write_text("my notes")
    with pytest.raises(ExportError, match="README.md"):
        export_model(tiny, [(a, 1.0)], out)
    assert (out / "README.md").read_text() == "my notes"
