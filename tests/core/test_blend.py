import random

import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.errors import IncompatibleBaseError
from stance_studio.core.tiny import tiny_base


def snapshot(base):
    return {n: p.detach().clone() for n, p in base.model.named_parameters()}


def assert_bitwise(base, snap):
    for name, p in base.model.named_parameters():
        assert torch.equal(p.detach(), snap[name]), name


def test_apply_computes_w0_plus_weighted_sum(tiny, deltas_factory):
    w0 = snapshot(tiny)
    a = make_checkpoint("a", deltas_factory(tiny, seed=1), tiny)
    b = make_checkpoint("b", deltas_factory(tiny, rank=2, seed=2, kinds=("v_proj", "o_proj")), tiny)
    blender = Blender(tiny)
    blender.apply([(a, 0.7), (b, -0.3)])
    params = dict(tiny.model.named_parameters())
    for name in set(a.deltas) | set(b.deltas):
        expected = w0[name].clone()
        if name in a.deltas:
            expected += 0.7 * a.deltas[name].materialize()
        if name in b.deltas:
            expected += -0.3 * b.deltas[name].materialize()
        torch.testing.assert_close(params[name].detach(), expected, rtol=1e-5, atol=1e-6)
    untouched = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(params[untouched].detach(), w0[untouched])


def test_reset_after_many_random_blends_is_bitwise(tiny, deltas_factory):
    w0 = snapshot(tiny)
    ckpts = [
        make_checkpoint("d", deltas_factory(tiny, seed=3, include_norm=True), tiny),
        make_checkpoint("l", deltas_factory(tiny, rank=4, seed=4, kinds=("q_proj", "down_proj")), tiny),
        make_checkpoint("m", deltas_factory(tiny, rank=1, seed=5, kinds=("k_proj", "v_proj")), tiny),
    ]
    blender = Blender(tiny)
    rng = random.Random(0)
    for _ in range(60):
        chosen = rng.sample(ckpts, rng.randint(1, 3))
        blender.apply([(c, rng.uniform(-1.0, 2.0)) for c in chosen])
    blender.reset()
    assert_bitwise(tiny, w0)
    assert blender.is_base


def test_applying_again_does_not_accumulate(tiny, deltas_factory):
    ckpt = make_checkpoint("a", deltas_factory(tiny, rank=2), tiny)
    blender = Blender(tiny)
    blender.apply([(ckpt, 1.0)])
    once = snapshot(tiny)
    for _ in range(5):
        blender.apply([(ckpt, 1.0)])
    assert_bitwise(tiny, once)


def test_zero_weights_give_base_bitwise(tiny, deltas_factory):
    w0 = snapshot(tiny)
    a = make_checkpoint("a", deltas_factory(tiny, seed=1), tiny)
    b = make_checkpoint("b", deltas_factory(tiny, rank=2, seed=2), tiny)
    blender = Blender(tiny)
    blender.apply([(a, 1.5), (b, 0.5)])
    blender.apply([(a, 0.0), (b, 0.0)])
    assert_bitwise(tiny, w0)


def test_negation_cancels_the_stance(tiny, deltas_factory):
    w0 = snapshot(tiny)
    a = make_checkpoint("a", deltas_factory(tiny, seed=1), tiny)
    blender = Blender(tiny)
    blender.apply([(a, -1.0)])
    name = next(iter(a.deltas))
    got = dict(tiny.model.named_parameters())[name].detach()
    torch.testing.assert_close(got, w0[name] - a.deltas[name].tensor)


def test_incompatible_checkpoint_is_refused_before_any_write(tiny, deltas_factory):
    other = tiny_base(seed=7)
    foreign = make_checkpoint("foreign", deltas_factory(other), other)
    w0 = snapshot(tiny)
    with pytest.raises(IncompatibleBaseError):
        Blender(tiny).apply([(foreign, 1.0)])
    assert_bitwise(tiny, w0)


def test_blend_changes_the_model_output(tiny, deltas_factory):
    ids = torch.tensor([[1, 5, 9, 12]])
    before = tiny.model(ids).logits.detach().clone()
    blender = Blender(tiny)
    blender.apply([(make_checkpoint("a", deltas_factory(tiny, scale=0.3), tiny), 1.0)])
    during = tiny.model(ids).logits.detach()
    assert not torch.allclose(before, during)
    blender.reset()
    assert torch.equal(tiny.model(ids).logits.detach(), before)


def test_moving_one_weight_matches_a_fresh_apply(tiny, deltas_factory):
    """Parameters whose terms did not change are skipped; the result must equal a
    from-scratch apply of the same blend on a fresh blender."""
    a = make_checkpoint("a", deltas_factory(tiny, rank=2, seed=1, kinds=("q_proj",)), tiny)
    b = make_checkpoint("b", deltas_factory(tiny, rank=2, seed=2, kinds=("q_proj", "v_proj")), tiny)
    blender = Blender(tiny)
    for alpha in (0.1, 0.5, -0.7, 1.9):
        blender.apply([(a, alpha), (b, 0.3)])
    incremental = snapshot(tiny)
    blender.reset()
    fresh = Blender(tiny)
    fresh.apply([(a, 1.9), (b, 0.3)])
    assert_bitwise(tiny, incremental)


def test_restoring_puts_the_blend_in_force_back_even_after_an_error(tiny, deltas_factory):
    a, b = deltas_factory(tiny, seed=1), deltas_factory(tiny, seed=2)
    blender = Blender(tiny)
    blender.apply([(a, 0.5)])
    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    with pytest.raises(RuntimeError):
        with blender.restoring():
            blender.apply([(b, 1.0)])
            raise RuntimeError("boom")
    assert [alpha for _, alpha in blender.active] == [0.5]
    for name, p in tiny.model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
