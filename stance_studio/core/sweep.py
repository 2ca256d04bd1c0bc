"""Dose–response: a variant's metrics measured across blend weights.

A sweep scales one or two *directions* (a stance, or a blend such as
``a=1,b=-0.5``) by the weights of its axes: a 1-D sweep measures α·direction for
each α; a grid measures α·A + β·B for every (α, β), α outer, β inner. Every point
is measured by the one :func:`~stance_studio.core.metrics.evaluate`, so each row
carries every key its ``as_json()`` has; base answers are generated once and reused
(they never change). Rows are reported as measured, each in a
:class:`~stance_studio.core.jobs.MeasuredRow` report.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Optional, Sequence

from stance_studio.core.checkpoints import StanceCheckpoint
from stance_studio.core.errors import SweepRangeError
from stance_studio.core.generation import generate_many
from stance_studio.core.jobs import CancelFlag, MeasuredRow, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.metrics import EVAL_SETTINGS, evaluate
from stance_studio.core.stance_reference import own_stance
from stance_studio.core.variants import MAX_WEIGHT, check_weight

AXES = ("alpha", "beta")
# The default weights: a 1-D sweep goes from the stance's negation to twice the
# stance; a grid covers each stance from its negation to itself (5 × 5 points).
DEFAULT_ALPHAS = "-1:2:0.25"
DEFAULT_GRID = "-1:1:0.5"
MAX_POINTS = 401
MIN_STEP = 1e-9  # points are rounded to 10 decimals, so a finer step would repeat them

Direction = Sequence[tuple[Any, float]]  # (checkpoint or delta map, weight) pairs


def parse_range(text: str) -> list[float]:
    """Weights from ``LO:HI:STEP`` (both ends included when the step lands on HI),
    a comma list ``0,0.5,1`` or one number."""
    raw = str(text).strip()
    shown = repr(raw) if len(raw) <= 60 else repr(raw[:57] + "…")
    hint = "write LO:HI:STEP (e.g. -1:2:0.25), a list (0,0.5,1) or one number"
    try:
        if ":" in raw:
            parts = [float(p) for p in raw.split(":")]
            if len(parts) != 3:
                raise ValueError
            lo, hi, step = parts
            _check_finite((lo, hi, step), shown)
            if step <= 0:
                raise SweepRangeError(f"The step of weights {shown} must be positive; {hint}.")
            if step < MIN_STEP:
                raise SweepRangeError(f"The step of weights {shown} is {step:g}; the finest step a sweep takes is "
                                      f"{MIN_STEP:g}.")
            if hi < lo:
                raise SweepRangeError(f"Weights {shown} run from {lo:g} down to {hi:g}; put the lower end first.")
            count = math.floor((hi - lo) / step + 1e-9) + 1
            if count > MAX_POINTS:
                raise SweepRangeError(f"Weights {shown} make {count} points; at most {MAX_POINTS} are allowed.")
            values = [round(lo + i * step, 10) for i in range(count)]
        else:
            values = [float(p) for p in raw.split(",") if p.strip()]
            _check_finite(values, shown)
    except ValueError:
        raise SweepRangeError(f"Cannot read weights {shown}; {hint}.") from None
    if not values:
        raise SweepRangeError(f"Weights {shown} name no point; {hint}.")
    if len(values) > MAX_POINTS:
        raise SweepRangeError(f"Weights {shown} make {len(values)} points; at most {MAX_POINTS} are allowed.")
    if len(set(values)) != len(values):
        raise SweepRangeError(f"Weights {shown} name a point twice.")
    return values


def _check_finite(values, shown: str) -> None:
    for v in values:
        if not math.isfinite(v) or abs(v) > MAX_WEIGHT:
            raise SweepRangeError(f"Weights {shown} must be finite numbers between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}.")


def _label(source, index: int) -> str:
    return source.name if isinstance(source, StanceCheckpoint) else f"delta{index}"


def direction_label(direction: Direction) -> str:
    """A direction as a spec: ``curious`` or ``curious=1,confident=-0.5``."""
    terms = list(direction)
    if len(terms) == 1 and terms[0][1] == 1.0:
        return _label(terms[0][0], 0)
    return ",".join(f"{_label(src, i)}={w:g}" for i, (src, w) in enumerate(terms))


def point_blend(directions: Sequence[Direction], coefficients: Sequence[float]) -> list[tuple[Any, float]]:
    """Σ_k c_k · direction_k as (source, weight) pairs, one per source."""
    weights: dict[int, list] = {}
    for direction, c in zip(directions, coefficients):
        for src, w in direction:
            entry = weights.setdefault(id(src), [src, 0.0])
            entry[1] += c * float(w)
    return [(src, round(w, 12)) for src, w in weights.values()]


def _spec(blend: list[tuple[Any, float]]) -> str:
    terms = [(src, w) for src, w in blend if w != 0.0]
    return ",".join(f"{_label(src, i)}={w:g}" for i, (src, w) in enumerate(terms)) or "base"


def run_sweep(
    base,
    blender,
    directions: Sequence[Direction],
    weights: Sequence[Sequence[float]],
    probes: Sequence[str],
    settings=EVAL_SETTINGS,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    allow_mismatch: bool = False,
    evaluate_options: Optional[dict] = None,
) -> dict:
    """Measure every point of the product of ``weights`` (one list per direction).

    Returns ``{"axes", "directions", "weights", "probes", "rows"}``; each row has one
    key per axis (``alpha``, ``beta``), ``variant`` (the blend measured) and every
    key of the evaluation (answers reduced to the first one, ``sample``).
    """
    if not 1 <= len(directions) <= len(AXES) or len(weights) != len(directions):
        raise SweepRangeError(f"A sweep has one or two directions, each with its weights; got {len(directions)}.")
    if not probes:
        raise SweepRangeError("A sweep needs at least one probe prompt.")
    cancel = ensure_flag(cancel)
    axes = AXES[: len(directions)]
    points = list(itertools.product(*[list(w) for w in weights]))
    for direction in directions:
        for src, _ in direction:
            blender.check(src, allow_mismatch=allow_mismatch)
    blends = [point_blend(directions, point) for point in points]
    for blend in blends:  # every point's weights are valid blend weights, checked before any work
        for i, (src, w) in enumerate(blend):
            check_weight(w, repr(_label(src, i)))
    total = len(points) + 1
    options = dict(evaluate_options or {})
    if "stance" not in options:  # scored against the first direction's own stance
        options["stance"] = own_stance([term for direction in directions for term in direction], strict=False)
    rows: list[dict] = []
    with blender.runtime.scoped([]):  # in this job only: the blend shown stays as it is
        progress(Progress("sweep", 0, total, f"Generating base answers to {len(probes)} probe prompts"))
        base_gens = generate_many(base, probes, settings, cancel=cancel)
        for i, (point, blend) in enumerate(zip(points, blends), start=1):
            cancel.raise_if_set("sweep")
            where = ", ".join(f"{a} = {c:g}" for a, c in zip(axes, point))
            progress(Progress("sweep", i, total, f"Measuring {where}"))
            metrics = evaluate(base, blender, blend, probes, settings, cancel=cancel, allow_mismatch=allow_mismatch,
                               base_generations=base_gens, progress=_within(progress, i, total, where),
                               **options)
            row = {**dict(zip(axes, point)), "variant": _spec(blend), **_row_metrics(metrics.as_json())}
            rows.append(row)
            progress(Progress("sweep", i + 1, total, f"Measured {where}", partial=MeasuredRow(row)))
    return {"axes": list(axes), "directions": [direction_label(d) for d in directions],
            "weights": [list(w) for w in weights], "probes": len(probes), "rows": rows}


def _within(progress: ProgressCallback, done: int, total: int, where: str) -> ProgressCallback:
    """Forward one point's evaluation reports as sweep progress (one bar, one stage)."""

    def report(p: Progress) -> None:
        progress(Progress("sweep", done, total, f"{where}: {p.message}" if p.message else where))

    return report


def _row_metrics(doc: dict) -> dict:
    out = {k: v for k, v in doc.items() if k != "samples"}
    samples = doc.get("samples") or []
    out["sample"] = samples[0]["text"] if samples else ""
    return out
