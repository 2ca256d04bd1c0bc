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

from stance_studio.core.datasets import IGNORE, Example, collate
from stance_studio.core.intervals import ratio, ratio_ci
from stance_studio.core.jobs import CancelFlag, ensure_flag


@torch.no_grad()
def response_logliks(base, examples: Sequence[Example], batch_size: int = 8,
                     cancel: Optional[CancelFlag] = None) -> list[tuple[float, int]]:
    """(summed log-likelihood, token count) of each example's response under the
    model's current weights."""
    cancel = ensure_flag(cancel)
    out: list[tuple[float, int]] = []
    for start in range(0, len(examples), batch_size):
        cancel.raise_if_set("stance fit")
        batch = collate(base.tokenizer, list(examples[start:start + batch_size]))
        logits = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
        counted = labels != IGNORE
        for row in range(labels.shape[0]):
            out.append((-float(nll[row][counted[row]].sum()), int(counted[row].sum())))
    return out


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
            base_logliks = response_logliks(base, examples, cancel=cancel)
    with blender.runtime.scoped(list(blend)):
        variant = response_logliks(base, examples, cancel=cancel)
    return fit_from_logliks(variant, base_logliks)
