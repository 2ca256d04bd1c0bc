"""Whether a stance checkpoint fits the loaded base model, and why not.

A checkpoint records the base it was made on (architecture, depth, width, an
embedding hash and a fingerprint of the tensors it changes). Listing asks
:func:`compatibility` for a yes/no and a reason a researcher can act on; applying
calls :func:`check_compatible`, which also checks every shape and refuses with the
file, the module and both models named.
"""

from __future__ import annotations

from stance_studio.core.checkpoints import ACTIVATION, StanceCheckpoint
from stance_studio.core.errors import IncompatibleBaseError, ShapeMismatchError


def compatibility(ckpt_or_header, base) -> tuple[bool, str]:
    """Whether a checkpoint (or its header dict) fits ``base``, with the reason if not."""
    if isinstance(ckpt_or_header, StanceCheckpoint):
        info, name, touched = ckpt_or_header.base, ckpt_or_header.name, list(ckpt_or_header.deltas)
    elif ckpt_or_header.get("kind") == ACTIVATION:
        info, name, touched = ckpt_or_header.get("base", {}), ckpt_or_header.get("name", "?"), []
    else:
        info, name = ckpt_or_header.get("base", {}), ckpt_or_header.get("name", "?")
        touched = sorted({k.rsplit(":", 1)[0] for k in ckpt_or_header.get("tensor_names", [])})
    params = base.parameters
    unknown = [n for n in touched if n not in params]
    made_on = info.get("model", "an unknown model")
    if unknown:
        return False, (
            f"Checkpoint {name!r} touches {unknown[0]}, which the loaded model {base.model_id} does not have "
            f"(it was made on {made_on})."
        )
    differs = model_difference(info, base.describe())
    if not differs and info.get("fingerprint") != base.fingerprint(touched):
        differs = "the base tensors it changes differ"
    if differs:
        return False, f"Checkpoint {name!r} was trained on model {made_on}, the loaded model is {base.model_id}: {differs}."
    return True, ""


_IDENTITY = (
    ("architecture", "architectures differ ({0} vs {1})"),
    ("num_layers", "layer counts differ ({0} vs {1})"),
    ("hidden_size", "hidden sizes differ ({0} vs {1})"),
    ("embedding", "their embedding matrices differ, so they are different models"),
)


def model_difference(made_on: dict, loaded: dict) -> str:
    """How the base a checkpoint records differs from the loaded one ('' if it does not).
    Checks only what both record, so older checkpoints still load."""
    for key, text in _IDENTITY:
        theirs, ours = made_on.get(key), loaded.get(key)
        if theirs and ours and theirs != ours:
            return text.format(theirs, ours)
    return ""


def check_compatible(ckpt: StanceCheckpoint, base, allow_mismatch: bool = False) -> None:
    """Raise unless ``ckpt`` can be applied to ``base``.

    Shapes are always checked; ``allow_mismatch`` overrides only the fingerprint
    (for transfer experiments between related models).
    """
    params = base.parameters
    where = f" ({ckpt.path})" if ckpt.path else ""
    _check_directions_fit(ckpt, base, where)
    for name, delta in ckpt.deltas.items():
        if name not in params:
            raise ShapeMismatchError(
                f"Checkpoint {ckpt.name!r}{where} changes {name}, which the loaded model "
                f"{base.model_id} does not have (checkpoint made on {ckpt.base.get('model', '?')})."
            )
        if tuple(params[name].shape) != delta.shape:
            raise ShapeMismatchError(
                f"Checkpoint {ckpt.name!r}{where}: {name} has shape {delta.shape} in the checkpoint "
                f"but {tuple(params[name].shape)} in the loaded model {base.model_id}."
            )
    if not allow_mismatch:
        ok, reason = compatibility(ckpt, base)
        if not ok:
            raise IncompatibleBaseError(reason + " Use the transfer override to apply it anyway.")


def _check_directions_fit(ckpt: StanceCheckpoint, base, where: str) -> None:
    """Steering directions need a layer that exists and the model's hidden width."""
    width = base.describe().get("hidden_size")
    for layer, vector in ckpt.directions.items():
        if not 0 <= layer < base.num_layers:
            raise ShapeMismatchError(
                f"Checkpoint {ckpt.name!r}{where} steers layer {layer}; the loaded model {base.model_id} "
                f"has layers 0-{base.num_layers - 1}."
            )
        if width and vector.numel() != width:
            raise ShapeMismatchError(
                f"Checkpoint {ckpt.name!r}{where}: its layer {layer} direction has {vector.numel()} values, "
                f"the loaded model {base.model_id} has hidden size {width}."
            )
