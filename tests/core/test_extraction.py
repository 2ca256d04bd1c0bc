import pytest
import torch

from stance_studio.core.analysis import analyse, rank_for_energy, singular_values
from stance_studio.core.deltas import DenseDelta, LowRankDelta
from stance_studio.core.errors import PolicyError
from stance_studio.core.extraction import DEFAULT_POLICY, extract, module_header_bytes, parse_policy


@pytest.fixture
def deltas(tiny, deltas_factory):
    return deltas_factory(tiny, kinds=("q_proj", "v_proj", "up_proj", "down_proj"), include_norm=True, seed=4)


def test_parse_policies():
    p = parse_policy("top:60+rank:16")
    assert (p.top, p.rank, p.energy, p.dtype) == (60, 16, None, None)
    assert parse_policy("energy:0.9+fp16").energy == 0.9
    assert parse_policy(DEFAULT_POLICY).text == DEFAULT_POLICY
    for bad in ["", "rank:x", "top:0", "energy:1.5", "rank:4+rank:8", "all+rank:4", "keep-all"]:
        with pytest.raises(PolicyError):
            parse_policy(bad)


def test_all_keeps_everything_exactly(tiny, deltas):
    kept, info = extract(deltas, tiny, "all")
    assert set(kept) == set(deltas) and info["policy"] == "all"
    assert all(torch.equal(kept[n].tensor, deltas[n].tensor) for n in deltas)


def test_rank_r_really_is_rank_r(tiny, deltas):
    kept, info = extract(deltas, tiny, "rank:3")
    for name, delta in kept.items():
        if len(delta.shape) == 1:
            assert isinstance(delta, DenseDelta)  # norm scales stay dense
            continue
        assert isinstance(delta, LowRankDelta) and delta.rank == 3
        assert int(torch.linalg.matrix_rank(delta.materialize())) == 3
        assert info["ranks"][name] == 3
    # it is the best rank-3 approximation: the error is the tail of the spectrum
    name = "model.layers.0.mlp.up_proj.weight"
    sv = singular_values(deltas[name])
    err = (deltas[name].tensor - kept[name].materialize()).norm()
    assert abs(float(err) - float(sv[3:].norm())) < 1e-4


def test_top_k_keeps_the_k_most_changed(tiny, deltas):
    kept, info = extract(deltas, tiny, "top:5")
    ranking = [c.name for c in analyse(deltas, tiny, spectra=False)]
    assert list(kept) == ranking[:5] and info["kept_modules"] == ranking[:5]


def test_energy_picks_the_rank_holding_that_energy(tiny, deltas):
    kept, _ = extract(deltas, tiny, "energy:0.6")
    name = "model.layers.1.mlp.down_proj.weight"
    assert kept[name].rank == rank_for_energy(singular_values(deltas[name]), 0.6)


def test_half_precision_halves_bytes(tiny, deltas):
    full, info32 = extract(deltas, tiny, "rank:4")
    half, info16 = extract(deltas, tiny, "rank:4+fp16")
    assert info16["bytes"] * 2 == info32["bytes"]
    assert all(t.dtype == torch.float16 for d in half.values() for t in ([d.A, d.B] if isinstance(d, LowRankDelta) else [d.tensor]))


@pytest.mark.parametrize("rank", [16, 30])
def test_rank_r_holds_where_factors_would_not_save_bytes(tiny, deltas, rank):
    """On a 32 × 32 module, factors of rank ≥ 16 take at least the matrix's bytes: the
    truncation is then stored dense as B @ A, still of rank R and recorded as such."""
    name = "model.layers.0.self_attn.q_proj.weight"
    kept, info = extract(deltas, tiny, f"rank:{rank}")
    delta = kept[name]
    assert isinstance(delta, DenseDelta) and delta.nbytes == deltas[name].nbytes
    assert int(torch.linalg.matrix_rank(delta.materialize())) == rank < min(delta.shape)
    assert delta.rank == info["ranks"][name] == rank
    sv = singular_values(deltas[name])
    err = (deltas[name].tensor - delta.materialize()).norm()
    assert abs(float(err) - float(sv[rank:].norm())) < 1e-4


def test_energy_keeps_that_energy_not_all_of_it(tiny, deltas):
    name = "model.layers.0.self_attn.q_proj.weight"
    sv = singular_values(deltas[name])
    rank = rank_for_energy(sv, 0.99)
    assert min(deltas[name].shape) / 2 <= rank < min(deltas[name].shape)  # stored dense, truncated
    kept, info = extract(deltas, tiny, "energy:0.99")
    kept_energy = float(kept[name].materialize().square().sum() / deltas[name].tensor.square().sum())
    assert info["ranks"][name] == rank and 0.99 <= kept_energy < 1.0
    assert kept_energy == pytest.approx(float(sv[:rank].square().sum() / sv.square().sum()), rel=1e-5)


def test_lora_deltas_stay_exact_unless_a_lower_rank_is_asked(tiny, deltas_factory):
    lora = deltas_factory(tiny, rank=4)
    kept, _ = extract(lora, tiny, "rank:16")
    assert all(kept[n] is lora[n] for n in lora)
    lower, _ = extract(lora, tiny, "rank:2")
    assert all(d.rank == 2 for d in lower.values())
    less_energy, info = extract(lora, tiny, "energy:0.3")
    assert all(info["ranks"][n] == rank_for_energy(singular_values(lora[n]), 0.3) < 4 for n in lora)


def test_budget_reserves_room_for_the_metadata(tiny, deltas_factory):
    deltas = deltas_factory(tiny, kinds=("q_proj", "up_proj"), seed=6)
    _, open_info = extract(deltas, tiny, "budget:0.2", reserve_bytes=0)
    _, reserved_info = extract(deltas, tiny, "budget:0.2", reserve_bytes=20_000)
    assert reserved_info["bytes"] <= open_info["bytes"] - 20_000 + 4096


def test_budget_stays_within_bytes_and_prefers_energetic_directions(tiny, deltas_factory):
    deltas = deltas_factory(tiny, kinds=("q_proj", "up_proj"), include_norm=True, seed=6)
    # make one module's delta much larger: it must receive more rank than its twin
    big = "model.layers.1.mlp.up_proj.weight"
    deltas[big] = type(deltas[big])(deltas[big].tensor * 10)
    budget = 0.1 * tiny.parameter_bytes()
    kept, info = extract(deltas, tiny, "budget:0.1", reserve_bytes=0)
    headers = sum(module_header_bytes(n) for n in kept)
    assert info["bytes"] + headers <= budget and info["bytes"] + headers > 0.9 * budget
    assert kept[big].rank > kept["model.layers.2.mlp.up_proj.weight"].rank
    assert all(isinstance(kept[n], DenseDelta) for n in deltas if len(deltas[n].shape) == 1)
    half, info16 = extract(deltas, tiny, "budget:0.1+fp16", reserve_bytes=0)
    assert info16["bytes"] <= budget and sum(d.rank or 0 for d in half.values()) > sum(d.rank or 0 for d in kept.values())


def test_activation_aware_truncation_minimises_output_error(tiny, deltas_factory):
    from stance_studio.core.datasets import encode_example, load_dataset
    from stance_studio.core.extraction import activation_scales

    deltas = deltas_factory(tiny, kinds=("up_proj", "down_proj"), seed=8)
    data = load_dataset("curious-uncertainty", tiny.tokenizer)
    calibration = [encode_example(tiny.tokenizer, ex)[0] for ex in data.examples[:4]]
    scales = activation_scales(tiny, calibration, deltas)
    assert set(scales) == set(deltas)
    plain, _ = extract(deltas, tiny, "rank:2")
    aware, info = extract(deltas, tiny, "rank:2+aware", calibration=calibration)
    assert info["activation_aware"]
    for name, delta in deltas.items():
        s = scales[name]
        err_plain = ((delta.tensor - plain[name].materialize()) * s).norm()
        err_aware = ((delta.tensor - aware[name].materialize()) * s).norm()
        assert aware[name].rank == 2 and err_aware <= err_plain * (1 + 1e-5)
    with pytest.raises(PolicyError, match="aware"):
        parse_policy("aware")


def test_activation_scales_ignore_padding(tiny, deltas_factory):
    """Scales are statistics of the calibration text: padding a batch must not move them."""
    from stance_studio.core.datasets import encode_example, load_dataset
    from stance_studio.core.extraction import activation_scales

    deltas = deltas_factory(tiny, kinds=("q_proj", "down_proj"), seed=9)
    data = load_dataset("curious-uncertainty", tiny.tokenizer)
    calibration = [encode_example(tiny.tokenizer, ex)[0] for ex in data.examples[:4]]
    assert len({len(ids) for ids in calibration}) > 1  # a batch of these needs padding
    one_by_one = activation_scales(tiny, calibration, deltas, batch_size=1)
    batched = activation_scales(tiny, calibration, deltas, batch_size=4)
    for name in deltas:
        torch.testing.assert_close(batched[name], one_by_one[name], rtol=1e-4, atol=1e-6)


def test_lora_deltas_that_fit_the_budget_are_kept_exactly(tiny, deltas_factory):
    lora = deltas_factory(tiny, rank=3)
    kept, _ = extract(lora, tiny, "budget:0.5")
    assert all(kept[n] is lora[n] for n in lora)


def test_budget_is_a_hard_cap_that_1d_deltas_pay_too(tiny, deltas_factory):
    """The 1-D deltas alone cost more than the budget: the least changed are dropped."""
    deltas = deltas_factory(tiny, kinds=("q_proj",), include_norm=True, seed=6)
    flat = sorted(n for n in deltas if len(deltas[n].shape) == 1)
    quiet = flat[0]
    deltas[quiet] = DenseDelta(deltas[quiet].tensor * 1e-3)
    budget = 0.015 * tiny.parameter_bytes()
    assert sum(deltas[n].nbytes + module_header_bytes(n) for n in flat) > budget
    kept, info = extract(deltas, tiny, "budget:0.015", reserve_bytes=0)
    assert info["bytes"] + sum(module_header_bytes(n) for n in kept) <= budget
    assert quiet not in kept and any(n in kept for n in flat)
    reserved, info = extract(deltas, tiny, "budget:0.015", reserve_bytes=2000)
    assert info["bytes"] + sum(module_header_bytes(n) for n in reserved) <= budget - 2000
    with pytest.raises(PolicyError, match="no module fits"):
        extract(deltas, tiny, "budget:0.015", reserve_bytes=int(budget))


def test_budget_caps_the_file_on_disk(tiny, library_path):
    """On the tiny model 2 % of the base (4 kB) cannot even hold the metadata: the
    default policy refuses rather than write a bigger file; 12 % fits, 1-D deltas too."""
    from stance_studio.core.library import Library
    from stance_studio.core.pipeline import build_stance
    from stance_studio.core.training import TrainConfig

    lib = Library(library_path)
    probes = ["why is the sky blue"]
    with pytest.raises(PolicyError, match="no module fits"):
        build_stance(tiny, "curious-uncertainty", "two", TrainConfig(steps=2, lr=3e-3), DEFAULT_POLICY,
                     library=lib, probes=probes)
    assert list(library_path.iterdir()) == []
    ckpt = build_stance(tiny, "curious-uncertainty", "twelve", TrainConfig(steps=2, lr=3e-3), "budget:0.12+fp16",
                        library=lib, probes=probes)
    assert ckpt.path.stat().st_size <= 0.12 * tiny.parameter_bytes()
    assert any(len(d.shape) == 1 for d in ckpt.deltas.values())
