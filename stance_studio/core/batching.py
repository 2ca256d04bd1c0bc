"""Padding token sequences into one batch: the one builder that training, generation,
teacher forcing and calibration runs share."""

from __future__ import annotations

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
