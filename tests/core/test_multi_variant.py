import torch

from stance_studio.core import multi_variant
from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import DenseDelta
from stance_studio.core.generation import GenerationSettings, side_by_side

SETTINGS = GenerationSettings(max_new_tokens=12)


def _columns(tiny, deltas_factory):
    dense = make_checkpoint("dense", deltas_factory(tiny, scale=0.3, include_norm=True), tiny)
    low = make_checkpoint("low", deltas_factory(tiny, rank=3, scale=0.3, kinds=("q_proj", "down_proj")), tiny)
    emb = make_checkpoint("emb", {"model.embed_tokens.weight": DenseDelta(torch.randn(400, 32) * 0.3)}, tiny)
    return [[], [(dense, 1.0)], [(low, 0.7), (dense, -0.5)], [(emb, 1.0), (low, 1.0)]]


def test_batched_columns_equal_one_at_a_time(tiny, deltas_factory):
    columns = _columns(tiny, deltas_factory)
    assert multi_variant.supports(tiny, columns)
    blender = Blender(tiny)
    streamed = {}
    batched = side_by_side(tiny, blender, columns, "hello there", SETTINGS,
                           on_token=lambda i, t: streamed.__setitem__(i, t))
    swapped = side_by_side(tiny, blender, columns, "hello there", SETTINGS, batched=False)
    assert [g.new_ids for g in batched] == [g.new_ids for g in swapped]
    assert len({tuple(g.new_ids) for g in batched}) == 4
    assert all(streamed[i] == g.text for i, g in enumerate(batched) if g.new_ids)


def test_hooks_are_removed_and_weights_untouched(tiny, deltas_factory):
    columns = _columns(tiny, deltas_factory)
    w0 = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    ids = torch.tensor([[1, 4, 9]])
    before = tiny.model(ids).logits.detach().clone()
    side_by_side(tiny, Blender(tiny), columns, "hi", SETTINGS)
    assert torch.equal(tiny.model(ids).logits.detach(), before)
    assert all(torch.equal(p.detach(), w0[n]) for n, p in tiny.model.named_parameters())


class OnePlusNorm(torch.nn.Module):
    """A norm whose output is affine, not linear, in its weight (x̂ ⊙ (1 + w))."""

    def __init__(self, size):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(size))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + self.weight)


def test_non_linear_module_falls_back_to_swapping(deltas_factory):
    from stance_studio.core.tiny import tiny_base

    base = tiny_base()
    base.model.model.layers[0].input_layernorm = OnePlusNorm(32)
    base.tensor_hashes = __import__("stance_studio.core.models", fromlist=["x"]).tensor_hashes(base.model)
    name = "model.layers.0.input_layernorm.weight"
    ckpt = make_checkpoint("norm", {name: DenseDelta(torch.full((32,), 0.5))}, base)
    columns = [[], [(ckpt, 1.0)]]
    assert not multi_variant.supports(base, columns)
    blender = Blender(base)
    results = side_by_side(base, blender, columns, "hello there", SETTINGS)
    expected = side_by_side(base, blender, columns, "hello there", SETTINGS, batched=False)
    assert [g.new_ids for g in results] == [g.new_ids for g in expected]
