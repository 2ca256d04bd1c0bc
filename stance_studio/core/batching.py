"""Padding token sequences into one batch: the one builder that training, generation,
teacher forcing and calibration runs share."""

from __future__ import annotations

import inspect
from typing import Optional, Sequence

import torch


def pad_batch(seqs: Sequence[Sequence[int]], pad: int, left: bool = False,
              device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` for ``seqs`` padded with ``pad`` to the longest one,
    on the right (teacher forcing, training) or on the left (``left``: generation,
    so every row's next token comes at the same position)."""
    width = max((len(s) for s in seqs), default=0)
    rows, masks = [], []
    for s in seqs:
        fill = [pad] * (width - len(s))
        rows.append(fill + list(s) if left else list(s) + fill)
        ones, zeros = [1] * len(s), [0] * (width - len(s))
        masks.append(zeros + ones if left else ones + zeros)
    return torch.tensor(rows, device=device), torch.tensor(masks, device=device)


def tail_logits(model: torch.nn.Module, seqs: Sequence[Sequence[int]], needs: Sequence[int], pad: int,
                share_prefix: bool = False) -> torch.Tensor:
    """Teacher-forced logits at the last positions of each of ``seqs``, row ``i``
    needing its last ``needs[i]``: ``[rows, max(needs), vocab]`` (float32), row ``i``'s
    position ``-k`` being the logits after its ``k``-th last token (positions a row
    does not need may hold anything). Rows are left-padded, each row's positions
    counted from its first real token, and the output head runs on the kept positions
    alone: a prompt's positions cost no vocabulary-wide projection.

    ``share_prefix``: the tokens every row starts with (a chat template's system
    prompt) run once, in a batch of one, and the rows continue from that cache. Only
    where every row runs with the same weights (not under per-row stance weights)."""
    seqs = [list(s) for s in seqs]
    device = next(model.parameters()).device
    tail = max(needs)
    if not all(1 <= need <= len(s) for s, need in zip(seqs, needs)):
        raise ValueError("each row needs between 1 and all of its positions")
    shared = min(_common_prefix(seqs), *(len(s) - need for s, need in zip(seqs, needs))) if share_prefix else 0
    if shared < MIN_SHARED_PREFIX:
        ids, mask = pad_batch(seqs, pad, left=True, device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=tail)
        return out.logits[:, -tail:].float()
    ids, mask = pad_batch([s[shared:] for s in seqs], pad, left=True, device=device)
    if not _windows_cover(model, shared + ids.shape[1]):
        # the padding between prefix and rows would shift a sliding window's edge
        return tail_logits(model, seqs, needs, pad, share_prefix=False)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        prefix = torch.tensor([seqs[0][:shared]], device=device)
        first = model(input_ids=prefix, use_cache=True, logits_to_keep=1)
        cache = first.get("cache", None) or first.get("past_key_values")
        cache.batch_repeat_interleave(len(seqs))
        positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        full_mask = torch.cat([torch.ones(len(seqs), shared, dtype=mask.dtype, device=device), mask], dim=1)
        out = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, use_cache=True,
                    logits_to_keep=tail, **{name: cache})
    return out.logits[:, -tail:].float()


def _windows_cover(model: torch.nn.Module, width: int) -> bool:
    """Whether no attention layer of ``model`` looks through a sliding window narrower than ``width``."""
    config = getattr(model, "config", None)
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if window is None or (types is not None and "sliding_attention" not in types):
        return True
    return window >= width


# Below this many shared leading tokens a batch runs whole (the cache's set-up costs more).
MIN_SHARED_PREFIX = 8


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != first[i] for s in seqs):
            return i
    return n
