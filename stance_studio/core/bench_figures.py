"""What every ``stance-studio bench`` figure is made of: median timings and one
figure record (value, baseline measured in the same run, ratio, target)."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def figure(value: float, baseline: str, baseline_value: float, target: str, meets: bool, unit: str = "s",
           **details) -> dict:
    """One benchmark figure: the measured value, its baseline's value measured in the
    same run, their ratio (baseline / value: above 1, ours is faster or smaller),
    the target and whether it is met. Times also appear as ``seconds`` and
    ``baseline_seconds``."""
    out = {"value": value, "unit": unit, "baseline": baseline, "baseline_value": baseline_value,
           "ratio": baseline_value / value if value else None, "target": target, "meets_target": meets}
    if unit == "s":
        out.update(seconds=value, baseline_seconds=baseline_value)
    out.update(details)
    return out


def skipped(reason: str) -> dict:
    """A figure that does not apply to this model, with the reason."""
    return {"skipped": reason}


def is_tiny(model_spec) -> bool:
    from stance_studio.core.tiny import TINY

    return model_spec is not None and str(model_spec).split(":")[0] == TINY
