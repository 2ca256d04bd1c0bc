"""Import a PEFT LoRA adapter folder (``adapter_config.json`` +
``adapter_model.safetensors``) made by another tool as a factorised stance.

Each pair becomes a low-rank delta B @ A with PEFT's scaling folded into B
(alpha / r, or alpha / √r with rsLoRA; per-module ``rank_pattern`` and
``alpha_pattern`` honoured), so the stance blends like any other. The adapter is
checked against the loaded base before anything is written: every target must be
the weight of a Linear module the base has, with matching shapes. Variants the
app cannot reproduce exactly (DoRA, trained biases, extra saved modules, embedding
adapters, Conv1D ``fan_in_fan_out`` layouts, pickle weights) are refused by name.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from stance_studio.core.checkpoints import StanceCheckpoint, make_checkpoint
from stance_studio.core.deltas import LowRankDelta
from stance_studio.core.errors import AdapterImportError

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")


def _read_config(folder: Path) -> dict:
    path = folder / "adapter_config.json"
    if not path.is_file():
        raise AdapterImportError(f"{folder} holds no adapter_config.json; it is not a PEFT adapter folder.")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterImportError(f"{path} is not readable JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise AdapterImportError(f"{path} must hold a JSON object.")
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterImportError(f"{folder} is a {config.get('peft_type')} adapter; only LoRA adapters import.")
    refusals = (
        (config.get("use_dora"), "uses DoRA (a per-column magnitude the app does not model)"),
        (config.get("bias", "none") != "none", f"trains biases (bias={config.get('bias')!r})"),
        (config.get("modules_to_save"), f"saves whole modules ({config.get('modules_to_save')})"),
        (config.get("fan_in_fan_out"), "uses the fan_in_fan_out (Conv1D) layout"),
        (config.get("layer_replication"), "repeats decoder layers (layer_replication), a model the base is not"),
        (config.get("lora_bias"), "adds a bias to lora_B (lora_bias)"),
    )
    for refused, why in refusals:
        if refused:
            raise AdapterImportError(f"{folder}: the adapter {why}; only plain LoRA on Linear weights imports.")
    _check_scaling_fields(config, path)
    return config


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_scaling_fields(config: dict, path: Path) -> None:
    """The fields the scale is computed from, checked for type, so a hand-edited
    config ("r": "abc", "rank_pattern": [..]) is named instead of failing inside."""
    def bad(field: str, value, want: str) -> AdapterImportError:
        return AdapterImportError(f"{path}: {field} is {json.dumps(value)[:80]}; it must be {want}.")

    rank = config.get("r", 8)
    if not (_is_number(rank) and rank == int(rank)):
        raise bad("r", rank, "a whole number (the LoRA rank)")
    if not _is_number(config.get("lora_alpha", 8)):
        raise bad("lora_alpha", config.get("lora_alpha"), "a finite number")
    if not isinstance(config.get("use_rslora", False) or False, bool):
        raise bad("use_rslora", config.get("use_rslora"), "true or false")
    for field, want in (("rank_pattern", "a whole number"), ("alpha_pattern", "a finite number")):
        patterns = config.get(field) or {}
        if not isinstance(patterns, dict):
            raise bad(field, patterns, "an object mapping module names to values")
        for key, value in patterns.items():
            if not (_is_number(value) and (field == "alpha_pattern" or value == int(value))):
                raise bad(f"{field}[{key!r}]", value, want)
            try:
                re.compile(key)
            except re.error as exc:
                raise AdapterImportError(f"{path}: {field} key {key!r} is not a valid pattern ({exc}).") from exc


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        pickles = [p.name for p in folder.glob("adapter_model.*")]
        hint = f" (found {pickles[0]}: Stance Studio never unpickles files)" if pickles else ""
        raise AdapterImportError(f"{folder} holds no adapter_model.safetensors{hint}.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterImportError(f"{path} is not a readable safetensors file ({exc}).") from exc


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: a key names a module by its
    full name or a dotted suffix (a regular expression in recent PEFT)."""
    for key, value in (patterns or {}).items():
        if module == key or module.endswith(f".{key}") or re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


def scaling(config: dict, module: str) -> tuple[int, float]:
    """The rank PEFT gives ``module`` and its scale (alpha / r, rsLoRA alpha / √r)."""
    r = int(_pattern_value(config.get("rank_pattern"), module, config.get("r", 8)))
    alpha = float(_pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8)))
    if r < 1:
        raise AdapterImportError(f"adapter_config.json gives {module} rank {r}; a rank is at least 1.")
    return r, alpha / (math.sqrt(r) if config.get("use_rslora") else r)


def read_adapter(folder: str | os.PathLike, base) -> tuple[dict[str, LowRankDelta], dict]:
    """The adapter's deltas by base parameter name (scaling folded into B), checked
    against ``base``, and its config."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterImportError(f"{folder} is not a folder; pass a PEFT adapter folder.")
    config = _read_config(folder)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in _read_tensors(folder).items():
        match = _KEY.match(key)
        if not match:
            raise AdapterImportError(f"{folder}: tensor {key!r} is not a LoRA factor (lora_A / lora_B of a Linear).")
        pairs.setdefault(match["module"], {})[match["part"]] = tensor
    if not pairs:
        raise AdapterImportError(f"{folder}: the adapter holds no LoRA factors.")
    modules = dict(base.model.named_modules())
    deltas: dict[str, LowRankDelta] = {}
    for module, parts in sorted(pairs.items()):
        if set(parts) != {"A", "B"}:
            raise AdapterImportError(f"{folder}: {module} has lora_{''.join(parts)} only; it needs lora_A and lora_B.")
        target = modules.get(module)
        if not isinstance(target, torch.nn.Linear):
            what = "does not exist in" if target is None else f"is a {type(target).__name__}, not a Linear, in"
            raise AdapterImportError(f"{folder}: target {module} {what} the loaded model {base.model_id}.")
        A, B = parts["A"].float(), parts["B"].float()
        out_f, in_f = target.weight.shape
        if A.dim() != 2 or B.dim() != 2 or A.shape[1] != in_f or B.shape[0] != out_f or A.shape[0] != B.shape[1]:
            raise AdapterImportError(
                f"{folder}: {module}: lora_A is {tuple(A.shape)} and lora_B {tuple(B.shape)}, but the loaded model "
                f"{base.model_id} has a {out_f}×{in_f} weight there (need A r×{in_f}, B {out_f}×r)."
            )
        r, scale = scaling(config, module)
        if A.shape[0] != r:
            raise AdapterImportError(
                f"{folder}: {module} has rank {A.shape[0]} in its tensors but {r} in adapter_config.json."
            )
        if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
            raise AdapterImportError(f"{folder}: {module} holds NaN or inf values.")
        deltas[f"{module}.weight"] = LowRankDelta(A=A.contiguous(), B=(B if scale == 1.0 else B * scale).contiguous())
    return deltas, config


def import_peft(folder: str | os.PathLike, name: str, base, library) -> StanceCheckpoint:
    """Read, check and save a PEFT adapter in ``library`` as stance ``name``."""

    library.check_new_name(name)
    deltas, config = read_adapter(folder, base)
    keep = ("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "target_modules",
            "base_model_name_or_path")
    ckpt = make_checkpoint(
        name, deltas, base,
        stance={"description": f"PEFT LoRA adapter imported from {Path(folder).resolve()}"},
        training={"method": "peft", "source": str(Path(folder).resolve()),
                  "peft": {k: config.get(k) for k in keep if k in config}},
        extraction={"policy": "imported", "ranks": {n: d.rank for n, d in deltas.items()}},
    )
    library.save(ckpt)
    return ckpt
