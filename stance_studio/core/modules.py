"""Module patterns: which parameters or linear modules a method trains.

A pattern list is comma separated; each pattern is one of
- a dotted name fragment matched at dot boundaries: ``q_proj``, ``self_attn``,
  ``layers.13.self_attn.q_proj``;
- ``depth:F`` (the layer nearest depth fraction F) or ``depth:A-B`` (layers whose
  depth lies in [A, B]), optionally narrowed: ``depth:0.6:q_proj``.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch

from stance_studio.core.analysis import layer_index
from stance_studio.core.errors import UnknownModuleError


def split_patterns(patterns: str | Sequence[str] | None) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    out: list[str] = []
    for item in patterns:
        # "depth:0.6:q_proj,v_proj" keeps its narrowing list together
        if item.strip().startswith("depth:") and item.count(":") >= 2:
            head, _, kinds = item.strip().rpartition(":")
            out.extend(f"{head}:{k.strip()}" for k in kinds.split(",") if k.strip())
        else:
            out.extend(p.strip() for p in item.split(",") if p.strip())
    return out


# Llama-style module names → the modules computing them in other families (first match wins).
ALIASES = {
    "q_proj": ("qkv_proj", "attn.c_attn"),
    "k_proj": ("qkv_proj", "attn.c_attn"),
    "v_proj": ("qkv_proj", "attn.c_attn"),
    "o_proj": ("attn.c_proj", "self_attn.dense"),
    "gate_proj": ("gate_up_proj", "mlp.c_fc"),
    "up_proj": ("gate_up_proj", "mlp.c_fc"),
    "down_proj": ("mlp.c_proj",),
    "self_attn": ("attn",),
    "input_layernorm": ("ln_1",),
    "post_attention_layernorm": ("ln_2",),
    "embed_tokens": ("wte",),
    "norm": ("ln_f",),
}


def _fragment(pattern: str) -> re.Pattern:
    return re.compile(r"(^|\.)" + re.escape(pattern.strip(".")) + r"(\.|$)")


def _depth_layers(spec: str, num_layers: int) -> set[int]:
    try:
        if "-" in spec:
            lo, hi = (float(x) for x in spec.split("-", 1))
            return {i for i in range(num_layers) if lo <= (i + 0.5) / num_layers <= hi}
        frac = float(spec)
    except ValueError as exc:
        raise UnknownModuleError(f"Cannot read depth {spec!r}; write depth:0.6 or depth:0.5-0.7.") from exc
    if not 0.0 <= frac <= 1.0:
        raise UnknownModuleError(f"Depth {frac} is outside 0–1.")
    return {min(num_layers - 1, max(0, round(frac * num_layers - 0.5)))}


def matches(name: str, pattern: str, num_layers: int) -> bool:
    if pattern.startswith("depth:"):
        parts = pattern.split(":")
        layers = _depth_layers(parts[1], num_layers)
        if layer_index(name) not in layers:
            return False
        return len(parts) < 3 or bool(_fragment(parts[2]).search(name))
    return bool(_fragment(pattern).search(name))


def _aliased(pattern: str) -> list[str]:
    """The same pattern with its module name replaced by each alias of it."""
    head, sep, kind = pattern.rpartition(":") if pattern.startswith("depth:") and pattern.count(":") >= 2 else ("", "", pattern)
    return [f"{head}{sep}{alt}" for alt in ALIASES.get(kind.strip("."), ())]


def select(names: Iterable[str], patterns: str | Sequence[str], num_layers: int, what: str = "parameter") -> list[str]:
    """Names matching any pattern; every pattern must match something."""
    names = list(names)
    chosen: list[str] = []
    for pattern in split_patterns(patterns):
        hits = [n for n in names if matches(n, pattern, num_layers)]
        for alias in _aliased(pattern) if not hits else []:
            hits = [n for n in names if matches(n, alias, num_layers)]
            if hits:
                break
        if not hits:
            examples = ", ".join(names[i] for i in range(0, len(names), max(1, len(names) // 5)))
            raise UnknownModuleError(
                f"Module pattern {pattern!r} matches no {what} of this model. Examples of {what} names: {examples}."
            )
        chosen.extend(h for h in hits if h not in chosen)
    if not chosen:
        raise UnknownModuleError(f"No module patterns given; name the {what}s to train, e.g. q_proj,v_proj.")
    return chosen


def select_parameters(model: torch.nn.Module, patterns, num_layers: int) -> list[str]:
    return select([n for n, _ in model.named_parameters()], patterns, num_layers)


def is_transposed_linear(module: torch.nn.Module) -> bool:
    """GPT-2's ``Conv1D``: a linear map whose weight is stored (in × out), y = x W + b."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def is_linear(module: torch.nn.Module) -> bool:
    """A linear map of its input: ``nn.Linear`` or a transposed ``Conv1D``."""
    return isinstance(module, torch.nn.Linear) or is_transposed_linear(module)


def select_linear_modules(model: torch.nn.Module, patterns, num_layers: int) -> list[str]:
    names = [n for n, m in model.named_modules() if is_linear(m) and n]
    return select(names, patterns, num_layers, what="linear module")
