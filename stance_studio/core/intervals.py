"""Uncertainty: 95 % bootstrap intervals over items (probes, held-out examples, text
chunks) and mean ± spread over repeated runs (seeds).

One resampling scheme for every metric: draw the items with replacement
``resamples`` times with a fixed seed and take the 2.5th and 97.5th percentiles of
the statistic (the percentile bootstrap). A ratio metric (markers per word, nats per
token) resamples numerator and denominator together.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(stats: np.ndarray, level: float) -> list[float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(stats, [tail, 100 - tail])
    return [float(lo), float(hi)]


def mean_ci(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0,
            level: float = LEVEL) -> Optional[list[float]]:
    """Bootstrap interval of the mean of ``values``; None with no values."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None
    if x.size == 1:
        return [float(x[0]), float(x[0])]
    return _percentiles(x[_indices(x.size, resamples, seed)].mean(axis=1), level)


def ratio_ci(numerators: Sequence[float], denominators: Sequence[float], resamples: int = RESAMPLES,
             seed: int = 0, level: float = LEVEL, scale: float = 1.0) -> Optional[list[float]]:
    """Bootstrap interval of ``scale · Σ num / Σ den`` over items (pairs kept together)."""
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if num.size == 0 or den.sum() <= 0:
        return None
    idx = _indices(num.size, resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = scale * num[idx].sum(axis=1) / den[idx].sum(axis=1)
    return _percentiles(stats, level)


def ratio(numerators: Sequence[float], denominators: Sequence[float], scale: float = 1.0) -> Optional[float]:
    den = float(np.sum(denominators))
    return scale * float(np.sum(numerators)) / den if den > 0 else None


def mean_spread(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation of the finite values (spread 0 for one run,
    None for none): how much a figure moves from seed to seed."""
    x = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not x:
        return None, None
    mean = sum(x) / len(x)
    if len(x) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in x) / (len(x) - 1))


def overlap(a: Optional[Sequence[float]], b: Optional[Sequence[float]]) -> bool:
    """Whether two intervals share any value (None counts as overlapping: unknown)."""
    if a is None or b is None:
        return True
    return not (a[1] < b[0] or b[1] < a[0])
