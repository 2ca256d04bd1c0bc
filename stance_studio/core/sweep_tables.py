"""How sweep rows read: which metrics a dose–response plot shows (with their 95 %
intervals where the evaluation reports them), and the sweep's table columns, shared
by the app's window, its exports and the command line.

Columns follow the rows: every numeric key the evaluation reports becomes a column,
so metrics added to :func:`~stance_studio.core.metrics.evaluate` appear unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from stance_studio.core.experiment_tables import UNCERTAIN, Column, _num, value_at
from stance_studio.core.stance_classifier import RELIABLE_ACCURACY

# What a dose–response plot shows, in order: each entry lists the metric to use and
# the fallback used (and labelled as such) when the evaluation does not report it.
PLOTS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("stance_rate", "stance rate (share of answers in the stance)"),
     ("stance_score", "marker score (hedges − boosters per 100 words)")),
    (("stance_fit_nats", "stance fit (nats per token over base)"),),
    (("capability.change", "capability cost (perplexity change over base)"),
     ("kl_to_base", "KL to base (nats per token)")),
)

_FORMATS = {
    "stance_rate": ".3f", "stance_rate_strict": ".3f", "looping_fraction": ".0%", "classifier_accuracy": ".2f", "stance_fit_nats": "+.3f", "stance_score": "+.2f",
    "hedges_per_100w": ".2f", "boosters_per_100w": ".2f", "kl_to_base": ".4f", "identical_fraction": ".0%",
}
_LABELS = {
    "stance_rate": "stance rate", "stance_rate_strict": "strict stance rate", "looping_fraction": "looping answers",
    "classifier_accuracy": "classifier accuracy", "stance_fit_nats": "stance fit (nats)",
    "stance_score": "marker score", "hedges_per_100w": "hedges /100w", "boosters_per_100w": "boosters /100w",
    "kl_to_base": "KL to base", "identical_fraction": "identical to base", "capability.change": "capability change",
}
_FIRST = ("stance_rate", "stance_rate_strict", "looping_fraction", "stance_fit_nats", "capability.change", "stance_score", "kl_to_base", "identical_fraction")


def value(row: dict, key: str) -> Optional[float]:
    """The finite number at ``key`` (dotted for nested values), else None."""
    x = value_at(row, key)
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def interval(row: dict, key: str) -> Optional[tuple[float, float]]:
    """The 95 % interval reported next to ``key`` (``key_ci95``: [low, high]), else None."""
    ci = value_at(row, f"{key}_ci95")
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return None
    if not all(isinstance(c, (int, float)) and math.isfinite(c) for c in ci):
        return None
    return float(ci[0]), float(ci[1])


def plotted(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """(key, label) of each plotted quantity the rows report: the preferred metric
    where present, its labelled fallback otherwise."""
    out = []
    for options in PLOTS:
        for key, label in options:
            if any(value(r, key) is not None for r in rows):
                if key == "stance_rate" and any(r.get("stance_rate_reliable") is False for r in rows):
                    label += f": unreliable, classifier accuracy below {RELIABLE_ACCURACY:g}"
                out.append((key, label))
                break
    return out


def numeric_keys(rows: Sequence[dict], skip: Sequence[str] = ()) -> list[str]:
    """Every key (nested dicts flattened one level, ``capability.change``) holding a
    number in some row, the plotted metrics first."""
    seen: list[str] = []
    for row in rows:
        for key, x in row.items():
            subs = [(f"{key}.{k}", v) for k, v in x.items()] if isinstance(x, dict) else [(key, x)]
            for name, v in subs:
                if name not in seen and name not in skip and isinstance(v, (int, float)) and not isinstance(v, bool):
                    seen.append(name)
    first = [k for k in _FIRST if k in seen]
    return first + [k for k in seen if k not in first]


def short_label(key: str) -> str:
    """A few words for an axis or a column header."""
    return _LABELS.get(key, key.replace("_", " ").replace(".", " "))


def label(key: str) -> str:
    """The metric's full description (plot titles, menus)."""
    for options in PLOTS:
        for k, text in options:
            if k == key:
                return text
    return _LABELS.get(key, key.replace("_", " ").replace(".", " "))


def _ci(x: Any) -> str:
    if not isinstance(x, (list, tuple)) or len(x) != 2 or not all(isinstance(c, (int, float)) for c in x):
        return "–"
    return f"[{x[0]:.3g}, {x[1]:.3g}]"


def columns(rows: Sequence[dict], axes: Sequence[str]) -> list[Column]:
    """The sweep table: one column per axis, the blend measured, then every metric
    (each followed by its 95 % interval where the rows carry one)."""
    cols: list[Column] = [(a, "α" if a == "alpha" else "β" if a == "beta" else a, _num("+.3g")) for a in axes]
    cols.append(("variant", "variant", str))
    for key in numeric_keys(rows, skip=list(axes)):
        cols.append((key, _LABELS.get(key, key), _num(_FORMATS.get(key, ".4g"))))
        if key not in UNCERTAIN and any(interval(r, key) is not None for r in rows):  # else shown in the cell
            cols.append((f"{key}_ci95", "95 % interval", _ci))
    return cols


def grid_matrix(rows: Sequence[dict], key: str) -> tuple[list[float], list[float], list[list[Optional[float]]]]:
    """A grid sweep's ``key`` as a matrix: (α values, β values, m) with m[i][j] the
    value at (α_i, β_j), None where the point is missing or undefined."""
    alphas = sorted({r["alpha"] for r in rows if "alpha" in r})
    betas = sorted({r["beta"] for r in rows if "beta" in r})
    where = {(r.get("alpha"), r.get("beta")): value(r, key) for r in rows}
    return alphas, betas, [[where.get((a, b)) for b in betas] for a in alphas]
