"""Applying activation-steering stances: forward hooks on decoder layers.

A steering checkpoint holds one vector v_N per decoder layer N it steers. While a
:class:`Steering` is active, layer N's output hidden states become h + Σ α v_N over
every position (prompt and generated tokens alike, as llama.cpp's control vectors
do). The weights α are global (one per stance) or per batch row, so side-by-side
columns of one batch can each run their own mix. The base weights are never
touched: removing the hooks gives the base model back exactly.
"""

from __future__ import annotations

from typing import Sequence

import torch

from stance_studio.core.checkpoints import ACTIVATION, StanceCheckpoint

Blend = Sequence[tuple[object, float]]


def is_steering(src: object) -> bool:
    """Whether ``src`` is an activation-steering checkpoint."""
    return isinstance(src, StanceCheckpoint) and src.kind == ACTIVATION


def decoder_layers_path(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The name and module of the model's stack of decoder layers (``model.layers``,
    ``transformer.h``, …): the first ModuleList as long as the configured layer count."""
    config = getattr(model, "config", None)
    count = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0) or 0)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count and count:
            return name, module
    raise ValueError(f"{type(model).__name__} has no list of {count} decoder layers to steer.")


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of decoder layers."""
    return decoder_layers_path(model)[1]


def applied_vectors(ckpt: StanceCheckpoint) -> dict[int, torch.Tensor]:
    """The vectors a steering stance adds at weight 1 (see StanceCheckpoint.applied_vectors)."""
    return ckpt.applied_vectors()


def at_layer(ckpt: StanceCheckpoint, layer: int, scale: float = 1.0) -> StanceCheckpoint:
    """A view of a steering stance that adds its layer-``layer`` vector (× ``scale``) there alone."""
    import dataclasses

    return dataclasses.replace(ckpt, steering={**ckpt.steering, "apply_layers": [layer], "scale": scale})


def _row_vectors(blends: Sequence[Blend], hidden: int) -> dict[int, torch.Tensor]:
    """Per layer, a (rows × hidden) matrix: row i holds Σ α v_N of blend i."""
    out: dict[int, torch.Tensor] = {}
    for row, blend in enumerate(blends):
        for src, alpha in blend:
            if not is_steering(src) or not alpha:
                continue
            for layer, vector in applied_vectors(src).items():
                table = out.setdefault(layer, torch.zeros(len(blends), hidden))
                table[row] += float(alpha) * vector.float()
    return out


class Steering:
    """Context manager (or ``attach``/``detach``): steering hooks for one blend per
    batch row, or for one blend on every row when ``blends`` has a single entry."""

    def __init__(self, base, blends: Sequence[Blend]) -> None:
        self.base = base
        self.blends = [list(b) for b in blends]
        self._handles: list = []

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def attach(self) -> "Steering":
        self.detach()
        layers = decoder_layers(self.base.model)
        hidden = int(self.base.describe().get("hidden_size") or 0)
        for layer, table in sorted(_row_vectors(self.blends, hidden).items()):
            if torch.count_nonzero(table):
                self._handles.append(layers[layer].register_forward_hook(_adder(table)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "Steering":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()


def _adder(table: torch.Tensor):
    """A forward hook adding row i of ``table`` to every position of batch row i
    (a single-row table is added to every row)."""
    cache: dict[tuple, torch.Tensor] = {}

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        key = (hidden.dtype, hidden.device)
        if key not in cache:
            cache[key] = table.to(dtype=hidden.dtype, device=hidden.device)
        rows = cache[key]
        batch = hidden.shape[0]
        if rows.shape[0] == 1:
            add = rows
        elif rows.shape[0] >= batch:
            add = rows[:batch]
        else:
            raise ValueError(f"steering holds {rows.shape[0]} rows, the batch has {batch}")
        hidden = hidden + add[:, None, :]
        if isinstance(output, tuple):
            return (hidden, *output[1:])
        return hidden

    return hook


def steering_terms(blend: Blend) -> list[tuple[StanceCheckpoint, float]]:
    """The activation-steering part of a blend (alpha ≠ 0)."""
    return [(src, float(a)) for src, a in blend if is_steering(src) and float(a) != 0.0]
