"""Weight deltas and steering vectors of one stance, layer by layer.

The plots panel shows the two kinds side by side: how much a weight stance changes
each layer, next to how far a steering stance built from the same dataset moves
each layer's residual stream. Both are plain per-layer lists, indexed by layer.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from stance_studio.core.analysis import layer_index
from stance_studio.core.deltas import Delta, LowRankDelta


def delta_norm_squared(delta: Delta) -> float:
    """‖Δ‖²_F without forming B @ A for a factorised delta: trace((BᵀB)(AAᵀ))."""
    if isinstance(delta, LowRankDelta):
        A, B = delta.A.float(), delta.B.float()
        return float(torch.sum((B.T @ B) * (A @ A.T)).clamp(min=0.0))
    return float(delta.tensor.float().pow(2).sum())


def weight_change_by_layer(deltas: dict[str, Delta], num_layers: int) -> list[float]:
    """Per layer, the Frobenius norm of every delta inside it (0 where none)."""
    squares = [0.0] * num_layers
    for name, delta in deltas.items():
        layer = layer_index(name)
        if layer is not None and 0 <= layer < num_layers:
            squares[layer] += delta_norm_squared(delta)
    return [s ** 0.5 for s in squares]


def steering_effect_by_layer(steering: dict, num_layers: int) -> list[Optional[float]]:
    """Per layer, the steering vector's norm relative to the mean norm of that layer's
    output on the base model's own answers (recorded at build time): how far the
    stance moves the residual stream there. None where the file records no norm."""
    norms: Sequence = steering.get("norms") or []
    residual: Sequence = steering.get("residual_norms") or []
    out: list[Optional[float]] = []
    for layer in range(num_layers):
        v = norms[layer] if layer < len(norms) else None
        h = residual[layer] if layer < len(residual) else None
        out.append(None if v is None else (v / h if h else float(v)))
    return out


def paired_stance(entries, name: str) -> Optional[str]:
    """The library entry of the other kind (weights vs activation) built from the
    same dataset as ``name`` (same dataset hash), newest first; None if there is none."""
    chosen = next((e for e in entries if e.name == name), None)
    if chosen is None:
        return None
    digest = chosen.metadata.get("stance", {}).get("dataset_hash")
    kind = chosen.metadata.get("kind", "weights")
    if not digest:
        return None
    others = [e for e in entries if e.name != name and e.metadata.get("kind", "weights") != kind
              and e.metadata.get("stance", {}).get("dataset_hash") == digest]
    others.sort(key=lambda e: e.created, reverse=True)
    return others[0].name if others else None
