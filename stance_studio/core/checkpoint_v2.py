"""Checkpoint format 2's packed deltas in a safetensors file.

A packed delta of parameter ``P`` is stored as tensors ``P:<part>`` (the parts of
its kind, core/packing.py) and described in the metadata field ``packing``, a JSON
object ``{P: description}``. The reader checks every part against its description
(dtype, shape, packed length) from the header alone before reading any data, and
refuses a file whose packed tensors do not match, naming the file and the tensor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from stance_studio.core.deltas import Delta
from stance_studio.core.errors import CheckpointError
from stance_studio.core.packing import PackingError, check_part, expected_parts, unpack

FORMAT_V2 = "stance-studio/2"


def packed_tensors(deltas: Mapping[str, Delta]) -> tuple[dict, dict[str, dict[str, Any]]]:
    """The file tensors and the ``packing`` description of the packed deltas among ``deltas``."""
    tensors, packing = {}, {}
    for name, delta in deltas.items():
        packed = getattr(delta, "packed", None)
        if packed is None:
            continue
        packing[name] = packed.spec
        for part, tensor in packed.tensors.items():
            tensors[f"{name}:{part}"] = tensor.detach().contiguous().cpu()
    return tensors, packing


def decode_packing(path: Path, raw: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The ``packing`` field of a file's metadata ({} when absent)."""
    text = raw.get("packing")
    if text is None:
        return {}
    try:
        packing = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata field 'packing' is not valid JSON ({exc}).") from exc
    if not isinstance(packing, dict) or not all(isinstance(v, dict) for v in packing.values()):
        raise CheckpointError(f"{path}: metadata field 'packing' must map parameter names to descriptions.")
    return packing


def check_packed_layout(path: Path, fh, keys: list[str], packing: Mapping[str, dict]) -> list[str]:
    """Check the packed tensors against ``packing`` from the header; return the other keys."""
    found: dict[str, set[str]] = {name: set() for name in packing}
    rest = []
    for key in keys:
        name, _, part = key.rpartition(":")
        if name not in packing:
            rest.append(key)
            continue
        view = fh.get_slice(key)
        try:
            check_part(packing[name], part, view.get_dtype(), tuple(view.get_shape()))
        except PackingError as exc:
            raise CheckpointError(f"{path}: packed tensor {key!r} is malformed: {exc}.") from exc
        found[name].add(part)
    for name, parts in found.items():
        try:
            missing = sorted(set(expected_parts(packing[name])) - parts)
        except PackingError as exc:
            raise CheckpointError(f"{path}: the packing description of {name} is malformed: {exc}.") from exc
        if missing:
            raise CheckpointError(
                f"{path}: packed delta {name} lacks tensors {', '.join(f'{name}:{p}' for p in missing)}; "
                "the file is incomplete or was not written by Stance Studio."
            )
    return rest


_ITEM_BYTES = {"U8": 1, "I8": 1, "F16": 2, "BF16": 2, "F32": 4, "I32": 4, "F64": 8, "I64": 8}


def bits_per_weight_of(fh, keys: list[str], packing: Mapping[str, dict]) -> float:
    """Stored bits per weight of the parameters a file's tensors touch, from its header."""
    stored, shapes = 0, {}
    for key in keys:
        view = fh.get_slice(key)
        shape = list(view.get_shape())
        stored += math.prod(shape) * _ITEM_BYTES.get(view.get_dtype(), 4)
        name, _, part = key.rpartition(":")
        shapes.setdefault(name, {})[part] = shape
    weights = 0
    for name, parts in shapes.items():
        if name in packing:
            weights += math.prod(packing[name]["shape"])
        elif "delta" in parts:
            weights += math.prod(parts["delta"])
        elif "A" in parts and "B" in parts:
            weights += parts["B"][0] * parts["A"][-1]
    return 8 * stored / weights if weights else 0.0


def read_packed(path: Path, fh, packing: Mapping[str, dict]) -> dict[str, Delta]:
    """Decode every packed delta of an open file into the ordinary Delta types."""
    out: dict[str, Delta] = {}
    for name, spec in packing.items():
        tensors = {part: fh.get_tensor(f"{name}:{part}") for part in expected_parts(spec)}
        try:
            out[name] = unpack(spec, tensors)
        except PackingError as exc:
            raise CheckpointError(f"{path}: packed delta {name} is malformed: {exc}.") from exc
    return out
