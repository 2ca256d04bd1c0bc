import json

import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import LowRankDelta
from stance_studio.core.errors import CheckpointError
from stance_studio.core.peft_export import export_peft


def test_peft_adapter_gives_same_logits_as_apply(tiny, deltas_factory, tmp_path):
    from peft import PeftModel

    deltas = deltas_factory(tiny, rank=3, kinds=("q_proj", "v_proj"), scale=0.2)
    name = next(iter(deltas))
    from stance_studio.core.deltas import truncate_rank

    deltas[name] = truncate_rank(deltas[name].materialize(), 2)  # mixed ranks
    ckpt = make_checkpoint("s", deltas, tiny)
    out = export_peft(ckpt, tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 3
    ids = torch.tensor([[1, 7, 30, 99, 5]])
    blender = Blender(tiny)
    blender.apply([(ckpt, 1.0)])
    ours = tiny.model(ids).logits.detach().clone()
    blender.reset()
    base_logits = tiny.model(ids).logits.detach().clone()
    peft_model = PeftModel.from_pretrained(tiny.model, str(out))
    theirs = peft_model(input_ids=ids).logits.detach()
    assert not torch.allclose(ours, base_logits)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_dense_checkpoint_cannot_export(tiny, deltas_factory, tmp_path):
    with pytest.raises(CheckpointError, match="dense deltas"):
        export_peft(make_checkpoint("d", deltas_factory(tiny), tiny), tmp_path / "a")
    assert not (tmp_path / "a").exists()


def embedding_checkpoint(tiny, deltas_factory):
    deltas = deltas_factory(tiny, rank=2, kinds=("q_proj",))
    vocab, hidden = tiny.parameters["model.embed_tokens.weight"].shape
    deltas["model.embed_tokens.weight"] = LowRankDelta(A=torch.ones(2, hidden), B=torch.ones(vocab, 2))
    return make_checkpoint("emb", deltas, tiny)


@pytest.mark.parametrize("how", ["recorded", "base", "older file"])
def test_an_embedding_delta_is_refused_naming_it(tiny, deltas_factory, tmp_path, how):
    """PEFT would load a LoRA pair on an embedding and silently leave the logits as base's."""
    ckpt = embedding_checkpoint(tiny, deltas_factory)
    if how == "older file":
        del ckpt.base["not_linear"]
    with pytest.raises(CheckpointError, match="not the weight of a Linear module") as err:
        export_peft(ckpt, tmp_path / "adapter", base=tiny if how == "base" else None)
    assert "model.embed_tokens.weight" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_norm_deltas_are_refused_naming_them(tiny, deltas_factory, tmp_path):
    ckpt = make_checkpoint("n", deltas_factory(tiny, rank=2, include_norm=True), tiny)
    with pytest.raises(CheckpointError, match="1-D parameters") as err:
        export_peft(ckpt, tmp_path / "adapter")
    assert "model.layers.0.input_layernorm.weight" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_steering_stance_or_an_empty_one_is_refused_naming_the_way(tiny, tmp_path):
    """A steering stance has no deltas: the export failed inside max() (an internal error)."""
    steer = make_checkpoint("s", {}, tiny, training={"method": "steer"})
    steer.kind = "activation"
    steer.directions = {n: torch.ones(32) for n in range(tiny.num_layers)}
    with pytest.raises(CheckpointError, match="'s' is an activation-steering stance.*export-gguf"):
        export_peft(steer, tmp_path / "adapter")
    with pytest.raises(CheckpointError, match="'e' changes no parameter"):
        export_peft(make_checkpoint("e", {}, tiny), tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
