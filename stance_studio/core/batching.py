"""Padding token sequences into one batch: the one builder that training, generation,
teacher forcing and calibration runs share."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
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


@dataclass
class SharedPrefix:
    """A batch whose rows all start with the same tokens: those ran once, in a batch
    of one, and the cache in ``cache_kwargs`` holds them for every row. ``rest``: each
    row's remaining tokens, left-padded; ``ids``/``mask``: prefix and rest side by
    side (what ``generate`` takes with the cache; ``mask`` also covers the prefix);
    ``positions``: the rest's positions, counted from each row's first token."""

    rest: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    cache_kwargs: dict


@torch.no_grad()
def shared_prefix(model: torch.nn.Module, seqs: Sequence[Sequence[int]], pad: int,
                  keep: Optional[Sequence[int]] = None, grow: int = 0) -> Optional[SharedPrefix]:
    """Run the tokens every row of ``seqs`` starts with once, or None where too few
    are shared (:data:`MIN_SHARED_PREFIX`) or a sliding window is narrower than the
    batch (the padding between prefix and rest would shift its edge). Row ``i``
    keeps at least its last ``keep[i]`` tokens (default 1) out of the prefix; ``grow``:
    how many tokens generation will add (the window must cover those too). Only
    where every row runs with the same weights (not under per-row stance weights)."""
    seqs = [list(s) for s in seqs]
    keep = list(keep) if keep is not None else [1] * len(seqs)
    length = min(_common_prefix(seqs), *(len(s) - k for s, k in zip(seqs, keep)))
    if length < MIN_SHARED_PREFIX:
        return None
    device = next(model.parameters()).device
    rest, rest_mask = pad_batch([s[length:] for s in seqs], pad, left=True, device=device)
    if not _windows_cover(model, length + rest.shape[1] + grow):
        return None
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    prefix = torch.tensor([seqs[0][:length]], device=device)
    first = model(input_ids=prefix, use_cache=True, logits_to_keep=1)
    cache = first.get("cache", None) or first.get("past_key_values")
    cache.batch_repeat_interleave(len(seqs))
    ones = torch.ones(len(seqs), length, dtype=rest_mask.dtype, device=device)
    return SharedPrefix(rest, torch.cat([prefix.expand(len(seqs), -1), rest], dim=1),
                        torch.cat([ones, rest_mask], dim=1), length + (rest_mask.cumsum(-1) - 1).clamp(min=0),
                        {name: cache})


def tail_logits(model: torch.nn.Module, seqs: Sequence[Sequence[int]], needs: Sequence[int], pad: int,
                share_prefix: bool = False) -> torch.Tensor:
    """Teacher-forced logits at the last positions of each of ``seqs``, row ``i``
    needing its last ``needs[i]``: ``[rows, max(needs), vocab]`` (float32), row ``i``'s
    position ``-k`` being the logits after its ``k``-th last token (positions a row
    does not need may hold anything). Rows are left-padded, each row's positions
    counted from its first real token, and the output head runs on the kept positions
    alone: a prompt's positions cost no vocabulary-wide projection.

    ``share_prefix``: the tokens every row starts with (a chat template's system
    prompt) run once (:func:`shared_prefix`); not under per-row stance weights."""
    tail = max(needs)
    if not all(1 <= need <= len(s) for s, need in zip(seqs, needs)):
        raise ValueError("each row needs between 1 and all of its positions")
    shared = shared_prefix(model, seqs, pad, keep=needs) if share_prefix else None
    if shared is None:
        ids, mask = pad_batch(seqs, pad, left=True, device=next(model.parameters()).device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=tail)
    else:
        with torch.no_grad():
            out = model(input_ids=shared.rest, attention_mask=shared.mask, position_ids=shared.positions,
                        use_cache=True, logits_to_keep=tail, **shared.cache_kwargs)
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
