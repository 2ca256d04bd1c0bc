import pytest
import torch

from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import DenseDelta, LowRankDelta
from stance_studio.core.library import Library
from stance_studio.core.stance_kinds import (
    delta_norm_squared,
    paired_stance,
    steering_effect_by_layer,
    weight_change_by_layer,
)


def test_factorised_norm_equals_the_dense_one():
    gen = torch.Generator().manual_seed(0)
    d = LowRankDelta(A=torch.randn(3, 7, generator=gen), B=torch.randn(5, 3, generator=gen))
    assert delta_norm_squared(d) == pytest.approx(float(d.materialize().pow(2).sum()), rel=1e-5)


def test_weight_change_sums_each_layers_modules():
    deltas = {
        "model.layers.1.self_attn.q_proj.weight": DenseDelta(torch.full((2, 2), 1.0)),
        "model.layers.1.mlp.down_proj.weight": DenseDelta(torch.full((3, 4), 2.0)),
        "model.layers.3.input_layernorm.weight": DenseDelta(torch.full((4,), 0.5)),
        "model.embed_tokens.weight": DenseDelta(torch.ones(9, 2)),
    }
    got = weight_change_by_layer(deltas, 4)
    assert got == pytest.approx([0.0, (4 * 1 + 12 * 4) ** 0.5, 0.0, 1.0])


def test_steering_effect_is_relative_to_the_residual_norm():
    got = steering_effect_by_layer({"norms": [1.0, 4.0, 3.0], "residual_norms": [2.0, 8.0, 0.0]}, 4)
    assert got == [0.5, 0.5, 3.0, None]


def test_paired_stance_finds_the_other_kind_of_the_same_dataset(tiny, deltas_factory, library_path):
    lib = Library(library_path)
    same = {"dataset_hash": "abc"}
    lib.save(make_checkpoint("weights", deltas_factory(tiny, rank=2), tiny, stance=same))
    lib.save(make_checkpoint("other-data", deltas_factory(tiny, rank=2), tiny, stance={"dataset_hash": "zzz"}))
    steer = make_checkpoint("steer", {}, tiny, stance=same)
    steer.kind = "activation"
    steer.directions = {0: torch.ones(32)}
    lib.save(steer)
    entries = lib.entries()
    assert paired_stance(entries, "steer") == "weights"
    assert paired_stance(entries, "weights") == "steer"
    assert paired_stance(entries, "other-data") is None
    assert paired_stance(entries, "missing") is None
