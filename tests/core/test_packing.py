"""Packed tensors (checkpoint format 2): codes, the reader's checks, and format 1 still loading."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from stance_studio.core.checkpoint_v2 import FORMAT_V2
from stance_studio.core.checkpoints import FORMAT, SUFFIX, load_checkpoint, make_checkpoint, read_header, save_checkpoint
from stance_studio.core.deltas import DenseDelta, LowRankDelta
from stance_studio.core.errors import CheckpointError
from stance_studio.core.packing import (
    dequantize_rows,
    pack_bits,
    pack_dense,
    pack_lowrank,
    pack_sparse,
    quantize_rows,
    unpack,
    unpack_bits,
)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("count", [1, 7, 64, 1001])
def test_bit_packing_round_trip(bits, count):
    codes = torch.randint(0, 2**bits, (count,), generator=torch.Generator().manual_seed(count), dtype=torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-count * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, count), codes)


@pytest.mark.parametrize("bits,limit", [(8, 0.01), (4, 0.15), (2, 0.5), (1, 0.62)])
def test_row_quantization_error_is_bounded(bits, limit):
    x = torch.randn(16, 300, generator=torch.Generator().manual_seed(bits))
    codes, step = quantize_rows(x, bits)
    assert int(codes.max()) < 2**bits
    err = (dequantize_rows(codes, step, bits) - x).norm() / x.norm()
    assert err < limit


def test_one_bit_is_sign_and_mean_scale():
    x = torch.tensor([[0.5, -1.5, 2.0, -0.1]])
    codes, step = quantize_rows(x, 1)
    values = dequantize_rows(codes, step, 1)
    assert torch.equal(torch.sign(values), torch.sign(x))
    torch.testing.assert_close(values.abs(), torch.full_like(x, x.abs().mean()))


def _save_packed(tiny, tmp_path, name="p"):
    """A format-2 checkpoint with one delta of each packed kind, plus a plain one."""
    params = dict(tiny.model.named_parameters())
    names = [n for n, p in params.items() if p.dim() == 2 and "layers" in n][:4]
    gen = torch.Generator().manual_seed(0)
    full = {n: torch.randn(params[n].shape, generator=gen) * 0.02 for n in names}
    A, B = torch.randn(5, full[names[0]].shape[1], generator=gen), torch.randn(full[names[0]].shape[0], 5, generator=gen)
    deltas = {
        names[0]: unpack(**vars(pack_lowrank(A, B, [8, 8, 4, 2, 2]))),
        names[1]: unpack(**vars(pack_dense(full[names[1]], 1))),
        names[2]: unpack(**vars(pack_sparse(full[names[2]], 0.75, gen))),
        names[3]: DenseDelta(full[names[3]]),
    }
    path = save_checkpoint(make_checkpoint(name, deltas, tiny), tmp_path / f"{name}{SUFFIX}")
    return path, deltas, names


def test_packed_checkpoint_round_trip_is_exact(tiny, tmp_path):
    path, deltas, names = _save_packed(tiny, tmp_path)
    header = read_header(path)
    assert header["format"] == FORMAT_V2
    assert {header["packing"][n]["kind"] for n in names[:3]} == {"lowrank-q", "dense-q", "sparse"}
    back = load_checkpoint(path)
    assert isinstance(back.deltas[names[0]], LowRankDelta) and back.deltas[names[0]].rank == 5
    assert isinstance(back.deltas[names[1]], DenseDelta) and back.deltas[names[3]].packed is None
    for n, d in deltas.items():
        assert torch.equal(back.deltas[n].materialize(), d.materialize())
    # stored packed: the file's tensors are far smaller than the float tensors they decode to
    with safe_open(str(path), framework="pt") as fh:
        stored = sum(fh.get_tensor(k).numel() * fh.get_tensor(k).element_size() for k in fh.keys())
    assert stored == back.nbytes < sum(d.materialize().numel() * 4 for d in deltas.values()) * 0.6
    # a loaded packed checkpoint saves again to the same packed form
    again = save_checkpoint(back, tmp_path / f"again{SUFFIX}")
    assert abs(again.stat().st_size - path.stat().st_size) < 200


def _rewrite(path, out, change_tensors=None, change_packing=None):
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if change_tensors:
        change_tensors(tensors)
    if change_packing:
        packing = json.loads(meta["packing"])
        change_packing(packing)
        meta["packing"] = json.dumps(packing)
    save_file(tensors, str(out), metadata=meta)
    return out


def _first(tensors, suffix):
    return next(k for k in sorted(tensors) if k.endswith(suffix))


@pytest.mark.parametrize("label,tensors,packing", [
    ("codes too short", lambda t: t.__setitem__(_first(t, ":codes"), t[_first(t, ":codes")][:-1]), None),
    ("codes not uint8", lambda t: t.__setitem__(_first(t, ":codes"), t[_first(t, ":codes")].float()), None),
    ("scale count", lambda t: t.__setitem__(_first(t, ":q0.As"), t[_first(t, ":q0.As")][:1]), None),
    ("scales integer", lambda t: t.__setitem__(_first(t, ":scales"), t[_first(t, ":scales")].to(torch.int32)), None),
    ("part missing", lambda t: t.pop(_first(t, ":mask")), None),
    ("part unknown", lambda t: t.__setitem__(_first(t, ":mask").replace(":mask", ":extra"), torch.zeros(3)), None),
    ("unknown kind", None, lambda p: next(iter(p.values())).__setitem__("kind", "zip")),
    ("bad bits", None, lambda p: [s.__setitem__("bits", 3) for s in p.values() if s["kind"] == "dense-q"]),
    ("bad shape", None, lambda p: [s.__setitem__("shape", [s["shape"][0], s["shape"][1] * 2]) for s in p.values()]),
    ("bad segments", None, lambda p: [s.__setitem__("segments", [[8, 0]]) for s in p.values() if s["kind"] == "lowrank-q"]),
])
def test_malformed_packed_tensors_are_refused_naming_the_file(tiny, tmp_path, label, tensors, packing):
    path, _, _ = _save_packed(tiny, tmp_path)
    bad = _rewrite(path, tmp_path / f"bad{SUFFIX}", tensors, packing)
    with pytest.raises(CheckpointError, match="bad.stance.safetensors"):
        load_checkpoint(bad)


def test_sparse_values_must_match_the_mask(tiny, tmp_path):
    path, _, _ = _save_packed(tiny, tmp_path)
    bad = _rewrite(path, tmp_path / f"bad{SUFFIX}",
                   lambda t: t.__setitem__(_first(t, ":values"), t[_first(t, ":values")][:-1]))
    with pytest.raises(CheckpointError, match=r"bad\.stance\.safetensors.*mask keeps"):
        load_checkpoint(bad)


def test_packing_metadata_must_be_json(tiny, tmp_path):
    path, _, _ = _save_packed(tiny, tmp_path)
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta["packing"] = "{not json"
    save_file(tensors, str(tmp_path / f"bad{SUFFIX}"), metadata=meta)
    with pytest.raises(CheckpointError, match="'packing' is not valid JSON"):
        read_header(tmp_path / f"bad{SUFFIX}")


def test_unpacked_checkpoint_is_still_written_as_format_1(tiny, deltas_factory, tmp_path):
    path = save_checkpoint(make_checkpoint("v1", deltas_factory(tiny, rank=2), tiny), tmp_path / f"v1{SUFFIX}")
    assert read_header(path)["format"] == FORMAT == "stance-studio/1"


def test_hand_written_format_1_file_loads(tiny, tmp_path):
    """A version-1 file as the first release wrote it: P:delta / P:A, P:B tensors and
    JSON metadata strings, no packing field."""
    params = dict(tiny.model.named_parameters())
    q, v = [n for n in params if n.endswith("q_proj.weight")][:1] + [n for n in params if n.endswith("v_proj.weight")][:1]
    gen = torch.Generator().manual_seed(1)
    dense = torch.randn(params[q].shape, generator=gen) * 0.01
    A, B = torch.randn(2, params[v].shape[1], generator=gen), torch.randn(params[v].shape[0], 2, generator=gen)
    meta = {"format": "stance-studio/1", "name": "old", "created": "2025-01-01T00:00:00+00:00",
            "stance": json.dumps({"name": "old"}), "base": json.dumps({"model": tiny.model_id}),
            "training": json.dumps({"method": "full"}), "extraction": json.dumps({"policy": "all"}),
            "metrics": json.dumps({})}
    path = tmp_path / f"old{SUFFIX}"
    save_file({f"{q}:delta": dense, f"{v}:A": A, f"{v}:B": B}, str(path), metadata=meta)
    back = load_checkpoint(path)
    assert torch.equal(back.deltas[q].materialize(), dense)
    assert torch.allclose(back.deltas[v].materialize(), B @ A)
    assert back.deltas[q].packed is None and back.extraction["policy"] == "all"


def test_library_lists_bits_per_touched_weight_from_the_header(tiny, tmp_path):
    from stance_studio.core.library import Library

    library = Library(tmp_path / "lib")
    path, deltas, _ = _save_packed(tiny, tmp_path)
    library.import_file(path)
    (entry,) = library.entries()
    expected = 8 * sum(d.nbytes for d in deltas.values()) / sum(d.materialize().numel() for d in deltas.values())
    assert entry.bits_per_weight == pytest.approx(expected)
    assert entry.as_json()["bits_per_weight"] == pytest.approx(expected)
    assert load_checkpoint(library.folder / path.name).bits_per_weight == pytest.approx(expected)
