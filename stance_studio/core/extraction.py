"""Extraction policies: which part of a training delta a checkpoint keeps.

A policy is a ``+``-joined list of terms:
- ``all``: every changed parameter, dense;
- ``top:K``: the K parameters with the largest relative change (the report's
  "selective checkpointing" is ``top:2``);
- ``rank:R``: every 2-D delta truncated to rank R (truncated SVD);
- ``energy:F``: every 2-D delta truncated to the rank holding fraction F of its
  spectral energy (combined with ``rank:R``, R caps it);
- ``budget:F``: a hard cap of fraction F of the base model's bytes on the whole
  checkpoint file. 1-D parameters are kept dense first, most changed first, while
  they fit; the rest is spent on the singular directions with the most energy per
  byte across all modules (the least total squared error for that size);
- ``aware``: activation-aware truncation: the SVD is taken of Δ·diag(s), s the
  RMS of each input channel of the module on calibration text (the training
  examples), so the kept directions are those that change the module's *outputs*
  most, not its weights;
- ``fp16`` / ``bf16``: store the kept tensors in half precision;
- ``q8`` / ``q4``: quantize low-rank factors to 8 or 4 bits, one scale per singular
  direction vector; ``mixed``: 8, 4 or 2 bits per direction, more for the top
  directions (Delta-CoMe), each direction's width chosen by error removed per byte
  (with ``rank:R``/``energy:F``: within the bytes rank R would take at 4 bits);
  they need ``rank``, ``energy`` or ``budget``;
- ``sign``: sign and scale (BitDelta): 1 bit per weight plus one scale per row,
  the scales fitted on calibration text (the training examples) to match the fully
  tuned model's next-token distributions;
- ``dare:P``: DARE sparsification: drop a random fraction P of each matrix's
  entries and rescale the rest by 1/(1 - P);
- with ``budget:F``, ``sign`` and ``dare:P`` are choices the budget weighs per
  module against (quantized) low-rank factors (core/budget.py); without a budget
  each applies to every matrix and combines with neither ``rank`` nor ``energy``.
1-D parameters (norm scales) stay dense. A delta that is already low rank (LoRA)
is kept exactly unless a rank or energy term asks for less. A truncated delta whose
factors would take more bytes than the matrix is stored dense as B @ A, with its
rank recorded: a policy always keeps what it says, never more.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch

from stance_studio.core.analysis import analyse, rank_for_energy
from stance_studio.core.batching import pad_batch
from stance_studio.core.budget import build_lowrank, lowrank_curve, module_header_bytes, spend_budget, widths_for
from stance_studio.core.deltas import (
    Delta,
    DenseDelta,
    LowRankDelta,
    bits_per_weight,
    delta_bytes,
    factors_from_svd,
    svd_factors,
)
from stance_studio.core.distill import fit_scales
from stance_studio.core.errors import PolicyError
from stance_studio.core.packing import pack_dense, pack_sparse, unpack
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress

# Chosen from measurements on the bundled model (benchmarks/extraction_policies.py,
# README "Choosing the default extraction policy").
DEFAULT_POLICY = "budget:0.02+mixed+fp16"
# What a ``budget`` keeps back for the checkpoint metadata that is not per module
# (training record, metrics, stance description); see ``extract``.
FILE_RESERVE_BYTES = 16 * 1024

_TERM = re.compile(r"^(all|aware|fp16|bf16|q8|q4|mixed|sign|top:(\d+)|rank:(\d+)|energy:(0?\.\d+|1(?:\.0*)?|0)"
                   r"|budget:(0?\.\d+|1(?:\.0*)?|0)|dare:(0?\.\d+|0))$")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Policy:
    text: str
    top: Optional[int] = None
    rank: Optional[int] = None
    energy: Optional[float] = None
    budget: Optional[float] = None
    aware: bool = False
    dtype: Optional[str] = None
    quant: Optional[str] = None  # q8 | q4 | mixed
    sign: bool = False
    dare: Optional[float] = None


def parse_policy(text: str) -> Policy:
    """Parse ``all``, ``top:K``, ``rank:R``, ``energy:F``, ``budget:F``, ``aware``, ``fp16``/``bf16``,
    ``q8``/``q4``/``mixed``, ``sign``, ``dare:P`` and ``+`` combinations."""
    if isinstance(text, Policy):
        return text
    clean = (text or "").strip().lower().replace(" ", "")
    if not clean:
        raise PolicyError("Empty extraction policy; use all, top:K, rank:R, energy:F, budget:F or e.g. top:60+rank:16.")
    fields: dict = {}
    for term in clean.split("+"):
        match = _TERM.match(term)
        if not match:
            raise PolicyError(
                f"Cannot read {term!r} in extraction policy {text!r}; terms are all, top:K, rank:R, "
                "energy:F (0 < F ≤ 1), budget:F (0 < F ≤ 1), aware, fp16, bf16, q8, q4, mixed, sign or "
                "dare:P (0 < P < 1), joined by '+'."
            )
        if term == "all":
            key, value = "all", True
        elif term == "aware":
            key, value = "aware", True
        elif term in _DTYPES:
            key, value = "dtype", term
        elif term in ("q8", "q4", "mixed"):
            key, value = "quant", term
        elif term == "sign":
            key, value = "sign", True
        elif match.group(6):
            key, value = "dare", float(match.group(6))
        elif match.group(2):
            key, value = "top", int(match.group(2))
        elif match.group(3):
            key, value = "rank", int(match.group(3))
        elif match.group(4):
            key, value = "energy", float(match.group(4))
        else:
            key, value = "budget", float(match.group(5))
        if key in fields:
            raise PolicyError(f"Extraction policy {text!r} names {key} twice.")
        if value in (0, 0.0) and key in ("top", "rank", "energy", "budget", "dare"):
            raise PolicyError(f"{term!r} keeps nothing; use a positive value.")
        fields[key] = value
    _check_combination(text, fields)
    return Policy(text=clean, **fields)


def _check_combination(text: str, fields: dict) -> None:
    """Refuse term combinations whose meaning would be a guess."""
    if fields.pop("all", False) and any(k in fields for k in ("top", "rank", "energy", "budget", "aware", "quant",
                                                             "sign", "dare")):
        raise PolicyError(f"'all' keeps every module dense; do not combine it with top/rank/energy/budget, "
                          f"quantization, sign or dare ({text!r}).")
    truncates = any(k in fields for k in ("rank", "energy", "budget"))
    if fields.get("quant") and not truncates:
        raise PolicyError(f"{fields['quant']!r} quantizes low-rank factors; combine it with rank, energy or budget "
                          f"({text!r}), or use 'sign' for a 1-bit copy of every matrix.")
    if "budget" not in fields:
        whole = [k for k in ("sign", "dare") if k in fields]
        if len(whole) > 1 or (whole and any(k in fields for k in ("rank", "energy", "quant"))):
            raise PolicyError(f"Without a budget, {' or '.join(whole)} applies to every matrix and cannot be mixed "
                              f"with other representations ({text!r}); add budget:F to let the budget choose per module.")
    if fields.get("aware") and not any(k in fields for k in ("rank", "energy", "budget")):
        raise PolicyError(f"'aware' changes how deltas are truncated; combine it with rank, energy or budget ({text!r}).")


def extract(
    deltas: Mapping[str, Delta],
    base,
    policy: str | Policy = DEFAULT_POLICY,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    calibration: Optional[Sequence[Sequence[int]]] = None,
    reserve_bytes: int = FILE_RESERVE_BYTES,
    cache: Optional[dict] = None,
) -> tuple[dict[str, Delta], dict]:
    """The kept part of ``deltas`` and a description for the checkpoint metadata.

    ``calibration`` (token id sequences, e.g. the training examples) is needed by
    the ``aware`` term; without it an ``aware`` policy truncates plainly.
    A ``budget`` is a budget for the whole checkpoint file: the header entries of
    every kept module and ``reserve_bytes`` for the rest of the metadata (training
    record, metrics) are paid from it before any tensor value. ``cache``: a dict
    shared by extractions of the same deltas (SVDs are computed once).
    """
    cancel = ensure_flag(cancel)
    policy = parse_policy(policy)
    scales = activation_scales(base, calibration, deltas) if policy.aware and calibration else {}
    names = list(deltas)
    if policy.top is not None:
        ranked = analyse(deltas, base, spectra=False)
        names = [c.name for c in ranked[: policy.top]]
    kept: dict[str, Delta] = {}
    ranks: dict[str, Optional[int]] = {}
    if policy.budget is not None:
        item_bytes = 2 if policy.dtype else 4
        file_bytes = int(policy.budget * base.parameter_bytes())
        kept = spend_budget({n: deltas[n] for n in names}, policy, file_bytes - reserve_bytes, item_bytes, progress,
                            cancel, scales, cache=cache)
        if names and not kept:
            raise PolicyError(
                f"Extraction policy {policy.text!r} caps the checkpoint file at {file_bytes:,} bytes on this model, "
                f"but its metadata alone needs about {reserve_bytes:,}, so no module fits; use a larger budget "
                "or a rank policy (e.g. rank:4+fp16)."
            )
        ranks = {n: d.rank for n, d in kept.items()}
    for i, name in enumerate(names if policy.budget is None else []):
        cancel.raise_if_set("extraction")
        kept[name] = _represent(name, deltas[name], policy, scales.get(name))
        ranks[name] = kept[name].rank
        progress(Progress("extract", i + 1, len(names), f"Extracting {name}"))
    if policy.dtype:
        kept = {n: _cast(d, _DTYPES[policy.dtype]) for n, d in kept.items()}
    fitted = {}
    if policy.sign and calibration:
        kept, fitted = fit_scales(base, deltas, kept, calibration, progress=progress, cancel=cancel)
    info = {
        "policy": policy.text,
        "kept_modules": list(kept),
        "ranks": ranks,
        "bytes": delta_bytes(kept),
        "source_modules": len(deltas),
        "activation_aware": bool(scales),
        "bits_per_weight": round(bits_per_weight(kept), 4),
        "representations": representations(kept),
    }
    if fitted:
        info["distillation"] = fitted
    return kept, info


def representations(kept: Mapping[str, Delta]) -> dict[str, int]:
    """How many kept deltas use each stored form (dense, lowrank, lowrank-q, dense-q, sparse)."""
    out: dict[str, int] = {}
    for delta in kept.values():
        kind = delta.packed.kind if delta.packed is not None else (
            "lowrank" if isinstance(delta, LowRankDelta) else "dense")
        out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items()))


def _represent(name: str, delta: Delta, policy: Policy, scale: Optional[torch.Tensor] = None) -> Delta:
    """One delta under a policy without a budget."""
    if len(delta.shape) != 2:
        return delta
    if policy.sign:
        return unpack(**vars_of(pack_dense(delta.materialize(), 1)))
    if policy.dare is not None:
        dtype = _DTYPES.get(policy.dtype, torch.float32)
        generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        return unpack(**vars_of(pack_sparse(delta.materialize(), policy.dare, generator, dtype)))
    if policy.quant is None:
        return _truncate(delta, policy, scale)
    return _quantize(name, delta, policy, scale)


def _quantize(name: str, delta: Delta, policy: Policy, scale) -> Delta:
    """The policy's rank with quantized factors: all at 8 or 4 bits, or, for ``mixed``,
    the bytes that rank takes at 4 bits spread over the directions where they remove
    the most error."""
    svd = svd_factors(delta, scale)
    rank = svd[1].numel() if policy.energy is None else rank_for_energy(svd[1], policy.energy)
    rank = max(1, min(rank, policy.rank or rank))
    if policy.quant != "mixed":
        return build_lowrank(delta, svd, {k: widths_for(policy.quant)[0] for k in range(rank)})
    weighted = delta.materialize() * (1 if scale is None else scale)
    total = float(weighted.double().square().sum())
    curve, steps = lowrank_curve(name, delta, svd, widths_for("mixed"), 4, None, scale, total)
    out_dim, in_dim = delta.shape
    target = rank * ((out_dim + in_dim) * 4 / 8 + 8) + module_header_bytes(name, 12, True)
    chosen = max((c.steps for c in curve if c.bytes <= target), default=1)
    return build_lowrank(delta, svd, dict(steps[:chosen]))


def vars_of(packed) -> dict:
    return {"spec": packed.spec, "tensors": packed.tensors}


def _truncate(delta: Delta, policy: Policy, scale: Optional[torch.Tensor] = None) -> Delta:
    if (policy.rank is None and policy.energy is None) or len(delta.shape) != 2:
        return delta
    U, S, Vh = svd_factors(delta, scale)
    rank = S.numel()
    if policy.energy is not None:
        rank = rank_for_energy(S, policy.energy)
    if policy.rank is not None:
        rank = min(rank, policy.rank)
    rank = max(1, rank)
    if isinstance(delta, LowRankDelta) and rank >= delta.rank:
        return delta  # already within the policy: keep it exactly
    if isinstance(delta, DenseDelta) and rank >= S.numel():
        return DenseDelta(delta.tensor, truncated_rank=rank)  # full rank: nothing to cut
    return _compact(factors_from_svd(U, S, Vh, rank))


def _compact(delta: LowRankDelta) -> Delta:
    """The truncation in its smaller form: factors, or B @ A when that takes fewer bytes."""
    out_dim, in_dim = delta.shape
    if delta.rank * (out_dim + in_dim) < out_dim * in_dim:
        return delta
    return DenseDelta(delta.materialize().contiguous(), truncated_rank=delta.rank)


@torch.no_grad()
def activation_scales(base, calibration: Sequence[Sequence[int]], deltas: Mapping[str, Delta],
                      batch_size: int = 4) -> dict[str, torch.Tensor]:
    """RMS of each input channel of every linear module a delta touches, over the
    calibration token sequences run through the base model."""
    modules = dict(base.model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    real: dict[str, torch.Tensor] = {}  # the current batch's non-padding positions
    handles = []
    for name in deltas:
        module = modules.get(name.rpartition(".")[0])
        if not isinstance(module, torch.nn.Linear) or not name.endswith(".weight"):
            continue

        def hook(mod, args, name=name):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])[real["rows"]]
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        handles.append(module.register_forward_pre_hook(hook))
    try:
        seqs = [list(s) for s in calibration]
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start : start + batch_size]
            ids, mask = pad_batch(chunk, base.tokenizer.pad_token_id or 0,
                                  device=next(base.model.parameters()).device)
            real["rows"] = mask.reshape(-1).bool()
            base.model(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    # on the CPU, where deltas loaded from files are; _factors moves them to each delta
    return {n: (sums[n] / counts[n]).sqrt().clamp_min(1e-6).cpu() for n in sums}


def _cast(delta: Delta, dtype: torch.dtype) -> Delta:
    if delta.packed is not None:
        return delta  # stored packed: its float dtype is chosen when packing
    if isinstance(delta, LowRankDelta):
        return LowRankDelta(A=delta.A.to(dtype), B=delta.B.to(dtype))
    return DenseDelta(delta.tensor.to(dtype), truncated_rank=delta.truncated_rank)
