"""Steering stances as the model runs them.

A steering checkpoint holds one vector v_N per decoder layer N. Applied at weight α,
layer N's output hidden states become h + α v_N at every position (prompt and
generated tokens alike, as llama.cpp's control vectors do). The stance runtime
(:mod:`~stance_studio.core.runtime`) adds them through its activation terms: a
checkpoint's ``activations`` name the decoder layers and the vectors, so steering
stances share the blend sliders, the per-row side-by-side batch and the metrics
with weight stances. This module finds the decoder layers and picks the vectors.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from stance_studio.core.checkpoints import ACTIVATION, StanceCheckpoint
from stance_studio.core.errors import StanceStudioError

Blend = Sequence[tuple[object, float]]
MAX_STRENGTH = 1e6  # beyond this the hidden states overflow long before anything is measured


def check_strength(strength: float) -> float:
    """``strength`` as a float when it is a finite number below MAX_STRENGTH in size,
    else an error naming it (nan or inf would quietly turn every answer into noise)."""
    value = float(strength)
    if not (math.isfinite(value) and abs(value) < MAX_STRENGTH):
        raise StanceStudioError(
            f"The steering strength must be a finite number between -{MAX_STRENGTH:g} and {MAX_STRENGTH:g} "
            f"(got {strength}).")
    return value


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
