"""Singular value decompositions of deltas, shared by every truncating policy."""

from __future__ import annotations

from typing import Optional

import torch

from stance_studio.core.deltas import Delta, LowRankDelta


def factors(delta: Delta, scale: Optional[torch.Tensor] = None):
    """U, S and Vh with delta = U diag(S) Vh (cheap for factors already low rank).

    With an input-channel ``scale`` the SVD is of delta·diag(scale) and Vh is
    unscaled afterwards, so truncations keep what matters for the outputs.
    """
    if isinstance(delta, LowRankDelta):
        A = delta.A.float() if scale is None else delta.A.float() * scale
        Qb, Rb = torch.linalg.qr(delta.B.float())
        Qa, Ra = torch.linalg.qr(A.T)
        u, s, vh = torch.linalg.svd(Rb @ Ra.T)
        U, Vh = Qb @ u, vh @ Qa.T
    else:
        M = delta.tensor.float() if scale is None else delta.tensor.float() * scale
        U, s, Vh = torch.linalg.svd(M, full_matrices=False)
    if scale is not None:
        Vh = Vh / scale
    return U, s, Vh


def from_svd(U: torch.Tensor, s: torch.Tensor, Vh: torch.Tensor, rank: int) -> LowRankDelta:
    """The rank-``rank`` truncation as factors B = U√S, A = √S·Vh."""
    root = s[:rank].sqrt()
    return LowRankDelta(A=(root[:, None] * Vh[:rank]).contiguous(), B=(U[:, :rank] * root).contiguous())
