"""Where a stance changes the model: per-parameter weight-change statistics.

For each touched parameter: relative Frobenius change ‖Δ‖/‖W0‖, absolute change
‖Δ‖, change in norm ‖W0+Δ‖ − ‖W0‖, layer index and depth fraction, module kind,
and the rank that holds 90 % of the delta's spectral energy.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Optional

import torch

from stance_studio.core.deltas import Delta, DenseDelta, LowRankDelta

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
# Module names some families use in more than one place of a block.
_SHARED_NAMES = {"c_proj", "dense", "proj"}
METRICS = ("relative_change", "abs_change", "norm_change")


def layer_index(name: str) -> Optional[int]:
    """The transformer block a parameter belongs to, or None (embeddings, final norm)."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def module_kind(name: str) -> str:
    """The module a parameter belongs to: ``q_proj``, ``down_proj``, ``input_layernorm``,
    ``embed_tokens``, …"""
    parts = name.split(".")
    if parts[-1] in ("weight", "bias") and len(parts) > 1:
        parts = parts[:-1]
    if parts[-1] in _SHARED_NAMES and len(parts) > 1:
        return ".".join(parts[-2:])  # GPT-2's attn.c_proj and mlp.c_proj are different kinds
    return parts[-1]


@dataclass
class ModuleChange:
    """How much one parameter changed."""

    name: str
    layer: Optional[int]
    depth: Optional[float]
    kind: str
    shape: tuple[int, ...]
    numel: int
    relative_change: float
    abs_change: float
    norm_change: float
    rank90: Optional[int]
    stored_rank: Optional[int]

    def as_json(self) -> dict:
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


def singular_values(delta: Delta | torch.Tensor) -> torch.Tensor:
    """Singular values of a 2-D delta, largest first (cheap for low-rank factors)."""
    if isinstance(delta, LowRankDelta):
        # B @ A = Qb Rb (Qa Ra)^T; the singular values are those of Rb Ra^T (r × r).
        _, Rb = torch.linalg.qr(delta.B.float())
        _, Ra = torch.linalg.qr(delta.A.float().T)
        return torch.linalg.svdvals(Rb @ Ra.T)
    tensor = delta.tensor if isinstance(delta, DenseDelta) else delta
    if tensor.dim() != 2:
        raise ValueError("singular values need a 2-D delta")
    return torch.linalg.svdvals(tensor.float())


def energy_curve(sv: torch.Tensor) -> torch.Tensor:
    """Cumulative share of spectral energy held by the first k singular values."""
    energy = sv.double() ** 2
    total = energy.sum()
    if total == 0:
        return torch.ones_like(energy)
    return torch.cumsum(energy, 0) / total


def rank_for_energy(sv: torch.Tensor, fraction: float) -> int:
    """The smallest rank whose singular values hold ``fraction`` of the energy."""
    if sv.numel() == 0:
        return 0
    curve = energy_curve(sv)
    hits = (curve >= fraction - 1e-12).nonzero()
    return int(hits[0]) + 1 if hits.numel() else int(sv.numel())


def _frobenius(delta: Delta) -> float:
    if isinstance(delta, LowRankDelta):
        return float(singular_values(delta).norm())
    return float(delta.tensor.float().norm())


@torch.no_grad()
def analyse(
    deltas: Mapping[str, Delta],
    base,
    original: Optional[Callable[[str], torch.Tensor]] = None,
    spectra: bool = True,
) -> list[ModuleChange]:
    """Statistics for every parameter in ``deltas`` against the base weights.

    ``original(name)`` returns W0 (pass ``blender.original`` while a blend is
    applied); ``spectra=False`` skips the SVDs for a quick look.
    """
    params = base.parameters
    get_w0 = original or (lambda name: params[name].detach())
    layers = max(base.num_layers, 1)
    out: list[ModuleChange] = []
    for name, delta in deltas.items():
        w0 = get_w0(name).float()
        dense = delta.materialize().float().to(w0.device)
        abs_change = _frobenius(delta)
        w0_norm = float(w0.norm())
        layer = layer_index(name)
        rank90 = None
        if spectra and dense.dim() == 2:
            rank90 = rank_for_energy(singular_values(delta), 0.9)
        out.append(
            ModuleChange(
                name=name,
                layer=layer,
                depth=(layer + 0.5) / layers if layer is not None else None,
                kind=module_kind(name),
                shape=tuple(delta.shape),
                numel=int(dense.numel()),
                relative_change=abs_change / w0_norm if w0_norm > 0 else float("inf"),
                abs_change=abs_change,
                norm_change=float((w0 + dense).norm()) - w0_norm,
                rank90=rank90,
                stored_rank=delta.rank,
            )
        )
    out.sort(key=lambda m: m.relative_change, reverse=True)
    return out
