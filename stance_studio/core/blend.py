"""Apply, blend and reset stances on a loaded base model.

For every touched parameter the weights are recomputed from an exact copy of the
base tensor: W = W0 + Σ α_i Δ_i. Nothing accumulates, so any sequence of blends
followed by :meth:`Blender.reset` gives the base back bit for bit. Low-rank deltas
of one parameter are summed in a single matrix product (``addmm``) straight into
the parameter's storage.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Sequence, Union

import torch

from stance_studio.core.checkpoints import StanceCheckpoint, check_compatible
from stance_studio.core.deltas import Delta, DenseDelta, LowRankDelta
from stance_studio.core.errors import ShapeMismatchError
from stance_studio.core.variants import check_weight

Source = Union[StanceCheckpoint, Mapping[str, Delta]]
BlendSpec = Sequence[tuple[Source, float]]


class Blender:
    """Owns the base weights of one :class:`~stance_studio.core.models.BaseModel`."""

    def __init__(self, base) -> None:
        self.base = base
        self._params = dict(base.model.named_parameters())
        self._originals: dict[str, torch.Tensor] = {}
        self._modified: set[str] = set()
        self._active: list[tuple[Source, float]] = []
        self._written: dict[str, list[tuple[float, Delta]]] = {}
        self._lock = threading.RLock()

    @property
    def active(self) -> list[tuple[Source, float]]:
        """The (source, alpha) pairs currently applied (alpha ≠ 0 only)."""
        return list(self._active)

    @property
    def is_base(self) -> bool:
        return not self._modified

    def original(self, name: str) -> torch.Tensor:
        """The exact base tensor W0 of parameter ``name``."""
        with self._lock:
            if name in self._originals:
                return self._originals[name]
            return self._params[name].detach()

    def check(self, source: Source, allow_mismatch: bool = False) -> None:
        """Raise if ``source`` cannot be applied to this base (shapes, fingerprint)."""
        if isinstance(source, StanceCheckpoint):
            check_compatible(source, self.base, allow_mismatch=allow_mismatch)
            return
        for name, delta in source.items():
            param = self._params.get(name)
            if param is None:
                raise ShapeMismatchError(f"The delta changes {name}, which {self.base.model_id} does not have.")
            if tuple(param.shape) != delta.shape:
                raise ShapeMismatchError(
                    f"The delta for {name} has shape {delta.shape}; {self.base.model_id} has {tuple(param.shape)}."
                )

    @torch.no_grad()
    def apply(self, blend: BlendSpec | Iterable[tuple[Source, float]], allow_mismatch: bool = False) -> None:
        """Set the model's weights to W0 + Σ α Δ for this blend (replacing any previous one)."""
        blend = [(src, check_weight(alpha)) for src, alpha in blend if float(alpha) != 0.0]
        for src, _ in blend:
            self.check(src, allow_mismatch=allow_mismatch)
        per_param: dict[str, list[tuple[float, Delta]]] = {}
        for src, alpha in blend:
            deltas = src.deltas if isinstance(src, StanceCheckpoint) else src
            for name, delta in deltas.items():
                per_param.setdefault(name, []).append((alpha, delta))
        with self._lock:
            for name in per_param:
                if name not in self._originals:
                    self._originals[name] = self._params[name].detach().clone()
            for name in self._modified - per_param.keys():
                self._params[name].data.copy_(self._originals[name])
                self._written.pop(name, None)
            for name, terms in per_param.items():
                # A parameter whose terms are unchanged already holds W0 + Σ α Δ:
                # moving one slider recomputes only what that stance touches.
                if not _same_terms(self._written.get(name), terms):
                    self._write(name, terms)
                    self._written[name] = list(terms)
            self._modified = set(per_param)
            self._active = blend

    def _write(self, name: str, terms: list[tuple[float, Delta]]) -> None:
        target = self._params[name].data
        w0 = self._originals[name]
        low = [(a, d) for a, d in terms if isinstance(d, LowRankDelta)]
        dense = [(a, d) for a, d in terms if isinstance(d, DenseDelta)]
        if low:
            B = torch.cat([d.B.to(w0.dtype) * a for a, d in low], dim=1)
            A = torch.cat([d.A.to(w0.dtype) for _, d in low], dim=0)
            torch.addmm(w0, B, A, out=target)
        else:
            target.copy_(w0)
        for alpha, delta in dense:
            target.add_(delta.tensor.to(w0.dtype), alpha=alpha)

    @torch.no_grad()
    @contextmanager
    def restoring(self) -> Iterator[None]:
        """Run a block that may change the weights; afterwards the blend that was in
        force before it is put back (also when the block raises)."""
        previous = self.active
        try:
            yield
        finally:
            self.apply(previous, allow_mismatch=True)

    def reset(self) -> None:
        """Give the base weights back, bit for bit."""
        with self._lock:
            for name in self._modified:
                self._params[name].data.copy_(self._originals[name])
            self._modified = set()
            self._written = {}
            self._active = []


def _same_terms(old: list[tuple[float, Delta]] | None, new: list[tuple[float, Delta]]) -> bool:
    """Same delta objects with the same weights, in the same order."""
    return old is not None and len(old) == len(new) and all(
        a_old == a_new and d_old is d_new for (a_old, d_old), (a_new, d_new) in zip(old, new)
    )
