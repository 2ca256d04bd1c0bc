"""The compression terms of extraction policies (q8, q4, mixed, sign, dare:P) on the
tiny model: each round-trips through a file within its stated error, a budget is a
hard cap on the file, and quantized checkpoints export to PEFT."""

import json

import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import SUFFIX, load_checkpoint, make_checkpoint, read_header, save_checkpoint
from stance_studio.core.deltas import DenseDelta, LowRankDelta, bits_per_weight, truncate_rank
from stance_studio.core.distill import fit_scales
from stance_studio.core.errors import PolicyError
from stance_studio.core.extraction import extract, parse_policy
from stance_studio.core.peft_export import export_peft


def _save_load(tiny, kept, info, tmp_path, name="c"):
    path = save_checkpoint(make_checkpoint(name, kept, tiny, extraction=info), tmp_path / f"{name}{SUFFIX}")
    return path, load_checkpoint(path)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("quant,limit,bits", [("q8", 0.02, 8), ("q4", 0.2, 4)])
def test_quantized_factors_round_trip_within_error(tiny, deltas_factory, tmp_path, quant, limit, bits):
    deltas = deltas_factory(tiny, scale=0.05)
    kept, info = extract(deltas, tiny, f"rank:4+{quant}")
    path, back = _save_load(tiny, kept, info, tmp_path)
    assert read_header(path)["format"] == "stance-studio/2"
    for name, delta in deltas.items():
        got = back.deltas[name]
        assert isinstance(got, LowRankDelta) and got.rank == 4
        assert got.packed.spec["segments"] == [[bits, 4]]
        assert torch.equal(got.materialize(), kept[name].materialize())
        assert _rel(got.materialize(), truncate_rank(delta.materialize(), 4).materialize()) < limit
    # a direction costs (out + in) · bits / 8 bytes plus two float32 scales
    expected = sum(4 * ((d.shape[0] + d.shape[1]) * bits / 8 + 8) for d in deltas.values())
    assert info["bytes"] == pytest.approx(expected, abs=len(deltas))
    assert info["bits_per_weight"] == pytest.approx(bits_per_weight(kept), abs=1e-3)


def test_mixed_gives_top_directions_more_bits(tiny, tmp_path):
    """On a delta with a steep spectrum, mixed keeps more directions than q4 in the
    same bytes, with the widest codes on the top directions, and a smaller error."""
    gen = torch.Generator().manual_seed(3)
    name = next(n for n, p in tiny.model.named_parameters() if n.endswith("mlp.up_proj.weight"))
    shape = dict(tiny.model.named_parameters())[name].shape
    U, _ = torch.linalg.qr(torch.randn(shape[0], 16, generator=gen))
    V, _ = torch.linalg.qr(torch.randn(shape[1], 16, generator=gen))
    s = 0.5 ** torch.arange(16.0)
    deltas = {name: DenseDelta((U * s) @ V.T)}
    mixed, mixed_info = extract(deltas, tiny, "rank:4+mixed")
    q4, q4_info = extract(deltas, tiny, "rank:4+q4")
    _, back = _save_load(tiny, mixed, mixed_info, tmp_path)
    segments = back.deltas[name].packed.spec["segments"]
    assert segments[0][0] == max(b for b, _ in segments) and len(segments) > 1
    assert mixed_info["bytes"] <= q4_info["bytes"] + 8 * 12
    target = deltas[name].materialize()
    assert _rel(back.deltas[name].materialize(), target) < _rel(q4[name].materialize(), target)


def test_sign_keeps_every_sign_with_one_scale_per_row(tiny, deltas_factory, tmp_path):
    deltas = deltas_factory(tiny, include_norm=True)
    kept, info = extract(deltas, tiny, "sign")
    _, back = _save_load(tiny, kept, info, tmp_path)
    for name, delta in deltas.items():
        got = back.deltas[name]
        if len(delta.shape) == 1:
            assert got.packed is None and torch.equal(got.tensor, delta.tensor)
            continue
        assert got.packed.spec == {"kind": "dense-q", "shape": list(delta.shape), "bits": 1}
        assert torch.equal(torch.sign(got.tensor), torch.sign(delta.tensor))
        assert torch.allclose(got.tensor.abs(), delta.tensor.abs().mean(1, keepdim=True).expand_as(got.tensor))
        assert _rel(got.tensor, delta.tensor) < 0.7
    # 1 bit per matrix weight plus a float32 scale per row; norm deltas stay float32
    bits = sum(d.tensor.numel() + 32 * d.shape[0] if len(d.shape) == 2 else 32 * d.tensor.numel()
               for d in deltas.values())
    assert info["bits_per_weight"] == pytest.approx(bits / sum(d.tensor.numel() for d in deltas.values()), abs=1e-3)


def test_dare_drops_a_fraction_and_rescales(tiny, deltas_factory, tmp_path):
    deltas = deltas_factory(tiny, kinds=("gate_proj",))
    kept, info = extract(deltas, tiny, "dare:0.75")
    _, back = _save_load(tiny, kept, info, tmp_path)
    for name, delta in deltas.items():
        got = back.deltas[name].tensor
        nonzero = got != 0
        assert 0.15 < float(nonzero.float().mean()) < 0.35
        torch.testing.assert_close(got[nonzero], delta.tensor[nonzero] / 0.25)
    # one bit of mask per weight plus a float32 value per kept entry
    assert info["bits_per_weight"] == pytest.approx(1 + 0.25 * 32, rel=0.15)


@pytest.mark.parametrize("policy", ["budget:0.15+fp16", "budget:0.15+q4", "budget:0.15+mixed+fp16",
                                    "budget:0.12+mixed+sign+dare:0.9+fp16", "budget:0.3+sign+q8"])
def test_budget_is_a_hard_cap_on_the_file(tiny, deltas_factory, tmp_path, policy):
    deltas = deltas_factory(tiny, kinds=("q_proj", "v_proj", "up_proj", "down_proj", "embed_tokens"),
                            include_norm=True)
    kept, info = extract(deltas, tiny, policy, reserve_bytes=4096)
    path, back = _save_load(tiny, kept, info, tmp_path)
    assert kept and path.stat().st_size <= parse_policy(policy).budget * tiny.parameter_bytes()
    assert info["bits_per_weight"] > 0 and sum(info["representations"].values()) == len(kept)
    for name in kept:
        assert torch.equal(back.deltas[name].materialize(), kept[name].materialize())


def test_quantized_budget_keeps_more_than_float_in_the_same_bytes(tiny, deltas_factory):
    """The allocator's proxy: at one budget, 4-bit factors leave less squared error than fp16."""
    deltas = deltas_factory(tiny, kinds=("up_proj", "down_proj"), rank=12, scale=0.1)

    def error(policy):
        kept, _ = extract(deltas, tiny, policy, reserve_bytes=1024)
        return sum(float((deltas[n].materialize() - (kept[n].materialize() if n in kept else 0)).square().sum())
                   for n in deltas)

    assert error("budget:0.08+q4") < error("budget:0.08+fp16")
    assert error("budget:0.08+mixed") <= error("budget:0.08+q4") * 1.05


def test_distillation_fits_sign_scales_toward_the_tuned_model(tiny, deltas_factory):
    deltas = deltas_factory(tiny, kinds=("q_proj", "up_proj"), scale=0.3)
    kept, _ = extract(deltas, tiny, "sign")
    calibration = [[1, 5, 9, 14, 30, 2, 7, 8], [3, 3, 40, 41, 9, 10], [6, 12, 18, 24, 30, 36, 42]]
    fitted, record = fit_scales(tiny, deltas, kept, calibration, steps=6)
    assert record["kl_after"] <= record["kl_before"]
    name = next(n for n in fitted if fitted[n].packed is not None)
    # only the scales moved: signs are those stored, the row scales are the fitted values
    assert torch.equal(torch.sign(fitted[name].tensor), torch.sign(kept[name].tensor))
    scales = fitted[name].packed.tensors["scales"]
    torch.testing.assert_close(fitted[name].tensor.abs()[:, 0], scales / 2)
    with_record, info = extract(deltas, tiny, "sign", calibration=calibration)
    assert info["distillation"]["kl_after"] <= info["distillation"]["kl_before"]


def test_quantized_checkpoint_exports_to_peft_dequantized(tiny, deltas_factory, tmp_path):
    from peft import PeftModel

    deltas = deltas_factory(tiny, kinds=("q_proj", "v_proj"), scale=0.2)
    kept, info = extract(deltas, tiny, "rank:3+mixed")
    path, ckpt = _save_load(tiny, kept, info, tmp_path)
    out = export_peft(ckpt, tmp_path / "adapter")
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    ids = torch.tensor([[1, 7, 30, 99, 5]])
    blender = Blender(tiny)
    blender.apply([(ckpt, 1.0)])
    ours = tiny.model(ids).logits.detach().clone()
    blender.reset()
    theirs = PeftModel.from_pretrained(tiny.model, str(out))(input_ids=ids).logits.detach()
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("text,match", [
    ("q4", "combine it with rank, energy or budget"),
    ("sign+rank:4", "add budget:F"),
    ("sign+dare:0.5", "add budget:F"),
    ("all+q8", "'all' keeps every module dense"),
    ("rank:4+q4+q8", "names quant twice"),
    ("dare:1", "dare:P"),
    ("dare:0", "keeps nothing"),
])
def test_bad_compression_terms_are_clear_errors(text, match):
    with pytest.raises(PolicyError, match=match):
        parse_policy(text)


def test_budget_picks_the_representation_that_fits_each_module(tiny):
    """A full-rank ±c delta is stored as signs, a rank-2 delta as factors, in one budget."""
    gen = torch.Generator().manual_seed(5)
    params = dict(tiny.model.named_parameters())
    signed = next(n for n in params if n.endswith("mlp.up_proj.weight"))
    low = next(n for n in params if n.endswith("mlp.down_proj.weight"))
    rows = torch.rand(params[signed].shape[0], 1, generator=gen) + 0.5
    deltas = {
        signed: DenseDelta(torch.sign(torch.randn(params[signed].shape, generator=gen)) * rows * 0.01),
        low: DenseDelta(torch.randn(params[low].shape[0], 2, generator=gen) @ torch.randn(2, params[low].shape[1],
                                                                                         generator=gen) * 0.01),
    }
    kept, info = extract(deltas, tiny, "budget:0.1+mixed+sign", reserve_bytes=1024)
    assert kept[signed].packed.kind == "dense-q"
    assert kept[low].packed.kind == "lowrank-q" and kept[low].rank == 2
    assert _rel(kept[signed].materialize(), deltas[signed].materialize()) < 1e-4
    assert info["representations"] == {"dense-q": 1, "lowrank-q": 1}
