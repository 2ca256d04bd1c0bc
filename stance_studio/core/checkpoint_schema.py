"""What a checkpoint's header may hold, checked before anything uses it: tensor dtypes
and shapes (from the header alone, no data read) and the types of the metadata
fields the app reads. A file that breaks a rule is listed as invalid with the reason
and never reaches the blend, the plots or ``generate``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from stance_studio.core.errors import CheckpointError

# safetensors dtype names of the float tensors a delta may be stored in
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


def check_tensor(path: Path, key: str, kind: str, dtype: str, shape: list[int]) -> None:
    """Refuse a delta tensor of a dtype the app cannot add to float weights, or of a
    shape that holds nothing (zero-rank factors, empty or scalar deltas)."""
    if kind in ("delta", "A", "B") and dtype not in FLOAT_DTYPES:
        raise CheckpointError(
            f"{path}: tensor {key!r} is stored as {dtype}; deltas must be float16, bfloat16, float32 or float64."
        )
    if not shape:
        raise CheckpointError(f"{path}: tensor {key!r} is a scalar; a delta has the shape of its parameter.")
    if 0 in shape:
        what = "a zero-rank factor" if kind in ("A", "B") else "an empty tensor"
        raise CheckpointError(f"{path}: tensor {key!r} has shape {tuple(shape)}, {what}; it changes nothing.")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or test(value)


def _list_of(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(test(v) for v in value)


def _string(value: Any) -> bool:
    return isinstance(value, str)


def _object(value: Any) -> bool:
    return isinstance(value, dict)


# (section, key) → (test, what it must be); keys not listed here are free-form
_FIELDS: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("stance", "name"): (_string, "a string"),
    ("stance", "description"): (_string, "a string"),
    ("stance", "dataset_hash"): (_string, "a string"),
    ("base", "model"): (_string, "a string"),
    ("base", "architecture"): (_optional(_string), "a string"),
    ("base", "num_layers"): (_optional(_integer), "an integer"),
    ("base", "hidden_size"): (_optional(_integer), "an integer"),
    ("base", "fingerprint"): (_optional(_string), "a string"),
    ("base", "embedding"): (_optional(_string), "a string"),
    ("base", "not_linear"): (_object, "an object"),
    ("training", "method"): (_string, "a string"),
    ("training", "steps"): (_integer, "an integer"),
    ("training", "loss"): (_list_of(_optional(_number)), "a list of finite numbers or nulls"),
    ("training", "grad_norms"): (_list_of(_optional(_number)), "a list of finite numbers or nulls"),
    ("training", "seconds"): (_number, "a finite number"),
    ("training", "lr"): (_number, "a finite number"),
    ("training", "nonfinite_steps"): (_integer, "an integer"),
    ("training", "skipped_steps"): (lambda v: _integer(v) or _list_of(_integer)(v), "an integer or a list of steps"),
    ("training", "hyperparameters"): (_object, "an object"),
    ("extraction", "policy"): (_string, "a string"),
    ("extraction", "bytes"): (_integer, "an integer"),
    ("extraction", "ranks"): (_object, "an object"),
    ("metrics", "retention"): (_optional(_number), "a finite number or null"),
    ("metrics", "base_model_bytes"): (_integer, "an integer"),
}


def check_metadata(path: Path, header: dict[str, Any]) -> None:
    """Refuse metadata whose known fields have the wrong type (a loss curve that is a
    string, a retention that is text), which would break the views that read them."""
    for (section, key), (test, what) in _FIELDS.items():
        values = header.get(section, {})
        if key in values and not test(values[key]):
            shown = repr(values[key])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise CheckpointError(f"{path}: metadata field {section}.{key} must be {what}, not {shown}.")
