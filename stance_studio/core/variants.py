"""Variants: base, one stance, or a blend, written as specs such as ``base``,
``curious`` or ``curious=0.7,confident=-0.3``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from stance_studio.core.errors import VariantSpecError

_TERM = re.compile(r"^\s*([^=,]+?)\s*(?:=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*)?$")


@dataclass(frozen=True)
class Variant:
    """A labelled set of blend weights; no weights means the base model."""

    label: str
    weights: tuple[tuple[str, float], ...] = ()

    @property
    def is_base(self) -> bool:
        return not self.weights

    @property
    def spec(self) -> str:
        if self.is_base:
            return "base"
        return ",".join(f"{name}={alpha:g}" for name, alpha in self.weights)


BASE = Variant("base")
RESERVED_NAMES = frozenset({"base"})  # words the spec syntax gives a meaning; no checkpoint takes them
MAX_WEIGHT = 100.0  # |α| beyond this only breaks the model (and overflows float16 weights)


def check_weight(alpha, name: str = "a stance") -> float:
    """``alpha`` as a float if it is a finite blend weight with |α| ≤ MAX_WEIGHT."""
    try:
        value = float(alpha)
    except (TypeError, ValueError, OverflowError) as exc:
        raise VariantSpecError(f"The weight of {name} must be a number, not {alpha!r}.") from exc
    if not math.isfinite(value) or abs(value) > MAX_WEIGHT:
        raise VariantSpecError(
            f"The weight of {name} is {alpha!r}; blend weights must be finite numbers from "
            f"{-MAX_WEIGHT:g} to {MAX_WEIGHT:g}."
        )
    return value


def parse_variant(spec: str) -> Variant:
    """Parse ``base``, ``NAME`` (weight 1) or ``a=0.7,b=-0.3``."""
    text = spec.strip()
    if not text:
        raise VariantSpecError("Empty variant spec; use 'base', a stance name, or 'a=0.7,b=-0.3'.")
    if text == "base":
        return BASE
    weights: dict[str, float] = {}
    for term in text.split(","):
        match = _TERM.match(term)
        if not match:
            raise VariantSpecError(
                f"Cannot read {term.strip()!r} in variant spec {spec!r}; write NAME or NAME=WEIGHT, "
                "e.g. 'curious=0.7,confident=-0.3'."
            )
        name, alpha = match.group(1).strip(), match.group(2)
        if not name:
            raise VariantSpecError(f"Variant spec {spec!r} has an empty term; write NAME or NAME=WEIGHT between commas.")
        if name in weights:
            raise VariantSpecError(f"Stance {name!r} appears twice in variant spec {spec!r}.")
        if name.lower() in RESERVED_NAMES:
            raise VariantSpecError(f"{name!r} is the unchanged model and takes no weight; write 'base' alone.")
        weights[name] = check_weight(alpha, repr(name)) if alpha is not None else 1.0
    return Variant(label=text, weights=tuple(weights.items()))


def resolve_variant(variant: Variant, library) -> list:
    """The ``(StanceCheckpoint, alpha)`` pairs a variant names, loaded from ``library``."""
    return [(library.load(name), check_weight(alpha, repr(name))) for name, alpha in variant.weights]


# What a side-by-side column shows, as stored in settings: the base, the blend the
# sliders show, one stance at weight 1, or a saved blend.
COLUMN_BASE = "base"
COLUMN_BLEND = "@blend"
COLUMN_STANCE = "stance:"
COLUMN_SAVED = "variant:"


def column_weights(spec: str, blend: dict[str, float], saved: Sequence[Variant],
                   fits: Callable[[str], bool]) -> Optional[tuple[tuple[str, float], ...]]:
    """The blend weights a column spec stands for now: ``blend`` is the sliders'
    blend, ``saved`` the saved blends, ``fits(name)`` whether a stance fits the loaded
    model. None when the spec names something missing or unfit."""
    if spec == COLUMN_BASE:
        return ()
    if spec == COLUMN_BLEND:
        return tuple(sorted(blend.items()))
    if spec.startswith(COLUMN_STANCE):
        name = spec[len(COLUMN_STANCE):]
        return ((name, 1.0),) if fits(name) else None
    if spec.startswith(COLUMN_SAVED):
        label = spec[len(COLUMN_SAVED):]
        variant = next((v for v in saved if v.label == label), None)
        if variant is None or not all(fits(n) for n, _ in variant.weights):
            return None
        return variant.weights
    return None
