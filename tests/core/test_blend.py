import random

import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.errors import IncompatibleBaseError
from stance_studio.core.runtime import base_copy
from stance_studio.core.tiny import tiny_base

IDS = torch.tensor([[1, 5, 9, 12, 3]])


def snapshot(base):
    return {n: p.detach().clone() for n, p in base.model.named_parameters()}


def assert_bitwise(base, snap):
    for name, p in base.model.named_parameters():
        assert torch.equal(p.detach(), snap[name]), name


def merged_logits(base, blend):
    """Logits of a copy whose weights are W0 + Σ α Δ, written out (the reference)."""
    model = base_copy(base.model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for src, alpha in blend:
            deltas = src.deltas if hasattr(src, "deltas") else src
            for name, delta in deltas.items():
                params[name].add_(alpha * delta.materialize())
    return model(IDS).logits.detach()


def test_apply_computes_w0_plus_weighted_sum(tiny, deltas_factory):
    w0 = snapshot(tiny)
    a = make_checkpoint("a", deltas_factory(tiny, seed=1, include_norm=True), tiny)
    b = make_checkpoint("b", deltas_factory(tiny, rank=2, seed=2, kinds=("v_proj", "o_proj")), tiny)
    blender = Blender(tiny)
    blender.apply([(a, 0.7), (b, -0.3)])
    got = tiny.model(IDS).logits.detach()
    torch.testing.assert_close(got, merged_logits(tiny, [(a, 0.7), (b, -0.3)]), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, merged_logits(tiny, []))
    assert_bitwise(tiny, w0)  # the base tensors are never written


def test_a_thousand_random_slider_moves_leave_the_base_bitwise(tiny, deltas_factory):
    w0 = snapshot(tiny)
    before = tiny.model(IDS).logits.detach().clone()
    ckpts = [
        make_checkpoint("d", deltas_factory(tiny, seed=3, include_norm=True), tiny),
        make_checkpoint("l", deltas_factory(tiny, rank=4, seed=4, kinds=("q_proj", "down_proj")), tiny),
        make_checkpoint("m", deltas_factory(tiny, rank=1, seed=5, kinds=("k_proj", "v_proj")), tiny),
    ]
    blender = Blender(tiny)
    rng = random.Random(0)
    weights = [0.0, 0.0, 0.0]
    for move in range(1000):
        weights[rng.randrange(3)] = rng.choice([0.0, rng.uniform(-1.0, 2.0)])
        blender.apply(list(zip(ckpts, weights)))
        if move % 250 == 0:
            tiny.model(IDS)  # the hooks run in between
            blender.runtime.merge = move % 500 == 0  # and the merge switch writes and restores
    blender.runtime.merge = False
    blender.reset()
    assert_bitwise(tiny, w0)
    assert blender.is_base
    assert torch.equal(tiny.model(IDS).logits.detach(), before)


def test_merge_switch_gives_the_same_model_and_restores_exactly(tiny, deltas_factory):
    w0 = snapshot(tiny)
    a = make_checkpoint("a", deltas_factory(tiny, rank=3, seed=1, include_norm=True), tiny)
    blender = Blender(tiny)
    blender.apply([(a, 0.8)])
    runtime_out = tiny.model(IDS).logits.detach()
    blender.runtime.merge = True
    changed = [n for n, p in tiny.model.named_parameters() if not torch.equal(p.detach(), w0[n])]
    assert sorted(changed) == sorted(a.deltas)
    torch.testing.assert_close(tiny.model(IDS).logits.detach(), runtime_out, rtol=1e-4, atol=1e-5)
    for name in a.deltas:
        assert torch.equal(blender.original(name), w0[name])
    blender.apply([(a, -0.4)])  # rewritten from W0, not accumulated
    torch.testing.assert_close(tiny.model(IDS).logits.detach(), merged_logits(tiny, [(a, -0.4)]), rtol=1e-4, atol=1e-5)
    blender.runtime.merge = False
    assert_bitwise(tiny, w0)


def test_zero_weights_give_base_bitwise(tiny, deltas_factory):
    before = tiny.model(IDS).logits.detach().clone()
    a = make_checkpoint("a", deltas_factory(tiny, seed=1), tiny)
    b = make_checkpoint("b", deltas_factory(tiny, rank=2, seed=2), tiny)
    blender = Blender(tiny)
    blender.apply([(a, 1.5), (b, 0.5)])
    blender.apply([(a, 0.0), (b, 0.0)])
    assert torch.equal(tiny.model(IDS).logits.detach(), before)
    assert blender.active == []


def test_negation_cancels_the_stance(tiny, deltas_factory):
    a = make_checkpoint("a", deltas_factory(tiny, seed=1), tiny)
    blender = Blender(tiny)
    blender.apply([(a, 1.0), (a.deltas, -1.0)])
    torch.testing.assert_close(tiny.model(IDS).logits.detach(), merged_logits(tiny, []), rtol=1e-4, atol=1e-5)


def test_incompatible_checkpoint_is_refused_before_anything_changes(tiny, deltas_factory):
    other = tiny_base(seed=7)
    foreign = make_checkpoint("foreign", deltas_factory(other), other)
    mine = make_checkpoint("mine", deltas_factory(tiny), tiny)
    blender = Blender(tiny)
    blender.apply([(mine, 1.0)])
    with pytest.raises(IncompatibleBaseError):
        blender.apply([(foreign, 1.0)])
    assert blender.active == [(mine, 1.0)]


def test_every_blender_on_a_model_shares_one_runtime(tiny, deltas_factory):
    """A job handed a fresh Blender sees the blend shown, and puts it back."""
    a = make_checkpoint("a", deltas_factory(tiny, seed=1), tiny)
    shown = Blender(tiny)
    shown.apply([(a, 0.5)])
    job = Blender(tiny)
    assert job.active == [(a, 0.5)]
    with job.restoring():
        job.reset()
        assert shown.is_base
    assert shown.active == [(a, 0.5)]


def test_restoring_puts_the_blend_in_force_back_even_after_an_error(tiny, deltas_factory):
    a, b = deltas_factory(tiny, seed=1), deltas_factory(tiny, seed=2)
    blender = Blender(tiny)
    blender.apply([(a, 0.5)])
    before = tiny.model(IDS).logits.detach().clone()
    with pytest.raises(RuntimeError):
        with blender.restoring():
            blender.apply([(b, 1.0)])
            raise RuntimeError("boom")
    assert [alpha for _, alpha in blender.active] == [0.5]
    assert torch.equal(tiny.model(IDS).logits.detach(), before)
