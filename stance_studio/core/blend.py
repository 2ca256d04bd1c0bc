"""Blends as the GUI, the CLI and the jobs speak of them: ``[(stance, α), …]``.

A :class:`Blender` is a thin view of the model's one
:class:`~stance_studio.core.runtime.StanceRuntime`: applying a blend sets the
stances' runtime weights (W = W0 + Σ α_i Δ_i is what the model computes; W0 is
never rewritten), so any sequence of blends followed by :meth:`Blender.reset`
gives the base back bit for bit. Every Blender made on the same model shares that
runtime, so a job handed a fresh Blender still sees, and puts back, the blend the
user is looking at.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Sequence, Union

import torch

from stance_studio.core.checkpoints import StanceCheckpoint
from stance_studio.core.compatibility import check_compatible
from stance_studio.core.deltas import Delta
from stance_studio.core.errors import ShapeMismatchError
from stance_studio.core.runtime import StanceRuntime, runtime_for
from stance_studio.core.variants import check_weight

Source = Union[StanceCheckpoint, Mapping[str, Delta]]
BlendSpec = Sequence[tuple[Source, float]]


class Blender:
    """Applies blends to one :class:`~stance_studio.core.models.BaseModel`."""

    def __init__(self, base) -> None:
        self.base = base
        self.runtime: StanceRuntime = runtime_for(base.model)
        self._params = dict(base.model.named_parameters())
        self._checked: dict[tuple[int, bool], Source] = {}

    @property
    def active(self) -> list[tuple[Source, float]]:
        """The (source, alpha) pairs currently applied (alpha ≠ 0 only)."""
        return self.runtime.active

    @property
    def is_base(self) -> bool:
        return self.runtime.is_base

    def original(self, name: str) -> torch.Tensor:
        """The exact base tensor W0 of parameter ``name``."""
        return self.runtime.original(name)

    def check(self, source: Source, allow_mismatch: bool = False) -> None:
        """Raise if ``source`` cannot be applied to this base (shapes, fingerprint).
        A source that passed once is not checked again (sliders move often)."""
        key = (id(source), bool(allow_mismatch))
        if self._checked.get(key) is source:
            return
        if isinstance(source, StanceCheckpoint):
            check_compatible(source, self.base, allow_mismatch=allow_mismatch)
        else:
            for name, delta in source.items():
                param = self._params.get(name)
                if param is None:
                    raise ShapeMismatchError(f"The delta changes {name}, which {self.base.model_id} does not have.")
                if tuple(param.shape) != delta.shape:
                    raise ShapeMismatchError(
                        f"The delta for {name} has shape {delta.shape}; {self.base.model_id} has {tuple(param.shape)}."
                    )
        self._checked[key] = source

    def apply(self, blend: BlendSpec | Iterable[tuple[Source, float]], allow_mismatch: bool = False) -> None:
        """Run the model as W0 + Σ α Δ for this blend (replacing any previous one)."""
        blend = [(src, check_weight(alpha)) for src, alpha in blend]
        for src, _ in blend:
            self.check(src, allow_mismatch=allow_mismatch)
        self.runtime.set_blend(blend)  # a stance at 0 stays loaded: its slider may move again
        keep = {id(src) for src, _ in blend}
        self._checked = {k: v for k, v in self._checked.items() if k[0] in keep}

    @contextmanager
    def restoring(self) -> Iterator[None]:
        """Run a block that may change the blend; afterwards the blend that was in
        force before it is put back (also when the block raises)."""
        previous = self.active
        try:
            yield
        finally:
            self.runtime.set_blend(previous)

    def reset(self) -> None:
        """Give the base model back, bit for bit."""
        self.runtime.reset()
