import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import truncate_rank
from stance_studio.core.errors import AdapterImportError
from stance_studio.core.library import Library
from stance_studio.core.peft_export import export_peft
from stance_studio.core.peft_import import import_peft, read_adapter

IDS = torch.tensor([[1, 7, 30, 99, 5, 12]])


def peft_adapter(tiny, folder, **lora):
    """An adapter saved by PEFT itself, with random (non-zero) B factors."""
    import copy

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny.model), LoraConfig(task_type="CAUSAL_LM", **lora))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model.save_pretrained(str(folder))
    return model


def test_export_then_import_gives_back_the_same_tensors(tiny, deltas_factory, tmp_path):
    deltas = deltas_factory(tiny, rank=3, kinds=("q_proj", "v_proj", "down_proj"), scale=0.2)
    name = sorted(deltas)[0]
    deltas[name] = truncate_rank(deltas[name].materialize(), 2)  # mixed ranks travel through alpha/rank patterns
    ckpt = make_checkpoint("s", deltas, tiny)
    export_peft(ckpt, tmp_path / "adapter")
    lib = Library(tmp_path / "lib")
    imported = import_peft(tmp_path / "adapter", "s-again", tiny, lib)
    assert sorted(imported.deltas) == sorted(deltas)
    for n, d in deltas.items():
        assert torch.equal(imported.deltas[n].A, d.A) and torch.equal(imported.deltas[n].B, d.B)
    loaded = lib.load("s-again")
    assert loaded.method == "peft" and torch.equal(loaded.deltas[name].B, deltas[name].B)


@pytest.mark.parametrize("lora", [
    {"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]},
    {"r": 4, "lora_alpha": 8, "use_rslora": True, "target_modules": ["o_proj", "up_proj"]},
    {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "rank_pattern": {"v_proj": 2},
     "alpha_pattern": {"v_proj": 6}},
])
def test_an_adapter_made_by_peft_gives_peft_s_logits(tiny, tmp_path, lora):
    peft_model = peft_adapter(tiny, tmp_path / "a", **lora)
    theirs = peft_model(input_ids=IDS).logits.detach()
    ckpt = import_peft(tmp_path / "a", "imported", tiny, Library(tmp_path / "lib"))
    blender = Blender(tiny)
    base_logits = tiny.model(IDS).logits.detach().clone()
    blender.apply([(ckpt, 1.0)])
    ours = tiny.model(IDS).logits.detach()
    blender.reset()
    assert not torch.allclose(theirs, base_logits, atol=1e-3)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_an_adapter_for_another_model_is_refused_clearly(tiny, tmp_path):
    from stance_studio.core.tiny import tiny_base

    wide = tiny_base(hidden=48)
    peft_adapter(wide, tmp_path / "a", r=2, lora_alpha=2, target_modules=["q_proj"])
    with pytest.raises(AdapterImportError, match=r"48×48 weight|32×32 weight"):
        read_adapter(tmp_path / "a", tiny)
    lib = Library(tmp_path / "lib")
    with pytest.raises(AdapterImportError):
        import_peft(tmp_path / "a", "x", tiny, lib)
    assert lib.names() == []


def test_unknown_targets_rank_mismatch_and_unsupported_kinds_are_refused(tiny, tmp_path):
    peft_adapter(tiny, tmp_path / "a", r=2, lora_alpha=2, target_modules=["q_proj"])
    folder = tmp_path / "a"
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    renamed = {k.replace("self_attn.q_proj", "attn.c_attn"): v for k, v in tensors.items()}
    save_file(renamed, str(folder / "adapter_model.safetensors"))
    with pytest.raises(AdapterImportError, match="does not exist in the loaded model"):
        read_adapter(folder, tiny)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "r": 3}))
    with pytest.raises(AdapterImportError, match="rank 2 in its tensors but 3"):
        read_adapter(folder, tiny)
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(AdapterImportError, match="DoRA"):
        read_adapter(folder, tiny)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(AdapterImportError, match="never unpickles"):
        read_adapter(folder, tiny)
    with pytest.raises(AdapterImportError, match="no adapter_config.json"):
        read_adapter(tmp_path, tiny)


@pytest.mark.parametrize("change,needle", [
    ({"r": "abc"}, 'r is "abc"; it must be a whole number'),
    ({"r": None}, "r is null; it must be a whole number"),
    ({"r": [2]}, "r is [2]; it must be a whole number"),
    ({"lora_alpha": "x"}, 'lora_alpha is "x"; it must be a finite number'),
    ({"lora_alpha": float("inf")}, "lora_alpha is Infinity; it must be a finite number"),
    ({"use_rslora": "false"}, 'use_rslora is "false"; it must be true or false'),
    ({"rank_pattern": [1, 2]}, "rank_pattern is [1, 2]; it must be an object"),
    ({"rank_pattern": {"q_proj": "x"}}, "rank_pattern['q_proj'] is \"x\"; it must be a whole number"),
    ({"alpha_pattern": {"q_proj": None}}, "alpha_pattern['q_proj'] is null; it must be a finite number"),
    ({"rank_pattern": {"[": 2}}, "rank_pattern key '[' is not a valid pattern"),
    ({"layer_replication": [[0, 2]]}, "repeats decoder layers (layer_replication)"),
    ({"lora_bias": True}, "adds a bias to lora_B"),
])
def test_a_hand_edited_config_is_named_field_by_field(tiny, deltas_factory, tmp_path, change, needle):
    """Each of these was an internal error (int('abc'), a list's .items(), a bad regex)
    or, for layer_replication and lora_bias, an import that quietly ignored them."""
    ckpt = make_checkpoint("a", deltas_factory(tiny, rank=2), tiny)
    folder = export_peft(ckpt, tmp_path / "a")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(AdapterImportError) as info:
        read_adapter(folder, tiny)
    assert needle in str(info.value) and str(folder) in str(info.value)
