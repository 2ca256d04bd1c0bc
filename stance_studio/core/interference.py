"""Interference between two stances: do their deltas pull the same weights the
same way?

Per layer (and per parameter, and over the whole model):

- **cosine similarity** of the two deltas taken as flat vectors,
  ⟨Δa, Δb⟩ / (‖Δa‖ ‖Δb‖); a parameter only one stance touches counts as zero in
  the other. 1: the same direction, −1: opposite, 0: unrelated.
- **sign conflict**: among the weights both deltas change, the share they push in
  opposite directions (TIES-merging's sign disagreement). 0 for a stance with
  itself, 1 with its negation.

Low-rank factors are never multiplied out for the cosine (⟨B₁A₁, B₂A₂⟩ =
Σ (B₁ᵀB₂) ⊙ (A₁A₂ᵀ), an r₁ × r₂ sum); the sign count materialises one block of rows
at a time, so no full-size matrix is built for a factorised delta.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

import torch

from stance_studio.core.analysis import layer_index, module_kind
from stance_studio.core.deltas import Delta, DenseDelta, LowRankDelta
from stance_studio.core.errors import ShapeMismatchError, StanceStudioError
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress

ROW_BLOCK = 1024


@dataclass
class _Sums:
    dot: float = 0.0
    norm_a: float = 0.0  # squared norms
    norm_b: float = 0.0
    conflicts: int = 0
    shared: int = 0

    def add(self, other: "_Sums") -> None:
        self.dot += other.dot
        self.norm_a += other.norm_a
        self.norm_b += other.norm_b
        self.conflicts += other.conflicts
        self.shared += other.shared

    @property
    def cosine(self) -> Optional[float]:
        if self.norm_a <= 0 or self.norm_b <= 0:
            return None
        return max(-1.0, min(1.0, self.dot / math.sqrt(self.norm_a * self.norm_b)))

    @property
    def sign_conflict(self) -> Optional[float]:
        return self.conflicts / self.shared if self.shared else None


@dataclass
class InterferenceRow:
    """Cosine and sign conflict of one parameter, one layer, or the whole model.
    ``None`` where undefined (one delta is zero there; no weight both change)."""

    name: str
    layer: Optional[int]
    cosine: Optional[float]
    sign_conflict: Optional[float]
    shared_weights: int
    norm_a: float
    norm_b: float

    def as_json(self) -> dict:
        return asdict(self)


@dataclass
class Interference:
    a: str
    b: str
    overall: InterferenceRow
    layers: list[InterferenceRow]
    parameters: list[InterferenceRow]

    def as_json(self) -> dict:
        return {"a": self.a, "b": self.b, "overall": self.overall.as_json(),
                "layers": [r.as_json() for r in self.layers], "parameters": [r.as_json() for r in self.parameters]}


def _inner(x: Delta, y: Delta) -> float:
    """⟨x, y⟩ (Frobenius) without multiplying out low-rank factors."""
    if isinstance(x, LowRankDelta) and isinstance(y, LowRankDelta):
        return float(((x.B.double().T @ y.B.double()) * (x.A.double() @ y.A.double().T)).sum())
    if isinstance(x, LowRankDelta) or isinstance(y, LowRankDelta):
        low, dense = (x, y) if isinstance(x, LowRankDelta) else (y, x)
        return float(((low.B.double().T @ dense.tensor.double()) * low.A.double()).sum())
    return float(torch.dot(x.tensor.double().flatten(), y.tensor.double().flatten()))


def _rows(delta: Delta, start: int, stop: int) -> torch.Tensor:
    if isinstance(delta, LowRankDelta):
        return delta.B[start:stop].float() @ delta.A.float()
    return delta.tensor[start:stop].float()


def _sign_counts(x: Delta, y: Delta) -> tuple[int, int]:
    """(weights changed by both in opposite directions, weights changed by both)."""
    if isinstance(x, DenseDelta) and x.tensor.dim() < 2:
        product = torch.sign(x.tensor.float()) * torch.sign(y.materialize())
        return int((product < 0).sum()), int((product != 0).sum())
    conflicts = shared = 0
    for start in range(0, x.shape[0], ROW_BLOCK):
        stop = start + ROW_BLOCK
        product = torch.sign(_rows(x, start, stop)) * torch.sign(_rows(y, start, stop))
        conflicts += int((product < 0).sum())
        shared += int((product != 0).sum())
    return conflicts, shared


def _pair(name: str, x: Optional[Delta], y: Optional[Delta]) -> _Sums:
    sums = _Sums()
    if x is not None:
        sums.norm_a = _inner(x, x)
    if y is not None:
        sums.norm_b = _inner(y, y)
    if x is not None and y is not None:
        if x.shape != y.shape:
            raise ShapeMismatchError(f"The two stances change {name} with different shapes: {x.shape} and {y.shape}.")
        sums.dot = _inner(x, y)
        sums.conflicts, sums.shared = _sign_counts(x, y)
    return sums


def _row(name: str, layer: Optional[int], s: _Sums) -> InterferenceRow:
    return InterferenceRow(name, layer, s.cosine, s.sign_conflict, s.shared,
                           math.sqrt(max(s.norm_a, 0.0)), math.sqrt(max(s.norm_b, 0.0)))


@torch.no_grad()
def interference(
    a: Mapping[str, Delta],
    b: Mapping[str, Delta],
    names: tuple[str, str] = ("a", "b"),
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
) -> Interference:
    """Cosine similarity and sign conflict of two delta maps, per parameter, per
    layer (parameters outside the transformer blocks form the row ``other``) and
    over the whole model."""
    cancel = ensure_flag(cancel)
    params = list(a) + [n for n in b if n not in a]
    per_layer: dict[Optional[int], _Sums] = {}
    total = _Sums()
    rows: list[InterferenceRow] = []
    for i, name in enumerate(params):
        cancel.raise_if_set("interference measurement")
        sums = _pair(name, a.get(name), b.get(name))
        layer = layer_index(name)
        per_layer.setdefault(layer, _Sums()).add(sums)
        total.add(sums)
        rows.append(_row(name, layer, sums))
        progress(Progress("interference", i + 1, len(params), f"Compared {module_kind(name)} of layer {layer}"))
    layers = [_row(f"layer {k}", k, per_layer[k]) for k in sorted(k for k in per_layer if k is not None)]
    if None in per_layer:
        layers.append(_row("other", None, per_layer[None]))
    return Interference(names[0], names[1], _row("all", None, total), layers, rows)


def checkpoint_interference(
    a,
    b,
    names: Optional[tuple[str, str]] = None,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
) -> Interference:
    """:func:`interference` of two weight stances (checkpoints). A steering stance has
    no weight delta, so comparing one would report an empty table as if the stances
    were unrelated: it is refused by name instead."""
    from stance_studio.core.checkpoints import ACTIVATION

    for ckpt in (a, b):
        if ckpt.kind == ACTIVATION:
            raise StanceStudioError(
                f"{ckpt.name!r} is a steering stance (activation vectors, no weight delta); interference compares "
                "the weight deltas of two weight stances. Compare steering stances with sweep-layers or side by side.")
    return interference(a.deltas, b.deltas, names=names or (a.name, b.name), progress=progress, cancel=cancel)
