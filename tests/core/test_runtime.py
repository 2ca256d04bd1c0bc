"""The stance runtime: per-row weights, modules of any kind, activation terms and
training copies."""

import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import DenseDelta
from stance_studio.core.generation import GenerationSettings, side_by_side
from stance_studio.core.models import tensor_hashes
from stance_studio.core.runtime import base_copy, runtime_for
from stance_studio.core.tiny import tiny_base

SETTINGS = GenerationSettings(max_new_tokens=12)
IDS = torch.tensor([[1, 4, 9, 3, 7]])


def _columns(tiny, deltas_factory):
    dense = make_checkpoint("dense", deltas_factory(tiny, scale=0.3, include_norm=True), tiny)
    low = make_checkpoint("low", deltas_factory(tiny, rank=3, scale=0.3, kinds=("q_proj", "down_proj")), tiny)
    emb = make_checkpoint("emb", {"model.embed_tokens.weight": DenseDelta(torch.randn(400, 32) * 0.3)}, tiny)
    return [[], [(dense, 1.0)], [(low, 0.7), (dense, -0.5)], [(emb, 1.0), (low, 1.0)]]


def test_each_row_of_a_batch_runs_its_own_blend(tiny, deltas_factory):
    columns = _columns(tiny, deltas_factory)
    runtime = runtime_for(tiny.model)
    expected = []
    for blend in columns:
        with runtime.scoped(blend):
            expected.append(tiny.model(IDS).logits.detach()[0])
    with runtime.rows(columns):
        rows = tiny.model(IDS.repeat(len(columns), 1)).logits.detach()
    for got, want in zip(rows, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert len({round(float(r.sum()), 3) for r in rows}) == len(columns)


def test_batched_side_by_side_equals_one_column_at_a_time(tiny, deltas_factory):
    columns = _columns(tiny, deltas_factory)
    blender = Blender(tiny)
    streamed = {}
    batched = side_by_side(tiny, blender, columns, "hello there", SETTINGS,
                           on_token=lambda i, t: streamed.__setitem__(i, t))
    single = side_by_side(tiny, blender, columns, "hello there", SETTINGS, batched=False)
    assert [g.new_ids for g in batched] == [g.new_ids for g in single]
    assert len({tuple(g.new_ids) for g in batched}) == 4
    assert all(streamed[i] == g.text for i, g in enumerate(batched) if g.new_ids)


def test_per_row_run_leaves_the_shown_blend_and_the_weights(tiny, deltas_factory):
    columns = _columns(tiny, deltas_factory)
    w0 = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    blender = Blender(tiny)
    blender.apply(columns[2])
    before = tiny.model(IDS).logits.detach().clone()
    side_by_side(tiny, blender, columns, "hi", SETTINGS)
    assert torch.equal(tiny.model(IDS).logits.detach(), before)
    assert [a for _, a in blender.active] == [0.7, -0.5]
    blender.reset()
    assert all(torch.equal(p.detach(), w0[n]) for n, p in tiny.model.named_parameters())


class OnePlusNorm(torch.nn.Module):
    """A norm whose output is affine, not linear, in its weight (x̂ ⊙ (1 + w))."""

    def __init__(self, size):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(size))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + self.weight)


def test_a_module_not_linear_in_its_weight_is_exact_per_row():
    base = tiny_base()
    base.model.model.layers[0].input_layernorm = OnePlusNorm(32)
    base.tensor_hashes = tensor_hashes(base.model)
    name = "model.layers.0.input_layernorm.weight"
    ckpt = make_checkpoint("norm", {name: DenseDelta(torch.full((32,), 0.5))}, base)
    reference = base_copy(base.model)
    with torch.no_grad():
        dict(reference.named_parameters())[name].add_(0.5)
    runtime = runtime_for(base.model)
    with runtime.rows([[], [(ckpt, 1.0)]]):
        rows = base.model(IDS.repeat(2, 1)).logits.detach()
    torch.testing.assert_close(rows[0], base_copy(base.model)(IDS).logits.detach()[0])
    torch.testing.assert_close(rows[1], reference(IDS).logits.detach()[0], rtol=1e-4, atol=1e-5)
    Blender(base).apply([(ckpt, 1.0)])
    torch.testing.assert_close(base.model(IDS).logits.detach(), reference(IDS).logits.detach(), rtol=1e-4, atol=1e-5)


class Steering:
    """A stance made of activation terms only (the steering extension point)."""

    def __init__(self, vectors):
        self.deltas = {}
        self.activations = vectors


def test_activation_terms_add_a_scaled_vector_to_the_layer_output(tiny):
    layer = tiny.model.model.layers[1]
    seen = []
    handle = tiny.model.model.layers[2].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    vector = torch.randn(32)
    stance = Steering({"model.layers.1": vector})
    runtime = runtime_for(tiny.model)
    try:
        tiny.model(IDS)
        with runtime.rows([[], [(stance, 2.0)], [(stance, -0.5)]]):
            tiny.model(IDS.repeat(3, 1))
    finally:
        handle.remove()
    plain, batch = seen[0][0], seen[1]
    torch.testing.assert_close(batch[0], plain)
    torch.testing.assert_close(batch[1], plain + 2.0 * vector, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch[2], plain - 0.5 * vector, rtol=1e-5, atol=1e-5)
    assert layer is tiny.model.model.layers[1]


def test_a_training_copy_carries_no_stance(tiny, deltas_factory):
    blender = Blender(tiny)
    blender.apply([(deltas_factory(tiny, rank=2, scale=0.3, include_norm=True), 1.0)])
    shown = tiny.model(IDS).logits.detach()
    copy = base_copy(tiny.model)
    assert not any(m._forward_hooks for m in copy.modules())
    blender.reset()
    torch.testing.assert_close(copy(IDS).logits.detach(), tiny.model(IDS).logits.detach(), rtol=0, atol=0)
    assert not torch.allclose(shown, copy(IDS).logits.detach())


def test_moving_a_slider_rebuilds_nothing(tiny, deltas_factory):
    """A loaded stance whose weight moves keeps its stacked factors: only numbers change."""
    ckpt = make_checkpoint("low", deltas_factory(tiny, rank=3, kinds=("q_proj",)), tiny)
    blender = Blender(tiny)
    blender.apply([(ckpt, 0.2)])
    tiny.model(IDS)
    slots = dict(blender.runtime._slots)
    prepared = {name: slot._prepared for name, slot in slots.items()}
    for alpha in (0.5, 0.0, -1.0):
        blender.apply([(ckpt, alpha)])
        tiny.model(IDS)
    assert blender.runtime._slots == slots
    assert all(slot._prepared is prepared[name] for name, slot in slots.items())


def test_gpt2_conv1d_takes_low_rank_and_dense_deltas_per_row():
    """A Conv1D stores its weight as in × out (y = x W + b)."""
    from transformers.pytorch_utils import Conv1D

    from stance_studio.core.deltas import LowRankDelta

    torch.manual_seed(0)
    model = torch.nn.Sequential(Conv1D(6, 4))
    low = {"0.weight": LowRankDelta(A=torch.randn(2, 6), B=torch.randn(4, 2))}
    dense = {"0.weight": DenseDelta(torch.randn(4, 6)), "0.bias": DenseDelta(torch.randn(6))}
    x = torch.randn(3, 5, 4)
    runtime = runtime_for(model)
    with runtime.rows([[(low, 0.5)], [], [(dense, -1.0), (low, 1.0)]]):
        got = model(x).detach()
    w, b = model[0].weight.detach(), model[0].bias.detach()
    expected = [
        x[0] @ (w + 0.5 * low["0.weight"].materialize()) + b,
        x[1] @ w + b,
        x[2] @ (w - dense["0.weight"].tensor + low["0.weight"].materialize()) + b - dense["0.bias"].tensor,
    ]
    for row, want in enumerate(expected):
        torch.testing.assert_close(got[row], want, rtol=1e-4, atol=1e-5)


def test_rows_sharing_a_blend_match_each_row_run_alone(tiny, deltas_factory):
    """Metrics run one blend on half the rows and the base on the rest; rows that
    share their weights are computed together and must equal a run of each alone."""
    dense = make_checkpoint("dense", deltas_factory(tiny, scale=0.3, include_norm=True), tiny)
    runtime = runtime_for(tiny.model)
    ids = torch.tensor([[1, 4, 9, 3, 7], [2, 5, 8, 6, 3], [7, 7, 1, 2, 9], [3, 1, 4, 1, 5]])
    blends = [[(dense, 1.0)], [(dense, 1.0)], [], [(dense, -0.5)]]
    with runtime.rows(blends):
        got = tiny.model(ids).logits.detach()
    for row, blend in enumerate(blends):
        with runtime.scoped(blend):
            want = tiny.model(ids[row : row + 1]).logits.detach()[0]
        torch.testing.assert_close(got[row], want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got[0], got[2], atol=1e-3)  # the stance moved the rows it ran on
