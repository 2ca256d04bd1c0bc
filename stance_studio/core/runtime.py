"""The stance runtime: the one owner of what stances a loaded model runs with.

Stances are applied at runtime, never written into the weights. Every module a
loaded stance touches carries a forward hook (a :class:`~stance_studio.core.runtime_slots.Slot`)
holding that stance's deltas — low-rank ``A``, ``B`` or dense — and adds
``Σ w_i Δ_i`` to the module's output with the stance weights ``w_i`` in force, like a
PEFT LoRA layer with any number of signed adapters. Weights are either *global*
(the blend the sliders show) or *per batch row* (:meth:`StanceRuntime.rows`: row ``j``
of a batch runs with blend ``j``; the side-by-side view and the metrics use this, so
base and variants run in one batch without touching a weight). Moving a slider sets
a number; the base tensors are never modified, so reset is exact by construction.

``merge`` writes ``W0 + Σ w Δ`` into the touched parameters for the fastest
single-variant generation; the exact ``W0`` is kept aside and written back when
merge is turned off, the blend changes or a per-row run needs the base tensors.

Extension point — activation terms: a source may carry, besides its ``deltas``
(parameter name → delta), an ``activations`` mapping (module name → vector, e.g.
``model.layers.12`` → a steering direction). The vector, scaled by the stance's
weight (global or per row), is added to that module's output (the hidden states, the
first element when the module returns a tuple). Steering stances plug in this way.

A training copy of the model is taken with :func:`base_copy`: it carries no hook
and the true base weights, whatever blend is shown.
"""

from __future__ import annotations

import copy
import threading
import weakref
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Optional, Sequence

import torch

from stance_studio.core.deltas import Delta
from stance_studio.core.errors import ShapeMismatchError
from stance_studio.core.runtime_slots import ActivationTerm, Detached, Slot, WeightTerm

Blend = Sequence[tuple[object, float]]
_RUNTIMES: "weakref.WeakKeyDictionary[torch.nn.Module, StanceRuntime]" = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def runtime_for(model: torch.nn.Module) -> "StanceRuntime":
    """The stance runtime of ``model`` (made on first use; one per model)."""
    with _REGISTRY_LOCK:
        runtime = _RUNTIMES.get(model)
        if runtime is None:
            runtime = _RUNTIMES[model] = StanceRuntime(model)
        return runtime


def source_deltas(source) -> Mapping[str, Delta]:
    """Parameter name → delta of a checkpoint (``.deltas``) or of a plain mapping."""
    deltas = getattr(source, "deltas", None)
    if deltas is not None:
        return deltas
    return source if isinstance(source, Mapping) else {}


def source_activations(source) -> Mapping[str, torch.Tensor]:
    """Module name → vector added to that module's output (steering stances)."""
    return getattr(source, "activations", None) or {}


class StanceRuntime:
    """Loaded stances and their weights for one model (see the module docstring)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = weakref.ref(model)
        self._lock = threading.RLock()
        self._modules = {name: m for name, m in model.named_modules() if name}
        self._params = dict(model.named_parameters())
        self._owners = _owners(model)
        self._sources: dict[int, object] = {}
        self._weights: dict[int, float] = {}
        self._slots: dict[str, Slot] = {}
        self._handles: dict[str, object] = {}
        self._version = 0
        self._global_state: Optional[tuple[object, dict[int, torch.Tensor]]] = None
        self._local = threading.local()
        self._pinned: dict[int, int] = {}  # source key → per-row runs using it
        self._merged: dict[str, torch.Tensor] = {}  # parameter → exact W0 while merged
        self._merge = False

    # -- what is loaded and at what weight -------------------------------------------

    @property
    def active(self) -> list[tuple[object, float]]:
        """(source, weight) of every loaded stance with a non-zero global weight."""
        with self._lock:
            return [(self._sources[k], w) for k, w in self._weights.items() if w != 0.0]

    @property
    def loaded(self) -> list[object]:
        with self._lock:
            return list(self._sources.values())

    @property
    def is_base(self) -> bool:
        """True when the model computes the base function (every weight 0)."""
        return not self.active

    def original(self, name: str) -> torch.Tensor:
        """The exact base tensor W0 of parameter ``name``."""
        with self._lock:
            saved = self._merged.get(name)
            return saved if saved is not None else self._params[name].detach()

    def set_blend(self, blend: Iterable[tuple[object, float]]) -> None:
        """Run with ``blend`` (replacing the previous one). Stances already loaded
        only change their weight; stances no longer named are unloaded."""
        pairs = [(src, float(w)) for src, w in blend]
        with self._lock:
            keys = set()
            for src, _ in pairs:
                keys.add(self._load(src))
            for key in [k for k in self._sources if k not in keys and not self._pinned.get(k)]:
                self._unload(key)
            self._weights = {k: 0.0 for k in self._sources}
            for src, w in pairs:
                self._weights[id(src)] += w
            self._changed()

    def reset(self) -> None:
        """Every weight 0 and nothing loaded: the base model, bit for bit."""
        self.set_blend([])

    @property
    def merge(self) -> bool:
        return self._merge

    @merge.setter
    def merge(self, on: bool) -> None:
        """Write the global blend into the weights (on) or put W0 back (off)."""
        with self._lock:
            self._merge = bool(on)
            self._changed()

    # -- per-row and scoped weights ----------------------------------------------------

    @contextmanager
    def rows(self, blends: Sequence[Blend]) -> Iterator[None]:
        """In this thread, batch row ``j`` runs with ``blends[j]`` (one blend: every
        row). The global blend is untouched and comes back on exit."""
        blends = [list(b) for b in blends]
        with self._lock:
            keys = [self._load(src) for blend in blends for src, _ in blend]
            for key in keys:
                self._pinned[key] = self._pinned.get(key, 0) + 1
            table = {k: torch.zeros(len(blends)) for k in set(keys)}
            for row, blend in enumerate(blends):
                for src, w in blend:
                    table[id(src)][row] += float(w)
            self._changed()  # loading may have added slots; merged weights go back to W0
        outer = getattr(self._local, "state", None)
        self._local.state = (object(), table)
        try:
            yield
        finally:
            self._local.state = outer
            with self._lock:
                for key in keys:
                    self._pinned[key] -= 1
                    if not self._pinned[key]:
                        del self._pinned[key]
                        if key not in self._weights:
                            self._unload(key)
                self._changed()

    def scoped(self, blend: Blend) -> "contextmanager":
        """In this thread, every row runs with ``blend`` (``[]``: the base)."""
        return self.rows([blend])

    def state_for_forward(self) -> Optional[tuple[object, dict[int, torch.Tensor]]]:
        """(token, stance key → weights per row) for the hooks; None when the
        weights in force are merged into the parameters."""
        local = getattr(self._local, "state", None)
        if local is not None:
            return local
        state = self._global_state
        return None if state is None or self._merge else state

    # -- internals ----------------------------------------------------------------------

    def _load(self, source) -> int:
        key = id(source)
        if key in self._sources:
            return key
        for name, delta in source_deltas(source).items():
            owners = self._owners.get(name)
            if owners is None:
                raise ShapeMismatchError(f"The stance changes {name}, which the loaded model does not have.")
            for module_name, attr in owners:
                self._slot(module_name).weights.append(WeightTerm(key, attr, delta))
        for module_name, vector in source_activations(source).items():
            if module_name not in self._modules:
                raise ShapeMismatchError(f"The stance steers {module_name}, which the loaded model does not have.")
            self._slot(module_name).activations.append(ActivationTerm(key, torch.as_tensor(vector)))
        self._sources[key] = source
        self._weights.setdefault(key, 0.0)
        return key

    def _slot(self, module_name: str) -> Slot:
        slot = self._slots.get(module_name)
        if slot is None:
            module = self._modules[module_name]
            slot = self._slots[module_name] = Slot(self, module)
            self._handles[module_name] = module.register_forward_hook(slot, with_kwargs=True)
        slot.invalidate()
        return slot

    def _unload(self, key: int) -> None:
        for module_name in list(self._slots):
            slot = self._slots[module_name]
            before = len(slot.weights) + len(slot.activations)
            slot.weights = [t for t in slot.weights if t.key != key]
            slot.activations = [t for t in slot.activations if t.key != key]
            if len(slot.weights) + len(slot.activations) != before:
                slot.invalidate()
            if slot.empty:
                self._handles.pop(module_name).remove()
                del self._slots[module_name]
        self._sources.pop(key, None)
        self._weights.pop(key, None)

    def _changed(self) -> None:
        self._version += 1
        self._global_state = (self._version, {k: torch.tensor([w]) for k, w in self._weights.items()})
        self._write_merged()

    @torch.no_grad()
    def _write_merged(self) -> None:
        """Merged: parameters hold W0 + Σ w Δ (from the saved W0, never accumulated).
        Otherwise (or during a per-row run) every parameter holds W0."""
        want: dict[str, list[tuple[float, Delta]]] = {}
        if self._merge and not self._pinned:
            for key, w in self._weights.items():
                if w != 0.0:
                    for name, delta in source_deltas(self._sources[key]).items():
                        want.setdefault(name, []).append((w, delta))
        for name in [n for n in self._merged if n not in want]:
            self._params[name].data.copy_(self._merged.pop(name))
        for name, terms in want.items():
            param = self._params[name].data
            w0 = self._merged.setdefault(name, param.clone())
            total = sum(w * d.materialize() for w, d in terms)
            torch.add(w0, total.to(w0.dtype), out=param)


def _owners(model: torch.nn.Module) -> dict[str, list[tuple[str, str]]]:
    """Every (module, attribute) holding each parameter: a tied weight (input
    embedding shared with the output head) has several."""
    by_id: dict[int, list[tuple[str, str]]] = {}
    for module_name, module in model.named_modules():
        for attr, param in module.named_parameters(recurse=False):
            by_id.setdefault(id(param), []).append((module_name, attr))
    return {name: by_id[id(param)] for name, param in model.named_parameters(remove_duplicate=False)}


def base_tensor(model: torch.nn.Module, name: str) -> torch.Tensor:
    """The exact base tensor W0 of parameter ``name`` of ``model``."""
    runtime = _RUNTIMES.get(model)
    return runtime.original(name) if runtime is not None else dict(model.named_parameters())[name].detach()


def base_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` with the true base weights and no stance hooks,
    whatever blend the model runs with (for training)."""
    runtime = _RUNTIMES.get(model)
    if runtime is None:
        return copy.deepcopy(model)
    with runtime._lock:
        clone = copy.deepcopy(model)
        params = dict(clone.named_parameters())
        with torch.no_grad():
            for name, w0 in runtime._merged.items():
                params[name].data.copy_(w0)
    for module in clone.modules():
        for hook_id, hook in list(module._forward_hooks.items()):
            if isinstance(hook, Detached):
                del module._forward_hooks[hook_id]
                module._forward_hooks_with_kwargs.pop(hook_id, None)
                getattr(module, "_forward_hooks_always_called", {}).pop(hook_id, None)
    return clone
