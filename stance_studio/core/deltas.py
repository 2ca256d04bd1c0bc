"""Weight deltas: what a stance changes in a base model.

A delta maps a full parameter name (``model.layers.3.self_attn.q_proj.weight``) to
either a :class:`DenseDelta` (same shape as the parameter) or a
:class:`LowRankDelta` (``B @ A`` with ``A`` r × in and ``B`` out × r). Either may
carry ``packed``: the quantized or sparse form it is stored in (core/packing.py);
its tensors then hold the decoded values, and its size is the packed size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import torch


@dataclass(frozen=True)
class DenseDelta:
    """A full-size delta tensor. ``truncated_rank`` records the rank of a truncated
    delta stored dense because its factors would take more bytes."""

    tensor: torch.Tensor
    truncated_rank: Optional[int] = None
    packed: Optional[Any] = field(default=None, compare=False, repr=False)  # a core.packing.Packed

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def nbytes(self) -> int:
        if self.packed is not None:
            return self.packed.nbytes
        return self.tensor.numel() * self.tensor.element_size()

    @property
    def rank(self) -> int | None:
        return self.truncated_rank

    def materialize(self) -> torch.Tensor:
        return self.tensor.float()


@dataclass(frozen=True)
class LowRankDelta:
    """A factorised delta ``B @ A`` (``A``: r × in, ``B``: out × r)."""

    A: torch.Tensor
    B: torch.Tensor
    packed: Optional[Any] = field(default=None, compare=False, repr=False)  # a core.packing.Packed

    def __post_init__(self) -> None:
        if self.A.dim() != 2 or self.B.dim() != 2 or self.A.shape[0] != self.B.shape[1]:
            raise ValueError(
                f"low-rank factors do not fit: A is {tuple(self.A.shape)}, "
                f"B is {tuple(self.B.shape)} (need A r×in and B out×r)"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.B.shape[0], self.A.shape[1])

    @property
    def nbytes(self) -> int:
        if self.packed is not None:
            return self.packed.nbytes
        return self.A.numel() * self.A.element_size() + self.B.numel() * self.B.element_size()

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def materialize(self) -> torch.Tensor:
        return self.B.float() @ self.A.float()


Delta = Union[DenseDelta, LowRankDelta]
DeltaMap = Mapping[str, Delta]


def delta_bytes(deltas: DeltaMap) -> int:
    """Bytes the tensors of a delta map take (as stored)."""
    return sum(d.nbytes for d in deltas.values())


def bits_per_weight(deltas: DeltaMap) -> float:
    """Stored bits per weight of the parameters the deltas touch (0 for none)."""
    weights = sum(_numel(d.shape) for d in deltas.values())
    return 8 * delta_bytes(deltas) / weights if weights else 0.0


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def is_finite(delta: Delta) -> bool:
    if isinstance(delta, DenseDelta):
        return bool(torch.isfinite(delta.tensor).all())
    return bool(torch.isfinite(delta.A).all() and torch.isfinite(delta.B).all())


def dense_deltas(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor]) -> dict[str, DenseDelta]:
    """``tuned - base`` for every parameter that changed (exactly), as float32."""
    out: dict[str, DenseDelta] = {}
    for name, w0 in base.items():
        w1 = tuned[name]
        if w0.dtype != w1.dtype:  # a float32 copy trained from a bf16/fp16 base
            w0 = w0.float()
            w1 = w1.float()
        if not torch.equal(w0, w1):
            out[name] = DenseDelta((w1.detach().float() - w0.detach().float()).contiguous())
    return out


def svd_factors(delta: Delta, scale: Optional[torch.Tensor] = None):
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
        U, s, Vh = gram_svd(M)
    if scale is not None:
        Vh = Vh / scale
    return U, s, Vh


def gram_svd(M: torch.Tensor):
    """The thin SVD of a 2-D float matrix (U, S, Vh as ``torch.linalg.svd``), from the
    eigendecomposition of its smaller Gram matrix in float64: several times faster than
    LAPACK's SVD on a CPU for the matrices of a model, and as accurate for every
    direction holding more than ~1e-16 of the matrix's energy (below that, the
    singular value reads 0 and its vectors are zero)."""
    X = M.double()
    wide = X.shape[0] < X.shape[1]
    if wide:
        X = X.T
    if X.shape[1] == 0:
        return (M.new_zeros(M.shape[0], 0), M.new_zeros(0), M.new_zeros(0, M.shape[1]))
    gram = X.T @ X
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few hundred rows: one thread is fastest, and contention cannot stall it
    try:
        lam, V = torch.linalg.eigh(gram)
    finally:
        torch.set_num_threads(threads)
    lam, V = lam.flip(0).clamp_min(0), V.flip(1)  # largest first
    s = lam.sqrt()
    live = s > s[0] * 1e-8  # where s² is resolved above the Gram matrix's rounding
    U = torch.where(live, X @ V / torch.where(live, s, torch.ones_like(s)), torch.zeros((), dtype=X.dtype))
    s = torch.where(live, s, torch.zeros((), dtype=s.dtype))
    if wide:
        U, V = V * live, U
    dtype = M.dtype if M.is_floating_point() else torch.float32
    return U.to(dtype).contiguous(), s.to(dtype), V.T.to(dtype).contiguous()


def factors_from_svd(U: torch.Tensor, s: torch.Tensor, Vh: torch.Tensor, rank: int) -> LowRankDelta:
    """The rank-``rank`` truncation as factors B = U√S, A = √S·Vh."""
    root = s[:rank].sqrt()
    return LowRankDelta(A=(root[:, None] * Vh[:rank]).contiguous(), B=(U[:, :rank] * root).contiguous())


def truncate_rank(delta: torch.Tensor, rank: int) -> LowRankDelta:
    """Best rank-``rank`` approximation of a 2-D delta (truncated SVD), as factors."""
    if delta.dim() != 2:
        raise ValueError("only 2-D deltas can be factorised")
    U, S, Vh = svd_factors(DenseDelta(delta))
    return factors_from_svd(U, S, Vh, max(1, min(rank, S.numel())))
