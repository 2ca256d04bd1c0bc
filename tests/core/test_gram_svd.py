"""The SVD extraction uses (from the Gram matrix) against LAPACK's."""

import pytest
import torch

from stance_studio.core.deltas import DenseDelta, gram_svd, svd_factors


@pytest.mark.parametrize("shape", [(48, 20), (20, 48), (33, 33), (1, 9), (9, 1)])
def test_gram_svd_matches_lapack(shape):
    gen = torch.Generator().manual_seed(0)
    # a spread spectrum, as a training delta has
    M = torch.randn(shape, generator=gen) @ torch.diag(torch.logspace(0, -3, shape[1]))
    U, s, Vh = gram_svd(M)
    ref = torch.linalg.svdvals(M.double())
    k = min(shape)
    assert U.shape == (shape[0], k) and s.shape == (k,) and Vh.shape == (k, shape[1])
    assert torch.allclose(s.double(), ref, atol=1e-6 * float(ref[0]))
    assert torch.allclose((U * s) @ Vh, M, atol=1e-5 * float(M.abs().max()))
    assert torch.allclose(U.T @ U, torch.eye(k), atol=1e-4) and torch.allclose(Vh @ Vh.T, torch.eye(k), atol=1e-4)
    # the best rank-r truncation is LAPACK's (same error)
    r = max(1, k // 3)
    Ul, sl, Vl = torch.linalg.svd(M, full_matrices=False)
    best = torch.linalg.norm(M - (Ul[:, :r] * sl[:r]) @ Vl[:r])
    assert float(torch.linalg.norm(M - (U[:, :r] * s[:r]) @ Vh[:r])) == pytest.approx(float(best), rel=1e-4, abs=1e-7)


def test_gram_svd_of_a_rank_deficient_and_a_zero_matrix():
    gen = torch.Generator().manual_seed(1)
    low = torch.randn(30, 2, generator=gen) @ torch.randn(2, 20, generator=gen)
    U, s, Vh = gram_svd(low)
    assert torch.all(s[2:] < 1e-5 * s[0]) and torch.all(s[:2] > 0.01 * s[0])  # float32 rounding is all that is left
    assert torch.isfinite(U).all() and torch.isfinite(Vh).all()
    assert torch.allclose((U * s) @ Vh, low, atol=1e-5)
    U, s, Vh = gram_svd(torch.zeros(5, 4))
    assert torch.all(s == 0) and torch.isfinite(U).all() and torch.isfinite(Vh).all()


def test_svd_factors_of_a_dense_delta_use_it():
    M = torch.randn(12, 7, generator=torch.Generator().manual_seed(2))
    U, s, Vh = svd_factors(DenseDelta(M))
    assert torch.allclose((U * s) @ Vh, M, atol=1e-5)
