"""What one module does with the stances that touch it: the forward hook of the
stance runtime (:mod:`stance_studio.core.runtime`).

A slot holds its module's terms: weight deltas of its parameters (low-rank ``B @ A``
or dense) and activation terms (a vector added to the module's output). At each
forward it adds the weighted terms to the output with the weights in force, one
weight per stance, either global (one row broadcast over the batch) or one per
batch row:

- ``nn.Linear``: ``Σ w·(x Aᵀ) Bᵀ`` in one pair of matrix products for all low-rank
  terms (the columns of the stacked ``A``/``B`` scaled by their stance's weight),
  plus ``F.linear(x, ΔW, Δb)`` for dense terms (pre-summed while weights are global);
  a GPT-2 ``Conv1D`` (weight in × out) the same, transposed: ``(x B) A``;
- ``nn.Embedding``: ``Δ[ids]`` (``B[ids] @ A`` for low-rank);
- any other module (norms, custom layers): the module is run again with
  ``W0 + Σ w Δ`` through ``torch.func.functional_call`` and its output replaces the
  original — exact whatever the module computes (``x̂ ⊙ (1 + w)`` included).

The base parameters are only read, never written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.func import functional_call

from stance_studio.core.deltas import Delta, LowRankDelta


@dataclass
class WeightTerm:
    """One stance's delta on one parameter (``attr``) of the slot's module."""

    key: int
    attr: str
    delta: Delta


@dataclass
class ActivationTerm:
    """One stance's vector added to the module's output (the first element when the
    module returns a tuple, as decoder layers do): the steering extension point."""

    key: int
    vector: torch.Tensor


class Detached:
    """What a slot becomes in a deep copy of the model: a hook that does nothing
    (:func:`~stance_studio.core.runtime.base_copy` then removes it)."""

    def __call__(self, *args, **kwargs):
        return None


class Slot:
    """The terms of one module and the forward hook that applies them."""

    def __init__(self, runtime, module: torch.nn.Module) -> None:
        self.runtime = runtime
        self.module = module
        self.weights: list[WeightTerm] = []
        self.activations: list[ActivationTerm] = []
        self._cache_token: object = None
        self._cache: Optional[dict[str, Any]] = None
        self._busy = threading.local()
        self._prepared: Optional[dict[str, Any]] = None

    def __deepcopy__(self, memo) -> Detached:
        return Detached()  # a copied model never runs the original's stances

    @property
    def empty(self) -> bool:
        return not self.weights and not self.activations

    def invalidate(self) -> None:
        """Terms changed: rebuild the stacked factors at the next forward."""
        self._prepared = None
        self._cache_token = None

    # -- preparation --------------------------------------------------------------

    def _prepare(self) -> dict[str, Any]:
        if self._prepared is not None:
            return self._prepared
        linear = isinstance(self.module, torch.nn.Linear)
        transposed = is_transposed_linear(self.module)
        embedding = isinstance(self.module, torch.nn.Embedding)
        dtype = next((p.dtype for p in self.module.parameters(recurse=False)), torch.float32)
        device = next((p.device for p in self.module.parameters(recurse=False)), torch.device("cpu"))
        low = [t for t in self.weights
               if t.attr == "weight" and isinstance(t.delta, LowRankDelta) and (linear or transposed or embedding)]
        dense = [t for t in self.weights if t not in low]
        kind = "linear" if linear else "transposed" if transposed else "embedding" if embedding else "module"
        prepared: dict[str, Any] = {"kind": kind, "device": device}
        if low:
            prepared["A"] = torch.cat([t.delta.A.to(device, dtype) for t in low], dim=0)
            prepared["B"] = torch.cat([t.delta.B.to(device, dtype) for t in low], dim=1)
            prepared["low_keys"] = [(t.key, t.delta.rank) for t in low]
        prepared["dense"] = [(t.key, t.attr, t.delta.materialize().to(device, dtype)) for t in dense]
        prepared["acts"] = [(t.key, t.vector.to(device, dtype)) for t in self.activations]
        self._prepared = prepared
        return prepared

    def _weights_for(self, token: object, table: dict[int, torch.Tensor]) -> Optional[dict[str, Any]]:
        """Per-row scale tensors for ``table`` (stance key → weights [rows]); None
        when every weight of every term is zero (the slot then does nothing)."""
        if token == self._cache_token:
            return self._cache
        prep = self._prepare()
        keys = {k for k, _ in prep.get("low_keys", [])} | {k for k, _, _ in prep["dense"]} | {k for k, _ in prep["acts"]}
        zero = all(not bool(table[k].any()) for k in keys if k in table)
        cache: Optional[dict[str, Any]] = None
        if not zero:
            dtype = prep["dense"][0][2].dtype if prep["dense"] else prep["A"].dtype if "A" in prep else prep["acts"][0][1].dtype
            like = {"dtype": dtype, "device": prep["device"]}
            rows = max(int(t.shape[0]) for t in table.values())
            col = lambda k: table[k].to(**like) if k in table else torch.zeros(rows, **like)  # noqa: E731
            cache = {"rows": rows}
            if "A" in prep:
                cache["scale"] = torch.cat([col(k)[:, None].expand(rows, r) for k, r in prep["low_keys"]], dim=1)
            cache["dense"] = [(attr, col(k), d) for k, attr, d in prep["dense"] if bool(col(k).any())]
            if rows == 1 and cache["dense"]:  # global weights: one summed delta per parameter
                summed: dict[str, torch.Tensor] = {}
                for attr, w, d in cache["dense"]:
                    summed[attr] = summed[attr] + float(w[0]) * d if attr in summed else float(w[0]) * d
                cache["dense"] = [(attr, torch.ones(1, **like), d) for attr, d in summed.items()]
            cache["acts"] = [(col(k), v) for k, v in prep["acts"] if bool(col(k).any())]
        self._cache_token, self._cache = token, cache
        return cache

    # -- the hook -------------------------------------------------------------------

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict, output):
        if getattr(self._busy, "on", False):
            return None
        state = self.runtime.state_for_forward()
        if state is None:
            return None
        token, table = state
        cache = self._weights_for(token, table)
        if cache is None:
            return None
        self._busy.on = True
        try:
            return self._apply(module, args, kwargs, output, cache)
        finally:
            self._busy.on = False

    def _apply(self, module, args, kwargs, output, cache):
        prep = self._prepare()
        x = args[0] if args else next(iter(kwargs.values()))
        main = output[0] if isinstance(output, tuple) else output
        rows = cache["rows"]
        if rows > 1 and main.shape[0] != rows:
            raise ValueError(f"The batch has {main.shape[0]} rows but {rows} per-row stance weights are set.")
        extra = None
        if prep["kind"] == "module" and cache["dense"]:
            main = self._rerun(module, args, kwargs, cache, main)
        else:
            extra = self._linear_extra(prep, cache, x, main)
        for weight, vector in cache["acts"]:
            term = _per_row(weight, main.dim()) * vector
            extra = term if extra is None else extra + term
        if extra is not None:
            main = main + extra.to(main.dtype)
        return (main, *output[1:]) if isinstance(output, tuple) else main

    def _linear_extra(self, prep, cache, x, main):
        extra = None
        if "A" in prep:
            if prep["kind"] == "linear":
                h = x.to(prep["A"].dtype) @ prep["A"].T
                extra = (h * _per_row(cache["scale"], h.dim())) @ prep["B"].T
            elif prep["kind"] == "transposed":  # Conv1D: y = x W, W in × out, so x Δ = (x B) A
                h = x.to(prep["B"].dtype) @ prep["B"]
                extra = (h * _per_row(cache["scale"], h.dim())) @ prep["A"]
            else:  # embedding: Δ[ids] = B[ids] @ A
                h = F.embedding(x, prep["B"])
                extra = (h * _per_row(cache["scale"], h.dim())) @ prep["A"]
        for attr, weight, delta in cache["dense"]:
            if attr != "weight":  # a bias
                part = _per_row(weight, main.dim()) * delta.expand_as(main)
            elif weight.shape[0] > 1 and weight.dim() == 1 and not bool(weight.all()):
                # per-row weights with some rows at 0: only the others multiply
                index = weight.nonzero().flatten()
                part = torch.zeros_like(main, dtype=delta.dtype)
                if len(index):
                    rows = self._dense_part(prep["kind"], x.index_select(0, index), delta)
                    part[index] = _per_row(weight[index], rows.dim()) * rows
            else:
                part = self._dense_part(prep["kind"], x, delta)
                part = _per_row(weight, part.dim()) * part
            extra = part if extra is None else extra + part
        return extra

    @staticmethod
    def _dense_part(kind: str, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """x's output under the dense weight delta alone."""
        if kind == "linear":
            return F.linear(x.to(delta.dtype), delta)
        if kind == "transposed":
            return x.to(delta.dtype) @ delta
        return F.embedding(x, delta)

    def _rerun(self, module, args, kwargs, cache, main):
        """Run the module again with W0 + Σ w Δ. With per-row weights, rows that share
        their weights run together (one call per distinct weight vector) and rows whose
        weights are all 0 keep the base output ``main`` as it is."""
        params = dict(module.named_parameters(recurse=False))
        rows = cache["rows"]
        if rows == 1:
            out = functional_call(module, _combined(params, cache["dense"], 0), args, kwargs)
            return out[0] if isinstance(out, tuple) else out
        groups: dict[tuple[float, ...], list[int]] = {}
        for row in range(rows):
            key = tuple(float(weight[row]) for _, weight, _ in cache["dense"])
            if any(key):
                groups.setdefault(key, []).append(row)
        if not groups:
            return main
        result = main.clone()
        for members in groups.values():
            index = torch.tensor(members, device=main.device)
            override = _combined(params, cache["dense"], members[0])
            row_args = tuple(a.index_select(0, index) if _batched(a, rows) else a for a in args)
            row_kwargs = {k: v.index_select(0, index) if _batched(v, rows) else v for k, v in kwargs.items()}
            out = functional_call(module, override, row_args, row_kwargs)
            result[index] = (out[0] if isinstance(out, tuple) else out).to(result.dtype)
        return result


def is_transposed_linear(module: torch.nn.Module) -> bool:
    """A GPT-2 style ``Conv1D``: a linear layer storing its weight as in × out."""
    return type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None \
        and module.weight.dim() == 2


def _combined(params: dict[str, torch.Tensor], dense, row: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for attr, weight, delta in dense:
        w = float(weight[row])
        if w == 0.0:
            continue
        out[attr] = out.get(attr, params[attr].detach()) + w * delta
    return out


def _batched(value, rows: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows


def _per_row(weight: torch.Tensor, dims: int) -> torch.Tensor:
    """Weights [rows] or [rows, k] shaped to broadcast over [rows, …, k]."""
    if weight.dim() == 1:
        return weight.reshape(-1, *([1] * (dims - 1)))
    return weight.reshape(weight.shape[0], *([1] * (dims - 2)), weight.shape[1])
