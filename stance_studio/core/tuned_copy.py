"""The fully tuned model and a kept checkpoint, run as plain weights on the trained
copy where there is one.

``train(keep_model=True)`` hands back the trained copy. Running it is the tuned
model with no dense delta added to every module at runtime; rewriting it to
``W0 + Δ_kept`` (from the exact base tensors) runs a kept checkpoint the same way.
Without a copy, both run on the loaded model with the stance at runtime. Either way
the loaded model's weights are never written.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from stance_studio.core.runtime import base_tensor


def tuned_view(base, blender, tuned_deltas, tuned_model):
    """(model to run, context) computing the fully tuned model: the trained copy itself
    when given (plain weights), else the base with the tuned delta at runtime."""
    if tuned_model is not None:
        return dataclasses.replace(base, model=tuned_model), contextlib.nullcontext()
    return base, blender.runtime.scoped([(tuned_deltas, 1.0)])


def kept_view(base, blender, tuned_deltas, kept, tuned_model):
    """(model to run, a context to enter around each pass) computing base + the kept
    checkpoint: the trained copy rewritten to ``W0 + Δ_kept`` when there is one (every
    parameter the tuned delta touched is reset first, so one copy serves checkpoint
    after checkpoint), else the loaded model with the checkpoint at runtime.

    After this the copy no longer computes the tuned model: take its answers first."""
    if tuned_model is None:
        return base, lambda: blender.runtime.scoped([(kept, 1.0)])
    params = dict(tuned_model.named_parameters())
    with torch.no_grad():
        for name in set(tuned_deltas) | set(kept):
            param = params[name]
            w0 = base_tensor(base.model, name).to(param.device)
            if name in kept:
                torch.add(w0, kept[name].materialize().to(param.device, w0.dtype), out=param.data)
            else:
                param.data.copy_(w0)
    return dataclasses.replace(base, model=tuned_model), contextlib.nullcontext
