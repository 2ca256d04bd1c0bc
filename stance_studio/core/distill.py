"""Fitting the scales of sign-and-scale deltas by distillation (BitDelta).

A 1-bit delta keeps each weight's sign and one scale per row. The scales start at
each row's mean absolute change; a few optimiser steps then fit them so that the
model with the kept checkpoint matches the fully tuned model's next-token
distributions on calibration text (the training examples): the loss is
KL(tuned ‖ kept) over the tokens of each sequence. Only the scales move (as
log-multipliers), so the signs stay exactly what is stored. The base weights are
never written: the forward passes use ``torch.func.functional_call``.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch.func import functional_call

from stance_studio.core.deltas import Delta, DenseDelta
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.packing import with_scales

DISTILL_STEPS = 8  # optimiser steps: a few seconds each on two CPU cores for the bundled model
DISTILL_LR = 0.05  # on log-multipliers: a step changes a scale by about 5 %
DISTILL_BATCH = 4


def _batches(base, calibration: Sequence[Sequence[int]], batch_size: int):
    pad = base.tokenizer.pad_token_id or 0
    seqs = [list(s) for s in calibration if len(s) > 1]
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in chunk])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk])
        yield ids, mask


def _logprobs(base, weights: Mapping[str, torch.Tensor], ids, mask) -> torch.Tensor:
    out = functional_call(base.model, dict(weights), args=(), kwargs={"input_ids": ids, "attention_mask": mask})
    return torch.log_softmax(out.logits.float(), dim=-1)


def _kl(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token KL(teacher ‖ student) over real tokens."""
    per_token = (teacher.exp() * (teacher - student)).sum(-1)
    real = mask.bool()
    return per_token[real].mean()


def fit_scales(
    base,
    full: Mapping[str, Delta],
    kept: Mapping[str, Delta],
    calibration: Sequence[Sequence[int]],
    steps: int = DISTILL_STEPS,
    lr: float = DISTILL_LR,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
) -> tuple[dict[str, Delta], dict]:
    """``kept`` with the row scales of its sign-and-scale deltas fitted, and a record
    (steps, KL to the tuned model before and after). Nothing changes without such
    deltas or calibration text."""
    cancel = ensure_flag(cancel)
    names = [n for n, d in kept.items() if d.packed is not None and d.packed.kind == "dense-q"]
    batches = list(_batches(base, calibration, DISTILL_BATCH))
    if not names or not batches or steps < 1:
        return dict(kept), {}
    params = dict(base.model.named_parameters())
    with torch.no_grad():
        tuned = {n: params[n] + d.materialize().to(params[n].dtype) for n, d in full.items()}
        teachers = [_logprobs(base, tuned, ids, mask) for ids, mask in batches]
        del tuned
        fixed = {n: params[n] + d.materialize().to(params[n].dtype) for n, d in kept.items() if n not in names}
        signs = {n: kept[n].materialize() for n in names}
    logs = {n: torch.zeros(signs[n].shape[0], requires_grad=True) for n in names}
    optimiser = torch.optim.Adam(list(logs.values()), lr=lr)
    history: list[float] = []
    for step in range(steps + 1):
        cancel.raise_if_set("scale fitting")
        ids, mask = batches[step % len(batches)]
        weights = dict(fixed)
        for n in names:
            weights[n] = params[n].detach() + (logs[n].exp()[:, None] * signs[n]).to(params[n].dtype)
        if step == steps:  # the last pass only measures
            with torch.no_grad():
                history.append(float(sum(_kl(t, _logprobs(base, weights, i, m), m)
                                         for t, (i, m) in zip(teachers, batches)) / len(batches)))
            break
        loss = _kl(teachers[step % len(batches)], _logprobs(base, weights, ids, mask), mask)
        if step == 0:
            with torch.no_grad():
                history.append(float(sum(_kl(t, _logprobs(base, weights, i, m), m)
                                         for t, (i, m) in zip(teachers, batches)) / len(batches)))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        progress(Progress("distill", step + 1, steps, f"Fitting sign scales: KL {loss.item():.4f}"))
    if history[-1] > history[0]:  # fitting made it worse on the calibration text: keep the start
        return dict(kept), {"steps": steps, "kl_before": history[0], "kl_after": history[-1], "kept_fit": False}
    out = dict(kept)
    for n in names:
        packed = kept[n].packed
        fitted = with_scales(packed, {"scales": packed.tensors["scales"].float() * logs[n].detach().exp()})
        out[n] = DenseDelta(signs[n] * logs[n].detach().exp()[:, None], packed=fitted)
    return out, {"steps": steps, "kl_before": history[0], "kl_after": history[-1], "kept_fit": True}
