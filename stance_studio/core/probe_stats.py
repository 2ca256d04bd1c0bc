"""Per-probe values of the generation metrics, their 95 % intervals over probes and
their breakdown by probe category.

Every rate is pooled the same way with or without resampling: markers per 100 words
is Σ markers / Σ words, KL is Σ KL / Σ tokens, so an interval resamples whole probes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from stance_studio.core.intervals import mean_ci, ratio, ratio_ci


@dataclass
class PerProbe:
    """One entry per probe, in probe order."""

    hedges: list[int] = field(default_factory=list)
    boosters: list[int] = field(default_factory=list)
    words: list[int] = field(default_factory=list)
    kl_sums: list[float] = field(default_factory=list)
    kl_tokens: list[int] = field(default_factory=list)
    identical: list[int] = field(default_factory=list)
    stance: Optional[list[int]] = None  # 1 where the classifier assigned the answer to the stance

    def take(self, rows: Sequence[int]) -> "PerProbe":
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        return PerProbe(pick(self.hedges), pick(self.boosters), pick(self.words), pick(self.kl_sums),
                        pick(self.kl_tokens), pick(self.identical),
                        None if self.stance is None else pick(self.stance))


def point_values(p: PerProbe) -> dict:
    """The metrics of these probes (pooled as in the module docstring)."""
    score = [h - b for h, b in zip(p.hedges, p.boosters)]
    out = {
        "probes": len(p.identical),
        "hedges_per_100w": ratio(p.hedges, p.words, 100.0) or 0.0,
        "boosters_per_100w": ratio(p.boosters, p.words, 100.0) or 0.0,
        "stance_score": ratio(score, p.words, 100.0) or 0.0,
        "kl_to_base": max(ratio(p.kl_sums, p.kl_tokens) or 0.0, 0.0),
        "identical_fraction": sum(p.identical) / len(p.identical) if p.identical else 0.0,
    }
    if p.stance is not None:
        out["stance_rate"] = sum(p.stance) / len(p.stance) if p.stance else None
    return out


def intervals(p: PerProbe) -> dict:
    """``<metric>_ci95`` = [low, high] for each generation metric."""
    score = [h - b for h, b in zip(p.hedges, p.boosters)]
    out = {
        "hedges_per_100w_ci95": ratio_ci(p.hedges, p.words, scale=100.0),
        "boosters_per_100w_ci95": ratio_ci(p.boosters, p.words, scale=100.0),
        "stance_score_ci95": ratio_ci(score, p.words, scale=100.0),
        "kl_to_base_ci95": ratio_ci(p.kl_sums, p.kl_tokens),
        "identical_fraction_ci95": mean_ci(p.identical),
    }
    if out["kl_to_base_ci95"] is not None:
        out["kl_to_base_ci95"] = [max(x, 0.0) for x in out["kl_to_base_ci95"]]
    return out


def by_category(p: PerProbe, categories: Optional[Sequence[str]]) -> dict:
    """Point values (and the stance rate's interval) per probe category."""
    if not categories:
        return {}
    out: dict[str, dict] = {}
    for cat in dict.fromkeys(categories):
        rows = [i for i, c in enumerate(categories) if c == cat]
        sub = p.take(rows)
        values = point_values(sub)
        if sub.stance is not None:
            values["stance_rate_ci95"] = mean_ci(sub.stance)
        out[cat] = values
    return out
