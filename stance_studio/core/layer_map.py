"""Transfer across depths (``--map-layers depth``): apply a stance trained on a model
with L layers to a model of the same family with L′ layers.

Each layer j of the target takes the delta of the source layer i whose depth
fraction (i + ½)/L is nearest to (j + ½)/L′, module by module (layers are repeated
when L′ > L and skipped when L′ < L); parameters outside the layers (embeddings, final
norm) keep their names. A module whose shape differs on the target is refused and
named; the rest still apply.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from stance_studio.core.analysis import layer_index
from stance_studio.core.checkpoints import ACTIVATION, StanceCheckpoint, make_checkpoint
from stance_studio.core.errors import CheckpointError

MODES = ("depth",)
_LAYER = re.compile(r"((?:^|\.)(?:layers|layer|h|blocks|block)\.)(\d+)(\.)")


def source_layer(target: int, target_layers: int, source_layers: int) -> int:
    """The source layer whose depth fraction is nearest to that of ``target`` (ties go deeper)."""
    exact = (target + 0.5) * source_layers / target_layers - 0.5
    return min(source_layers - 1, max(0, math.floor(exact + 0.5)))


def _with_layer(name: str, layer: int) -> str:
    return _LAYER.sub(lambda m: f"{m.group(1)}{layer}{m.group(3)}", name, count=1)


@dataclass
class LayerMapping:
    """A checkpoint mapped onto another depth, and what could not be mapped."""

    checkpoint: StanceCheckpoint
    layers: dict[int, int] = field(default_factory=dict)  # target layer → source layer
    refused: dict[str, str] = field(default_factory=dict)  # target parameter → why


def map_by_depth(ckpt: StanceCheckpoint, base) -> LayerMapping:
    """``ckpt`` re-indexed onto ``base``'s layers by depth fraction (see the module doc)."""
    source_layers = int(ckpt.base.get("num_layers") or 0)
    target_layers = int(base.num_layers or 0)
    if source_layers < 1 or target_layers < 1:
        raise CheckpointError(f"Checkpoint {ckpt.name!r} or {base.model_id} records no layer count; "
                              "--map-layers depth needs both.")
    if ckpt.kind == ACTIVATION:  # a steering stance: per-layer vectors, not weight deltas
        if source_layers == target_layers:
            return LayerMapping(ckpt, {j: j for j in range(target_layers)}, {})
        raise CheckpointError(
            f"{ckpt.name!r} is an activation-steering stance made on {source_layers} layers; --map-layers depth "
            f"maps weight deltas only. Build its vectors on {base.model_id} instead (train DATASET --method steer).")
    arch = ckpt.base.get("architecture")
    if arch and arch != base.architecture:
        raise CheckpointError(
            f"Checkpoint {ckpt.name!r} was made on a {arch} model; {base.model_id} is a {base.architecture}. "
            "--map-layers depth maps between models of one family only."
        )
    params = base.parameters
    mapping = {j: source_layer(j, target_layers, source_layers) for j in range(target_layers)}
    deltas, refused = {}, {}
    for name, param in params.items():
        layer = layer_index(name)
        source = name if layer is None else _with_layer(name, mapping[layer])
        delta = ckpt.deltas.get(source)
        if delta is None:
            continue
        if tuple(delta.shape) != tuple(param.shape):
            refused[name] = f"{source} is {tuple(delta.shape)}, {name} is {tuple(param.shape)}"
            continue
        deltas[name] = delta
    outside = [n for n in ckpt.deltas if layer_index(n) is None and n not in params]
    for name in outside:
        refused[name] = f"{base.model_id} has no {name}"
    if not deltas:
        first = next(iter(refused.items()), None)
        raise CheckpointError(
            f"No module of checkpoint {ckpt.name!r} maps onto {base.model_id}"
            + (f": {len(refused)} refused, e.g. {first[1]}." if first else " (it touches none of its parameters).")
        )
    mapped = make_checkpoint(ckpt.name, deltas, base, stance=dict(ckpt.stance), training=dict(ckpt.training),
                             extraction=dict(ckpt.extraction))
    mapped.base["mapped_from"] = {"model": ckpt.base.get("model"), "num_layers": source_layers, "mode": "depth",
                                  "layers": {str(j): i for j, i in mapping.items()}, "refused": sorted(refused)}
    mapped.path = ckpt.path
    return LayerMapping(mapped, mapping, refused)
