"""Capability cost: perplexity of a neutral held-out text under a variant versus
under base, as a percentage change.

The text is ``resources/capability/kjv-acts.txt`` (public domain, ~30 k tokens; see
``SOURCE.md`` there). Its first ``tokens`` tokens are scored in independent chunks of
:data:`CHUNK_TOKENS` (each chunk predicts its tokens after the first), which keeps a
CPU run short; the interval resamples chunks, variant and base paired.

perplexity = exp(Σ NLL / Σ predicted tokens); change = 100 · (ppl_variant / ppl_base − 1).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from stance_studio.core.errors import StanceStudioError
from stance_studio.core.intervals import LEVEL, RESAMPLES
from stance_studio.core.jobs import CancelFlag, ensure_flag
from stance_studio.core.resources import resource

DEFAULT_TOKENS = 2048
CHUNK_TOKENS = 128


def capability_text_path() -> Path:
    return resource("capability", "kjv-acts.txt")


@functools.lru_cache(maxsize=4)
def _text() -> str:
    return capability_text_path().read_text(encoding="utf-8")


def text_chunks(tokenizer, tokens: int = DEFAULT_TOKENS, chunk: int = CHUNK_TOKENS) -> list[list[int]]:
    """The text's first ``tokens`` tokens in chunks of ``chunk`` (the last may be shorter)."""
    if tokens < 2:
        raise StanceStudioError(f"The capability token budget must be at least 2 (got {tokens}).")
    ids = tokenizer(_text(), add_special_tokens=False)["input_ids"][:tokens]
    return [ids[i:i + chunk] for i in range(0, len(ids), chunk) if len(ids[i:i + chunk]) >= 2]


@torch.no_grad()
def chunk_nlls(base, chunks: list[list[int]], batch_size: int = 8,
               cancel: Optional[CancelFlag] = None) -> list[tuple[float, int]]:
    """(summed NLL, predicted tokens) of each chunk under the current weights."""
    cancel = ensure_flag(cancel)
    out: list[tuple[float, int]] = []
    for start in range(0, len(chunks), batch_size):
        cancel.raise_if_set("capability measurement")
        group = chunks[start:start + batch_size]
        width = max(len(c) for c in group)
        ids = torch.tensor([c + [0] * (width - len(c)) for c in group])
        mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in group])
        logits = base.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        for row, c in enumerate(group):
            out.append((float(nll[row].sum()), len(c) - 1))
    return out


@dataclass
class Capability:
    perplexity: float
    perplexity_base: float
    change: float  # percent
    change_ci95: Optional[list[float]]
    tokens: int

    def as_json(self) -> dict:
        return {"perplexity": self.perplexity, "perplexity_base": self.perplexity_base, "change": self.change,
                "change_ci95": self.change_ci95, "tokens": self.tokens}


def compare_nlls(variant: list[tuple[float, int]], base: list[tuple[float, int]], seed: int = 0) -> Capability:
    v = np.array([x for x, _ in variant])
    b = np.array([x for x, _ in base])
    n = np.array([k for _, k in base], dtype=float)

    def change(idx) -> np.ndarray:
        return 100.0 * (np.exp((v[idx].sum(-1) - b[idx].sum(-1)) / n[idx].sum(-1)) - 1.0)

    ppl_v = math.exp(v.sum() / n.sum())
    ppl_b = math.exp(b.sum() / n.sum())
    ci = None
    if len(n) > 1:
        draws = change(np.random.default_rng(seed).integers(0, len(n), size=(RESAMPLES, len(n))))
        tail = 100 * (1 - LEVEL) / 2
        ci = [float(x) for x in np.percentile(draws, [tail, 100 - tail])]
    return Capability(ppl_v, ppl_b, 100.0 * (ppl_v / ppl_b - 1.0), ci, int(n.sum()))


_BASE_NLLS: dict[tuple, list[tuple[float, int]]] = {}


def capability_cost(base, blender, blend, tokens: int = DEFAULT_TOKENS, allow_mismatch: bool = False,
                    cancel: Optional[CancelFlag] = None) -> Capability:
    """Perplexity of the capability text under ``blend`` and under base (base's is
    remembered per model and budget), with per-call stance weights (the blend the
    model shows is left as it is)."""
    for src, _ in blend:
        blender.check(src, allow_mismatch=allow_mismatch)
    chunks = text_chunks(base.tokenizer, tokens)
    key = (base.fingerprint(base.tensor_hashes.keys()), tokens)
    if key not in _BASE_NLLS:
        with blender.runtime.scoped([]):
            _BASE_NLLS[key] = chunk_nlls(base, chunks, cancel=cancel)
    if blend:
        with blender.runtime.scoped(list(blend)):
            variant = chunk_nlls(base, chunks, cancel=cancel)
    else:
        variant = _BASE_NLLS[key]
    return compare_nlls(variant, _BASE_NLLS[key])
