"""Packed (quantized or sparse) deltas: checkpoint format 2's tensor kinds.

A packed delta is stored as a few plain tensors (integer codes packed into
``uint8``, per-vector scales, kept values) plus a JSON description; it is decoded
once, at load, into the ordinary :class:`DenseDelta` / :class:`LowRankDelta`.

Kinds (the ``kind`` of a description):
- ``lowrank-q``: factors ``B @ A`` whose singular directions are split into
  segments, each quantized at ``bits`` (8, 4 or 2) with one scale per direction
  vector: tensors ``q{i}.A`` / ``q{i}.B`` (packed codes) and ``q{i}.As`` /
  ``q{i}.Bs`` (scales), for segment ``i`` of ``segments = [[bits, rank], ...]``;
- ``dense-q``: the whole matrix quantized per row at ``bits`` (1 bit is BitDelta's
  sign-and-scale): tensors ``codes`` and ``scales`` (one per row);
- ``sparse``: a DARE-sparsified delta: ``mask`` (1 bit per entry, packed) and
  ``values`` (the kept entries, already rescaled, in row-major order).

A code ``c`` of ``b`` bits stands for ``(c - (2^b - 1) / 2) · step``: a uniform
grid without a zero level, so 1 bit is ± step/2 (a sign and a scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

BITS = (1, 2, 4, 8)
KINDS = ("lowrank-q", "dense-q", "sparse")
_FLOATS = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class Packed:
    """The stored form of one delta: its description and its tensors (by part name)."""

    spec: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])


class PackingError(ValueError):
    """A packed tensor that does not match its description."""


# --- codes ----------------------------------------------------------------------------------------

def quantize_rows(x: torch.Tensor, bits: int, refine: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row uniform quantization of a 2-D tensor: ``(codes uint8, step per row)``.

    The step starts at the grid covering each row's largest value (for 1 bit: twice the
    mean absolute value, BitDelta's scale) and is refined by least squares for the codes."""
    x = x.float()
    levels = 2**bits
    half = (levels - 1) / 2
    if bits == 1:
        step = 2 * x.abs().mean(dim=1)
    else:
        step = x.abs().amax(dim=1) / half
    step = step.clamp_min(1e-12)
    codes = torch.empty_like(x)  # one buffer, updated in place (the budget quantizes every direction)
    for i in range(refine + 1):
        torch.div(x, step[:, None], out=codes)
        codes.add_(half).round_().clamp_(0, levels - 1)
        if i == refine:
            break
        grid = codes.sub(half)
        num = (grid * x).sum(1)
        step = (num / grid.square_().sum(1).clamp_min(1e-12)).clamp_min(1e-12)
    return codes.to(torch.uint8), step


def dequantize_rows(codes: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """The values that ``codes`` (rows) stand for, float32."""
    return (codes.float() - (2**bits - 1) / 2) * step.float()[:, None]


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes below ``2**bits`` packed ``8 // bits`` to a byte (little end first), 1-D uint8."""
    flat = codes.reshape(-1).to(torch.uint8)
    per = 8 // bits
    pad = (-flat.numel()) % per
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    groups = flat.reshape(-1, per).to(torch.int32)
    shifts = torch.arange(per, dtype=torch.int32) * bits
    return (groups << shifts).sum(1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first ``count`` codes of a :func:`pack_bits` tensor."""
    per = 8 // bits
    shifts = torch.arange(per, dtype=torch.int32) * bits
    codes = (packed.to(torch.int32)[:, None] >> shifts) & (2**bits - 1)
    return codes.reshape(-1)[:count].to(torch.uint8)


def packed_length(count: int, bits: int) -> int:
    return math.ceil(count * bits / 8)


# --- encoders -------------------------------------------------------------------------------------

def pack_lowrank(A: torch.Tensor, B: torch.Tensor, bits_per_direction, scale_dtype=torch.float32) -> Packed:
    """Factors with each direction ``k`` (row ``A[k]``, column ``B[:, k]``) quantized at
    ``bits_per_direction[k]`` bits (directions of one width form one segment)."""
    widths = [int(b) for b in bits_per_direction]
    if len(widths) != A.shape[0]:
        raise ValueError("one width per direction")
    tensors: dict[str, torch.Tensor] = {}
    segments = []
    for bits in sorted(set(widths), reverse=True):
        idx = torch.tensor([k for k, b in enumerate(widths) if b == bits])
        i = len(segments)
        for part, rows in (("A", A[idx]), ("B", B[:, idx].T)):
            codes, step = quantize_rows(rows, bits)
            tensors[f"q{i}.{part}"] = pack_bits(codes, bits)
            tensors[f"q{i}.{part}s"] = step.to(scale_dtype)
        segments.append([bits, int(idx.numel())])
    spec = {"kind": "lowrank-q", "shape": [int(B.shape[0]), int(A.shape[1])], "segments": segments}
    return Packed(spec, tensors)


def pack_dense(delta: torch.Tensor, bits: int, scale_dtype=torch.float32) -> Packed:
    """A 2-D delta quantized per row at ``bits`` (1 = sign and scale)."""
    codes, step = quantize_rows(delta, bits)
    spec = {"kind": "dense-q", "shape": list(delta.shape), "bits": bits}
    return Packed(spec, {"codes": pack_bits(codes, bits), "scales": step.to(scale_dtype)})


def pack_sparse(delta: torch.Tensor, drop: float, generator: torch.Generator, value_dtype=torch.float32) -> Packed:
    """DARE: drop each entry with probability ``drop`` and rescale the rest by 1/(1 - drop)."""
    keep = torch.rand(delta.shape, generator=generator) >= drop
    values = (delta.float()[keep] / (1 - drop)).to(value_dtype)
    spec = {"kind": "sparse", "shape": list(delta.shape), "drop": drop}
    return Packed(spec, {"mask": pack_bits(keep.to(torch.uint8), 1), "values": values})


def with_scales(packed: Packed, scales: Mapping[str, torch.Tensor]) -> Packed:
    """The same codes with some scale tensors replaced (e.g. after fitting them)."""
    tensors = dict(packed.tensors)
    for part, value in scales.items():
        tensors[part] = value.detach().to(tensors[part].dtype).reshape(tensors[part].shape)
    return Packed(packed.spec, tensors)


# --- decoding and validation ----------------------------------------------------------------------

def expected_parts(spec: Mapping[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Part name → (dtype class 'uint8' | 'float', shape) that a description requires.
    Raises :class:`PackingError` for a description that cannot be right."""
    kind = spec.get("kind")
    shape = spec.get("shape")
    if kind not in KINDS:
        raise PackingError(f"unknown packed kind {kind!r} (known: {', '.join(KINDS)})")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(n, int) and n > 0 for n in shape)):
        raise PackingError(f"shape {shape!r} is not two positive integers")
    out_dim, in_dim = shape
    if kind == "dense-q":
        bits = spec.get("bits")
        if bits not in BITS:
            raise PackingError(f"bits {bits!r} is not one of {BITS}")
        return {"codes": ("uint8", (packed_length(out_dim * in_dim, bits),)), "scales": ("float", (out_dim,))}
    if kind == "sparse":
        drop = spec.get("drop")
        if not (isinstance(drop, (int, float)) and 0 <= drop < 1):
            raise PackingError(f"drop {drop!r} is not a fraction in [0, 1)")
        return {"mask": ("uint8", (packed_length(out_dim * in_dim, 1),)), "values": ("float", None)}
    segments = spec.get("segments")
    if not (isinstance(segments, list) and segments):
        raise PackingError("lowrank-q needs a non-empty list of [bits, rank] segments")
    parts = {}
    for i, seg in enumerate(segments):
        if not (isinstance(seg, list) and len(seg) == 2 and seg[0] in BITS and isinstance(seg[1], int) and seg[1] > 0):
            raise PackingError(f"segment {seg!r} is not [bits, rank] with bits in {BITS} and a positive rank")
        bits, rank = seg
        parts[f"q{i}.A"] = ("uint8", (packed_length(rank * in_dim, bits),))
        parts[f"q{i}.B"] = ("uint8", (packed_length(rank * out_dim, bits),))
        parts[f"q{i}.As"] = ("float", (rank,))
        parts[f"q{i}.Bs"] = ("float", (rank,))
    return parts


def check_part(spec: Mapping[str, Any], part: str, dtype: str, shape: tuple[int, ...]) -> None:
    """Raise :class:`PackingError` unless a stored tensor (dtype name as safetensors
    reports it, e.g. 'U8', 'F16', or a torch dtype name) fits the description."""
    parts = expected_parts(spec)
    if part not in parts:
        raise PackingError(f"tensor part {part!r} does not belong to a {spec['kind']} delta (expected {sorted(parts)})")
    want_dtype, want_shape = parts[part]
    is_uint8 = dtype in ("U8", "uint8", "torch.uint8")
    is_float = dtype in ("F16", "BF16", "F32", "float16", "bfloat16", "float32") or dtype.replace("torch.", "") in _FLOATS
    if (want_dtype == "uint8" and not is_uint8) or (want_dtype == "float" and not is_float):
        raise PackingError(f"{part} has dtype {dtype}, expected {'uint8' if want_dtype == 'uint8' else 'a float type'}")
    if want_shape is not None and tuple(shape) != want_shape:
        raise PackingError(f"{part} has shape {tuple(shape)}, expected {want_shape}")
    if want_shape is None and len(shape) != 1:
        raise PackingError(f"{part} has shape {tuple(shape)}, expected one dimension")


def unpack(spec: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]):
    """Decode a packed delta into a DenseDelta / LowRankDelta that keeps its packed form."""
    from stance_studio.core.deltas import DenseDelta, LowRankDelta

    parts = expected_parts(spec)
    missing = sorted(set(parts) - set(tensors))
    extra = sorted(set(tensors) - set(parts))
    if missing or extra:
        raise PackingError(f"tensors {missing} missing, {extra} unexpected for a {spec['kind']} delta")
    for part, tensor in tensors.items():
        check_part(spec, part, str(tensor.dtype).replace("torch.", ""), tuple(tensor.shape))
    packed = Packed(dict(spec), dict(tensors))
    out_dim, in_dim = spec["shape"]
    if spec["kind"] == "dense-q":
        bits = spec["bits"]
        codes = unpack_bits(tensors["codes"], bits, out_dim * in_dim).reshape(out_dim, in_dim)
        return DenseDelta(dequantize_rows(codes, tensors["scales"], bits), packed=packed)
    if spec["kind"] == "sparse":
        mask = unpack_bits(tensors["mask"], 1, out_dim * in_dim).bool()
        if int(mask.sum()) != tensors["values"].numel():
            raise PackingError(f"values holds {tensors['values'].numel()} entries but the mask keeps {int(mask.sum())}")
        dense = torch.zeros(out_dim * in_dim)
        dense[mask] = tensors["values"].float()
        return DenseDelta(dense.reshape(out_dim, in_dim), packed=packed)
    As, Bs = [], []
    for i, (bits, rank) in enumerate(spec["segments"]):
        a = unpack_bits(tensors[f"q{i}.A"], bits, rank * in_dim).reshape(rank, in_dim)
        b = unpack_bits(tensors[f"q{i}.B"], bits, rank * out_dim).reshape(rank, out_dim)
        As.append(dequantize_rows(a, tensors[f"q{i}.As"], bits))
        Bs.append(dequantize_rows(b, tensors[f"q{i}.Bs"], bits).T)
    return LowRankDelta(A=torch.cat(As).contiguous(), B=torch.cat(Bs, dim=1).contiguous(), packed=packed)


def stored_weights(spec: Mapping[str, Any]) -> int:
    """How many weights of the model the packed delta covers."""
    out_dim, in_dim = spec["shape"]
    return out_dim * in_dim
