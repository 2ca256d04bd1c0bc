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
- ``fp16`` / ``bf16``: store the kept tensors in half precision.
1-D parameters (norm scales) stay dense. A delta that is already low rank (LoRA)
is kept exactly unless a rank or energy term asks for less. A truncated delta whose
factors would take more bytes than the matrix is stored dense as B @ A, with its
rank recorded: a policy always keeps what it says, never more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch

from stance_studio.core.analysis import analyse, rank_for_energy
from stance_studio.core.batching import pad_batch
from stance_studio.core.deltas import Delta, DenseDelta, LowRankDelta, delta_bytes, factors_from_svd, svd_factors
from stance_studio.core.errors import PolicyError
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress

# Chosen from measurements on the bundled model (benchmarks/extraction_policies.py,
# README "Choosing the default extraction policy").
DEFAULT_POLICY = "budget:0.02+fp16"
# What a ``budget`` keeps back for the checkpoint metadata that is not per module
# (training record, metrics, stance description); see ``extract``.
FILE_RESERVE_BYTES = 16 * 1024

_TERM = re.compile(r"^(all|aware|fp16|bf16|top:(\d+)|rank:(\d+)|energy:(0?\.\d+|1(?:\.0*)?|0)|budget:(0?\.\d+|1(?:\.0*)?|0))$")
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


def parse_policy(text: str) -> Policy:
    """Parse ``all``, ``top:K``, ``rank:R``, ``energy:F``, ``budget:F``, ``aware``, ``fp16``/``bf16``
    and ``+`` combinations."""
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
                "energy:F (0 < F ≤ 1), budget:F (0 < F ≤ 1), aware, fp16 or bf16, joined by '+'."
            )
        if term == "all":
            key, value = "all", True
        elif term == "aware":
            key, value = "aware", True
        elif term in _DTYPES:
            key, value = "dtype", term
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
        if value in (0, 0.0) and key in ("top", "rank", "energy", "budget"):
            raise PolicyError(f"{term!r} keeps nothing; use a positive value.")
        fields[key] = value
    if fields.pop("all", False) and any(k in fields for k in ("top", "rank", "energy", "budget", "aware")):
        raise PolicyError(f"'all' keeps every module dense; do not combine it with top/rank/energy/budget ({text!r}).")
    if fields.get("aware") and not any(k in fields for k in ("rank", "energy", "budget")):
        raise PolicyError(f"'aware' changes how deltas are truncated; combine it with rank, energy or budget ({text!r}).")
    return Policy(text=clean, **fields)


def extract(
    deltas: Mapping[str, Delta],
    base,
    policy: str | Policy = DEFAULT_POLICY,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    calibration: Optional[Sequence[Sequence[int]]] = None,
    reserve_bytes: int = FILE_RESERVE_BYTES,
) -> tuple[dict[str, Delta], dict]:
    """The kept part of ``deltas`` and a description for the checkpoint metadata.

    ``calibration`` (token id sequences, e.g. the training examples) is needed by
    the ``aware`` term; without it an ``aware`` policy truncates plainly.
    A ``budget`` is a budget for the whole checkpoint file: the header entries of
    every kept module and ``reserve_bytes`` for the rest of the metadata (training
    record, metrics) are paid from it before any tensor value.
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
        kept = _spend_budget({n: deltas[n] for n in names}, policy, file_bytes - reserve_bytes, item_bytes, progress,
                             cancel, scales)
        if names and not kept:
            raise PolicyError(
                f"Extraction policy {policy.text!r} caps the checkpoint file at {file_bytes:,} bytes on this model, "
                f"but its metadata alone needs about {reserve_bytes:,}, so no module fits; use a larger budget "
                "or a rank policy (e.g. rank:4+fp16)."
            )
        ranks = {n: d.rank for n, d in kept.items()}
    for i, name in enumerate(names if policy.budget is None else []):
        cancel.raise_if_set("extraction")
        kept[name] = _truncate(deltas[name], policy, scales.get(name))
        ranks[name] = kept[name].rank
        progress(Progress("extract", i + 1, len(names), f"Extracting {name}"))
    if policy.dtype:
        kept = {n: _cast(d, _DTYPES[policy.dtype]) for n, d in kept.items()}
    info = {
        "policy": policy.text,
        "kept_modules": list(kept),
        "ranks": ranks,
        "bytes": delta_bytes(kept),
        "source_modules": len(deltas),
        "activation_aware": bool(scales),
    }
    return kept, info


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
    return {n: (sums[n] / counts[n]).sqrt().clamp_min(1e-6) for n in sums}


def module_header_bytes(name: str) -> int:
    """An upper bound of what one kept module adds to a checkpoint's header: two
    safetensors entries (A and B) and its name in the extraction record twice."""
    return 2 * (len(name) + 72) + 2 * (len(name) + 12)


def _spend_budget(deltas: Mapping[str, Delta], policy: Policy, budget_bytes: float, item_bytes: int, progress,
                  cancel, scales: Mapping[str, torch.Tensor]) -> dict[str, Delta]:
    """Greedy allocation within ``budget_bytes``: whole 1-D deltas first (largest
    change first, each only if it fits), then singular directions by energy per byte."""
    kept: dict[str, Delta] = {}
    spectra = {}
    budget_items = budget_bytes / item_bytes
    flat = []
    for i, (name, delta) in enumerate(deltas.items()):
        cancel.raise_if_set("extraction")
        if len(delta.shape) != 2:
            flat.append((float(delta.materialize().double().square().sum()), name))
        else:
            spectra[name] = svd_factors(delta, scales.get(name))
        progress(Progress("extract", i + 1, len(deltas), f"Analysing {name}"))
    for _, name in sorted(flat, key=lambda f: -f[0]):
        cost = deltas[name].materialize().numel() + module_header_bytes(name) / item_bytes
        if cost <= budget_items:
            kept[name] = deltas[name]
            budget_items -= cost
    candidates = []
    for name, (_, s, _) in spectra.items():
        out_dim, in_dim = deltas[name].shape
        cap = min(s.numel(), policy.rank or s.numel(), (out_dim * in_dim) // (out_dim + in_dim))
        cost = out_dim + in_dim
        energy = (s[:cap].double() ** 2).tolist()
        candidates.extend((e / cost, name, k, cost) for k, e in enumerate(energy))
    candidates.sort(key=lambda c: -c[0])
    chosen: dict[str, int] = {}
    for _, name, k, cost in candidates:
        if k != chosen.get(name, 0):
            continue  # directions of one module are taken in order
        if k == 0:
            cost += module_header_bytes(name) / item_bytes  # the first direction pays for the header entries
        if cost > budget_items:
            continue
        chosen[name] = k + 1
        budget_items -= cost
    for name, rank in chosen.items():
        delta = deltas[name]
        # a low-rank (LoRA) delta that fits whole is kept as it is: exact, not re-factorised
        exact = isinstance(delta, LowRankDelta) and rank >= delta.rank
        kept[name] = delta if exact else factors_from_svd(*spectra[name], rank)
    return {n: kept[n] for n in deltas if n in kept}


def _cast(delta: Delta, dtype: torch.dtype) -> Delta:
    if isinstance(delta, LowRankDelta):
        return LowRankDelta(A=delta.A.to(dtype), B=delta.B.to(dtype))
    return DenseDelta(delta.tensor.to(dtype), truncated_rank=delta.truncated_rank)
