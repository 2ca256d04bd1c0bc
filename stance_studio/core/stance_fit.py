"""Stance fit: how much more likely a variant finds a stance's reference responses
than base does, teacher-forced with the prompt given, in nats per token.

fit = Σ_i (LL_variant(r_i | p_i) − LL_base(r_i | p_i)) / Σ_i |r_i|, over the held-out
examples (response tokens and the end-of-turn token, as in training's loss). Positive:
the variant moved towards the stance. No lexicon and no generation, so any stance
works; the interval resamples examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from stance_studio.core.batching import tail_logits
from stance_studio.core.datasets import IGNORE, Example, encode_example
from stance_studio.core.intervals import ratio, ratio_ci
from stance_studio.core.jobs import CancelFlag, ensure_flag


@torch.no_grad()
def response_logliks(base, examples: Sequence[Example], batch_size: int = 8,
                     cancel: Optional[CancelFlag] = None, share_prefix: bool = False) -> list[tuple[float, int]]:
    """(summed log-likelihood, token count) of each example's response under the
    model's current weights (the output head runs on the responses' positions only;
    ``share_prefix``: see :func:`~stance_studio.core.batching.tail_logits`)."""
    cancel = ensure_flag(cancel)
    pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else 0
    every = [encode_example(base.tokenizer, ex) for ex in examples]
    order = sorted(range(len(every)), key=lambda i: -len(every[i][0]))  # similar lengths pad little
    out: list[tuple[float, int]] = [(0.0, 0)] * len(every)
    for start in range(0, len(order), batch_size):
        cancel.raise_if_set("stance fit")
        rows = order[start:start + batch_size]
        encoded = [every[i] for i in rows]
        # each row needs the positions from the one before its first labelled token to its end
        needs = [min(len(ids) - _first_label(labels) + 1, len(ids)) for ids, labels in encoded]
        logits = tail_logits(base.model, [ids for ids, _ in encoded], needs, pad, share_prefix=share_prefix)
        tail = logits.shape[1]
        for row, (ids, labels) in enumerate(encoded):
            need = needs[row]
            # the row's last ``need`` logits predict its last ``need - 1`` tokens
            window = torch.tensor(labels[len(ids) - need + 1:], device=logits.device)
            nll = torch.nn.functional.cross_entropy(logits[row, tail - need:-1], window, ignore_index=IGNORE,
                                                    reduction="none")
            counted = window != IGNORE
            out[rows[row]] = (-float(nll[counted].sum()), int(counted.sum()))
    return out


def _first_label(labels: Sequence[int]) -> int:
    return next((i for i, lab in enumerate(labels) if lab != IGNORE), len(labels))


@dataclass
class StanceFit:
    nats: Optional[float]
    ci95: Optional[list[float]]
    examples: int
    tokens: int
    gains: list[float]  # per example, summed nats

    def as_json(self) -> dict:
        return {"nats": self.nats, "ci95": self.ci95, "examples": self.examples, "tokens": self.tokens}


def fit_from_logliks(variant: Sequence[tuple[float, int]], base: Sequence[tuple[float, int]]) -> StanceFit:
    gains = [v - b for (v, _), (b, _) in zip(variant, base)]
    counts = [n for _, n in base]
    return StanceFit(ratio(gains, counts), ratio_ci(gains, counts), len(gains), int(sum(counts)), gains)


def stance_fit(base, blender, blend, examples: Sequence[Example], allow_mismatch: bool = False,
               cancel: Optional[CancelFlag] = None,
               base_logliks: Optional[Sequence[tuple[float, int]]] = None) -> StanceFit:
    """Stance fit of ``blend`` (list of (checkpoint or deltas, alpha)) on ``examples``,
    with per-call stance weights (the blend the model shows is left as it is)."""
    for src, _ in blend:
        blender.check(src, allow_mismatch=allow_mismatch)
    if base_logliks is None:
        with blender.runtime.scoped([]):
            base_logliks = response_logliks(base, examples, cancel=cancel, share_prefix=True)
    with blender.runtime.scoped(list(blend)):
        variant = response_logliks(base, examples, cancel=cancel, share_prefix=True)
    return fit_from_logliks(variant, base_logliks)
