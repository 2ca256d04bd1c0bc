"""Stance checkpoints: one safetensors file holding the kept delta and JSON
metadata. See DESIGN.md, "Checkpoint format".

Tensors: ``P:delta`` (dense) or ``P:A`` / ``P:B`` (low rank, delta = B @ A) per
touched parameter ``P``. ``__metadata__`` maps ``format``, ``name``, ``created``,
``stance``, ``base``, ``training``, ``extraction`` and ``metrics`` to JSON strings.
Files are written atomically and never unpickled.

Format version 2 adds the checkpoint kind ``activation``: per-layer steering
vectors stored as ``layers.N:direction`` (N the decoder layer index), described by
the ``steering`` metadata field. Version-1 files keep loading unchanged.
A checkpoint with packed (quantized or sparse) deltas is written as format 2
(core/checkpoint_v2.py); one without is still written as format 1.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from stance_studio.core.checkpoint_v2 import (
    FORMAT_V2,
    bits_per_weight_of,
    check_packed_layout,
    decode_packing,
    packed_tensors,
    read_packed,
)
from stance_studio.core.checkpoint_schema import check_metadata, check_tensor
from stance_studio.core.deltas import Delta, DenseDelta, LowRankDelta, bits_per_weight, delta_bytes, is_finite
from stance_studio.core.errors import CheckpointError
from stance_studio.core.modules import is_linear, is_transposed_linear
from stance_studio.core.storage import TEMP_PREFIX, TEMP_SUFFIX, as_os_error, not_a_file, storage_error

FORMAT = "stance-studio/1"
FORMAT_2 = FORMAT_V2
FORMATS = (FORMAT, FORMAT_V2)
WEIGHTS, ACTIVATION = "weights", "activation"
SUFFIX = ".stance.safetensors"
_JSON_KEYS = ("stance", "base", "training", "extraction", "metrics", "steering")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


@dataclass
class StanceCheckpoint:
    """A stance: its kept delta plus what it was made from and how it measured."""

    name: str
    deltas: dict[str, Delta]
    stance: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    extraction: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None
    created: str = ""
    steering: dict[str, Any] = field(default_factory=dict)
    directions: dict[int, torch.Tensor] = field(default_factory=dict)
    kind: str = WEIGHTS

    @property
    def nbytes(self) -> int:
        return delta_bytes(self.deltas) + sum(v.numel() * v.element_size() for v in self.directions.values())

    def applied_vectors(self) -> dict[int, torch.Tensor]:
        """A steering stance's vectors at weight 1, by layer: its stored directions at
        the layers chosen at build time, times the build's scale (every stored layer,
        scale 1, when the file names none). Empty for a weight stance."""
        info = self.steering or {}
        layers = info.get("apply_layers", list(self.directions))
        scale = float(info.get("scale", 1.0))
        return {int(n): self.directions[int(n)] * scale for n in layers if int(n) in self.directions}

    @property
    def activations(self) -> dict[str, torch.Tensor]:
        """Module name → vector added to that module's output at weight 1 (the decoder
        layers' path is recorded at build time; ``model.layers`` if the file has none)."""
        prefix = (self.steering or {}).get("module", "model.layers")
        return {f"{prefix}.{n}": v for n, v in self.applied_vectors().items()}

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight of the parameters this checkpoint touches."""
        return bits_per_weight(self.deltas)

    @property
    def method(self) -> str:
        return str(self.training.get("method", "unknown"))

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def make_checkpoint(name, deltas, base, *, stance=None, training=None, extraction=None, metrics=None) -> StanceCheckpoint:
    """A checkpoint for ``deltas`` made on ``base`` (a BaseModel), fingerprinted."""
    info = dict(base.describe())
    info["fingerprint"] = base.fingerprint(list(deltas))
    matrices = [n for n, d in deltas.items() if len(d.shape) == 2]
    info["not_linear"] = not_linear(base.model, matrices)
    info["transposed"] = transposed(base.model, matrices)
    extraction = dict(extraction or {})
    extraction.setdefault("bytes", delta_bytes(deltas))
    return StanceCheckpoint(
        name=name,
        deltas=dict(deltas),
        stance={"name": name, **(stance or {})},
        base=info,
        training=dict(training or {}),
        extraction=extraction,
        metrics=dict(metrics or {}),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def not_linear(model, names) -> dict[str, str]:
    """Which of ``names`` are not weights of linear maps (``nn.Linear``, GPT-2's ``Conv1D``),
    as ``Module.attr``. PEFT LoRA holds only those; checkpoints record their matrices that are not (1-D
    deltas show by shape), so an export can check without the model."""
    return {
        name: f"{type(module).__name__}.{attr}"
        for name, module, attr in _owners(model, names)
        if not (is_linear(module) and attr == "weight")
    }


def transposed(model, names) -> list[str]:
    """Which of ``names`` are weights stored (in × out), as GPT-2's ``Conv1D`` keeps them:
    a PEFT export of them needs ``fan_in_fan_out``."""
    return sorted(name for name, module, attr in _owners(model, names)
                  if attr == "weight" and is_transposed_linear(module))


def _owners(model, names):
    """(name, module, attribute) for each parameter name whose module ``model`` has."""
    for name in names:
        owner, _, attr = name.rpartition(".")
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            continue
        yield name, module, attr


def save_checkpoint(ckpt: StanceCheckpoint, path: str | os.PathLike) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temp file + rename).

    Refuses checkpoints holding NaN or inf, so none ever reaches the library.
    """
    path = Path(path)
    if not ckpt.deltas and not ckpt.directions:
        raise CheckpointError(f"Checkpoint {ckpt.name!r} holds no delta; nothing to save.")
    tensors, packing = packed_tensors(ckpt.deltas)
    for layer, vector in ckpt.directions.items():
        if not bool(torch.isfinite(vector).all()):
            raise CheckpointError(
                f"Checkpoint {ckpt.name!r} has non-finite values in its layer {layer} direction; it was not written."
            )
        tensors[f"layers.{int(layer)}:direction"] = vector.detach().float().contiguous().cpu()
    for name, delta in ckpt.deltas.items():
        if not is_finite(delta):
            raise CheckpointError(
                f"Checkpoint {ckpt.name!r} has non-finite values in {name}; it was not written."
            )
        if name in packing:
            continue
        if isinstance(delta, LowRankDelta):
            tensors[f"{name}:A"] = delta.A.detach().contiguous().cpu()
            tensors[f"{name}:B"] = delta.B.detach().contiguous().cpu()
        else:
            tensors[f"{name}:delta"] = delta.tensor.detach().contiguous().cpu()
    v2 = packing or ckpt.kind != WEIGHTS
    metadata = {"format": FORMAT_V2 if v2 else FORMAT, "name": ckpt.name, "created": ckpt.created}
    if packing:
        metadata["packing"] = json.dumps(packing, sort_keys=True)
    if ckpt.kind != WEIGHTS:
        metadata["kind"] = ckpt.kind
    for key in _JSON_KEYS:
        metadata[key] = json.dumps(getattr(ckpt, key), sort_keys=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise storage_error(exc, f"save checkpoint {ckpt.name!r} in", path.parent) from exc
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a library file is an ordinary file
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        os_error = as_os_error(exc)
        if os_error is not None:
            raise storage_error(os_error, f"save checkpoint {ckpt.name!r} to", path) from exc
        raise
    ckpt.path = path
    return path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# read once, at import: changing the umask is process-wide, so never while workers write files
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def _refuse_pickle(path: Path) -> None:
    """Refuse pickle/zip files by name or content without unpickling anything. A
    safetensors file starts with its 8-byte header length, which may begin with
    0x80 or "PK", so a real safetensors header is recognised first."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    size = 8 + int.from_bytes(head[:8], "little") if len(head) == 9 else None
    is_safetensors = size is not None and size <= path.stat().st_size and head[8:9] == b"{"
    is_zip = head[:4] == b"PK\x03\x04"
    is_pickle = head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5
    if path.suffix.lower() in _PICKLE_SUFFIXES or (not is_safetensors and (is_zip or is_pickle)):
        raise CheckpointError(
            f"{path} looks like a pickle/torch file; Stance Studio never unpickles files. "
            "Use a .stance.safetensors checkpoint."
        )


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint (JSON decoded) without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} {not_a_file(path)}.")
    try:
        _refuse_pickle(path)
        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
            header = _decode_metadata(path, fh.metadata() or {}, keys)
            if header["kind"] == ACTIVATION:
                _check_directions(path, fh, keys)
            else:
                _check_layout(path, fh, check_packed_layout(path, fh, keys, header["packing"]), bool(header["packing"]))
                header["bits_per_weight"] = bits_per_weight_of(fh, keys, header["packing"])
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it may be truncated or corrupt.") from exc
    return header


def _decode_metadata(path: Path, raw: dict[str, str], keys: list[str]) -> dict[str, Any]:
    if raw.get("format") not in FORMATS:
        raise CheckpointError(
            f"{path} is a safetensors file but not a Stance Studio checkpoint "
            f"(format {raw.get('format')!r}, expected one of {', '.join(FORMATS)})."
        )
    kind = raw.get("kind", WEIGHTS)
    if kind not in (WEIGHTS, ACTIVATION) or (kind == ACTIVATION and raw["format"] == FORMAT):
        raise CheckpointError(f"{path}: checkpoint kind {kind!r} is not known to format {raw['format']}.")
    out: dict[str, Any] = {"format": raw["format"], "kind": kind, "name": raw.get("name") or _stem(path),
                           "created": raw.get("created", "")}
    out["packing"] = decode_packing(path, raw) if raw["format"] == FORMAT_V2 and kind == WEIGHTS else {}
    for key in _JSON_KEYS:
        try:
            out[key] = json.loads(raw.get(key, "{}"))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: metadata field {key!r} is not valid JSON ({exc}).") from exc
        except RecursionError as exc:
            raise CheckpointError(f"{path}: metadata field {key!r} is nested too deeply to read.") from exc
        if not isinstance(out[key], dict):
            raise CheckpointError(
                f"{path}: metadata field {key!r} must be a JSON object, not {raw[key][:40]}."
            )
    out["tensor_names"] = keys
    check_metadata(path, out)
    return out


def _check_layout(path: Path, fh, keys: list[str], packed: bool = False) -> None:
    """Tensor names and factor shapes, from the header only (no tensor data read)."""
    parts: dict[str, dict[str, list[int]]] = {}
    for key in keys:
        name, _, kind = key.rpartition(":")
        if not name or kind not in ("delta", "A", "B"):
            raise CheckpointError(f"{path}: tensor {key!r} is not named 'P:delta', 'P:A' or 'P:B'.")
        tensor = fh.get_slice(key)
        parts.setdefault(name, {})[kind] = list(tensor.get_shape())
        check_tensor(path, key, kind, tensor.get_dtype(), parts[name][kind])
    if not parts and not packed:
        raise CheckpointError(f"{path} holds no delta tensors.")
    for name, found in parts.items():
        if set(found) not in ({"delta"}, {"A", "B"}):
            raise CheckpointError(
                f"{path}: {name} has tensors {sorted(found)}; it needs '{name}:delta' alone "
                f"or the pair '{name}:A' and '{name}:B'."
            )
        A, B = found.get("A"), found.get("B")
        if A is not None and (len(A) != 2 or len(B) != 2 or A[0] != B[1]):
            raise CheckpointError(
                f"{path}: {name}: low-rank factors do not fit: A is {tuple(A)}, B is {tuple(B)} "
                "(need A r×in and B out×r)."
            )


def _direction_layer(key: str) -> Optional[int]:
    """N for a tensor named ``layers.N:direction``, else None."""
    name, _, kind = key.rpartition(":")
    head, _, index = name.partition(".")
    return int(index) if kind == "direction" and head == "layers" and index.isdigit() else None


def _check_directions(path: Path, fh, keys: list[str]) -> None:
    """An activation checkpoint holds one 1-D vector per layer, all of one width."""
    widths = set()
    for key in keys:
        if _direction_layer(key) is None:
            raise CheckpointError(f"{path}: tensor {key!r} is not named 'layers.N:direction'.")
        shape = list(fh.get_slice(key).get_shape())
        if len(shape) != 1:
            raise CheckpointError(f"{path}: {key} has shape {tuple(shape)}; a steering direction is one vector.")
        widths.add(shape[0])
    if not keys:
        raise CheckpointError(f"{path} holds no steering directions.")
    if len(widths) > 1:
        raise CheckpointError(f"{path}: steering directions have different widths {sorted(widths)}.")


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else path.stem


def load_checkpoint(path: str | os.PathLike) -> StanceCheckpoint:
    """Read and validate a checkpoint file."""
    path = Path(path)
    header = read_header(path)
    deltas: dict[str, Delta] = {}
    directions: dict[int, torch.Tensor] = {}
    packing = header["packing"]
    keys = set(header["tensor_names"])
    activation = header["kind"] == ACTIVATION
    try:
        with safe_open(str(path), framework="pt") as fh:
            for key in sorted(keys) if activation else ():
                directions[_direction_layer(key)] = fh.get_tensor(key).float()
            deltas.update(read_packed(path, fh, packing))
            for name in sorted({k.rsplit(":", 1)[0] for k in keys} - set(packing)) if not activation else ():
                if f"{name}:delta" in keys:
                    deltas[name] = DenseDelta(fh.get_tensor(f"{name}:delta"))
                else:
                    deltas[name] = LowRankDelta(A=fh.get_tensor(f"{name}:A"), B=fh.get_tensor(f"{name}:B"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} could not be read ({exc}); it may be truncated or corrupt.") from exc
    for name, delta in deltas.items():
        if not is_finite(delta):
            raise CheckpointError(f"{path}: tensor {name} holds NaN or inf values; refusing to use it.")
    for layer, vector in directions.items():
        if not bool(torch.isfinite(vector).all()):
            raise CheckpointError(f"{path}: the layer {layer} direction holds NaN or inf values; refusing to use it.")
    return StanceCheckpoint(
        name=header["name"],
        deltas=dict(sorted(deltas.items())),
        directions=dict(sorted(directions.items())),
        kind=header["kind"],
        path=path,
        created=header["created"],
        **{key: header[key] for key in _JSON_KEYS},
    )
