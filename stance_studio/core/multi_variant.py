"""Batched multi-variant generation: every side-by-side column in one batch.

The model keeps its base weights W0; each batch row belongs to one variant, and
forward hooks add that variant's delta contribution to the outputs of the touched
modules: ``x @ A.T @ B.T`` for low-rank factors, the module's own function of a
dense delta otherwise (``F.linear(x, Δ)``, ``Δ[ids]``, ``x̂ ⊙ Δ``). That is exact
for modules whose output is linear in their parameters; :func:`supports` checks
this numerically per module, and callers fall back to swapping weights one
variant at a time when it does not hold (e.g. a norm computing ``x̂ ⊙ (1 + w)``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch.func import functional_call

from stance_studio.core.checkpoints import StanceCheckpoint
from stance_studio.core.deltas import Delta, DenseDelta, LowRankDelta
from stance_studio.core.modules import is_transposed_linear

Blend = Sequence[tuple[object, float]]


def _deltas(src) -> Mapping[str, Delta]:
    return src.deltas if isinstance(src, StanceCheckpoint) else src


def _split(name: str) -> tuple[str, str]:
    module, _, attr = name.rpartition(".")
    return module, attr


def _aliases(model: torch.nn.Module) -> dict[str, list[tuple[str, str]]]:
    """Every (module, attribute) holding each parameter: tied weights (an input
    embedding shared with the output head) appear under several modules."""
    owners: dict[int, list[tuple[str, str]]] = {}
    for module_name, module in model.named_modules():
        for attr, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append((module_name, attr))
    return {name: owners[id(param)] for name, param in model.named_parameters()}


def _touched(base, blend: Blend, aliases) -> list[tuple[str, str, float, Delta]]:
    """(module, attribute, alpha, delta) for every module a blend changes."""
    out = []
    for src, alpha in blend:
        if alpha == 0:
            continue
        for name, delta in _deltas(src).items():
            for module, attr in aliases.get(name, [_split(name)]):
                out.append((module, attr, float(alpha), delta))
    return out


def _probe_input(module: torch.nn.Module, generator: torch.Generator) -> torch.Tensor | None:
    if isinstance(module, torch.nn.Embedding):
        return torch.randint(0, module.num_embeddings, (2, 3), generator=generator)
    weight = getattr(module, "weight", None)
    if weight is None:
        return None
    width = weight.shape[0] if is_transposed_linear(module) else weight.shape[-1] if weight.dim() >= 1 else None
    if width is None:
        return None
    return torch.randn(2, 3, width, generator=generator)


@torch.no_grad()
def _is_linear_in_params(module: torch.nn.Module, attrs: set[str]) -> bool:
    """Check f(x; p0 + Δ) == f(x; p0) + f(x; Δ, other touched params 0) on a random input
    (on a float32 CPU copy, so the check means the same on any device and dtype)."""
    import copy

    weight = next(module.parameters(), None)
    if weight is not None and (weight.dtype != torch.float32 or weight.device.type != "cpu"):
        module = copy.deepcopy(module).float().cpu()
    gen = torch.Generator().manual_seed(0)
    x = _probe_input(module, gen)
    if x is None:
        return False
    params = {a: getattr(module, a) for a in attrs}
    if any(p is None for p in params.values()):
        return False
    deltas = {a: torch.randn(p.shape, generator=gen) * 0.1 for a, p in params.items()}
    try:
        full = functional_call(module, {a: params[a] + deltas[a] for a in attrs}, (x,))
        plain = module(x)
        part = _contribution(module, deltas, x)
    except (RuntimeError, TypeError, ValueError):
        return False
    return bool(torch.allclose(full, plain + part, rtol=1e-4, atol=1e-5))


def _contribution(module: torch.nn.Module, deltas: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The module's output change for parameter deltas (linear modules: f(x; Δ))."""
    if isinstance(module, torch.nn.Linear):
        return torch.nn.functional.linear(x, deltas.get("weight", torch.zeros_like(module.weight)), deltas.get("bias"))
    overrides = {}
    for attr, value in module.named_parameters(recurse=False):
        overrides[attr] = deltas.get(attr, torch.zeros_like(value))
    return functional_call(module, overrides, (x,))


def supports(base, blends: Sequence[Blend]) -> bool:
    """Whether every touched module can take per-row deltas exactly."""
    modules = dict(base.model.named_modules())
    aliases = _aliases(base.model)
    touched: dict[str, set[str]] = {}
    for blend in blends:
        for module, attr, _, _ in _touched(base, blend, aliases):
            touched.setdefault(module, set()).add(attr)
    for module_name, attrs in touched.items():
        module = modules.get(module_name)
        if module is None or not attrs <= {"weight", "bias"}:
            return False
        if isinstance(module, torch.nn.Linear) and attrs == {"weight"}:
            continue
        if not _is_linear_in_params(module, attrs):
            return False
    return True


class RowDeltas:
    """Context manager: while active, batch row ``i`` runs with blend ``blends[i]``."""

    def __init__(self, base, blends: Sequence[Blend]) -> None:
        self.base = base
        self.blends = list(blends)
        self._handles: list = []

    def __enter__(self) -> "RowDeltas":
        modules = dict(self.base.model.named_modules())
        aliases = _aliases(self.base.model)
        per_module: dict[str, dict[int, list[tuple[str, float, Delta]]]] = {}
        for row, blend in enumerate(self.blends):
            for module, attr, alpha, delta in _touched(self.base, blend, aliases):
                per_module.setdefault(module, {}).setdefault(row, []).append((attr, alpha, delta))
        for module_name, rows in per_module.items():
            hook = _make_hook(modules[module_name], rows)
            self._handles.append(modules[module_name].register_forward_hook(hook, with_kwargs=False))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _make_hook(module: torch.nn.Module, rows: dict[int, list[tuple[str, float, Delta]]]):
    weight = next(module.parameters())
    here = {"device": weight.device}  # low-rank factors run in float32, dense deltas as the weights
    as_weight = {"device": weight.device, "dtype": weight.dtype}
    prepared: dict[int, tuple[list[tuple[torch.Tensor, torch.Tensor]], dict[str, torch.Tensor]]] = {}
    for row, terms in rows.items():
        low: list[tuple[torch.Tensor, torch.Tensor]] = []
        dense: dict[str, torch.Tensor] = {}
        for attr, alpha, delta in terms:
            if isinstance(delta, LowRankDelta) and isinstance(module, torch.nn.Linear) and attr == "weight":
                low.append((delta.A.float().to(**here), delta.B.float().to(**here) * alpha))
            elif isinstance(delta, LowRankDelta) and is_transposed_linear(module) and attr == "weight":
                # Conv1D: y = x W with W (in × out), so x Δ = (x B) A; as x Aᵀ' Bᵀ' with A' = Bᵀ, B' = Aᵀ
                low.append((delta.B.float().T.to(**here), delta.A.float().T.to(**here) * alpha))
            else:
                value = (delta.materialize() * alpha).to(**as_weight)
                dense[attr] = dense[attr] + value if attr in dense else value
        if low:
            A = torch.cat([a for a, _ in low], dim=0)
            B = torch.cat([b for _, b in low], dim=1)
            low = [(A, B)]
        prepared[row] = (low, dense)

    busy = [False]  # _contribution may call the module again; skip re-entry

    def hook(mod, args, output):
        if busy[0]:
            return output
        busy[0] = True
        try:
            _add_rows(mod, args[0], output)
        finally:
            busy[0] = False
        return output

    def _add_rows(mod, x, output):
        for row, (low, dense) in prepared.items():
            if row >= output.shape[0]:
                continue
            xr = x[row : row + 1]
            extra = None
            for A, B in low:
                extra = (xr.float() @ A.T) @ B.T
            if dense:
                part = _contribution(mod, dense, xr)
                extra = part if extra is None else extra + part
            if extra is not None:
                output[row : row + 1] += extra.to(output.dtype)

    return hook
