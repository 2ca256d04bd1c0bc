import torch

from stance_studio.core.analysis import analyse, energy_curve, layer_index, module_kind, rank_for_energy, singular_values
from stance_studio.core.deltas import DenseDelta, LowRankDelta, truncate_rank


def test_names_to_layer_and_kind():
    assert layer_index("model.layers.13.self_attn.q_proj.weight") == 13
    assert layer_index("transformer.h.2.attn.c_attn.weight") == 2
    assert layer_index("model.embed_tokens.weight") is None
    assert module_kind("model.layers.13.self_attn.q_proj.weight") == "q_proj"
    assert module_kind("model.norm.weight") == "norm"


def test_statistics_match_hand_computation(tiny):
    name = "model.layers.2.self_attn.q_proj.weight"
    w0 = tiny.parameters[name].detach().clone()
    delta = torch.zeros_like(w0)
    delta[0, 0] = 3.0
    delta[1, 1] = 4.0
    (change,) = analyse({name: DenseDelta(delta)}, tiny)
    assert change.layer == 2 and change.kind == "q_proj"
    assert change.depth == (2 + 0.5) / tiny.num_layers
    assert abs(change.abs_change - 5.0) < 1e-5
    assert abs(change.relative_change - 5.0 / float(w0.norm())) < 1e-6
    assert abs(change.norm_change - (float((w0 + delta).norm()) - float(w0.norm()))) < 1e-4
    # energies 16 and 9 of 25: rank 1 holds 64 %, rank 2 holds all
    assert change.rank90 == 2


def test_low_rank_spectrum_equals_dense_spectrum():
    gen = torch.Generator().manual_seed(0)
    lr = LowRankDelta(A=torch.randn(3, 20, generator=gen), B=torch.randn(16, 3, generator=gen))
    torch.testing.assert_close(singular_values(lr), singular_values(lr.materialize())[:3], rtol=1e-4, atol=1e-4)


def test_truncate_rank_and_energy():
    gen = torch.Generator().manual_seed(1)
    full = torch.randn(12, 10, generator=gen)
    for r in (1, 4, 10):
        t = truncate_rank(full, r)
        assert t.rank == r and torch.linalg.matrix_rank(t.materialize()) == r
    sv = torch.tensor([3.0, 2.0, 1.0])
    curve = energy_curve(sv)
    assert torch.allclose(curve, torch.tensor([9 / 14, 13 / 14, 1.0], dtype=torch.float64))
    assert rank_for_energy(sv, 0.9) == 2
