"""What ``train`` measures after its steps, each thing computed once.

1. *answers*: the fully tuned model's greedy answers to the probes, generated once in
   wide batches by the trained copy itself (plain weights; no dense delta added to
   every module at runtime), keeping each token's scores: the tuned model's
   log-likelihood of its own answers needs no second pass;
2. *retention*: those answers scored under base (LL_base, KL(tuned ‖ base)) and under
   the kept checkpoint (LL_ckpt); the marker rates read the same answers;
3. *fit*: stance fit of the kept checkpoint on the held-out and the training examples
   in one pass, the base's half read from :mod:`~stance_studio.core.loglik_cache`.

No weight of the loaded model is written: base runs with no stance in force. Once
the answers are generated, the trained copy is no longer needed as the tuned model,
so the kept checkpoint is written into it (``W0 + Δ_kept`` from the exact base
tensors) and both checkpoint passes run it as plain weights; without a trained copy
the checkpoint runs at runtime on the loaded model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from stance_studio.core.datasets import Example
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.loglik_cache import base_logliks
from stance_studio.core.metrics import RetentionProbe, mean_loglik, retention_probe
from stance_studio.core.stance_fit import StanceFit, fit_from_logliks, response_logliks
from stance_studio.core.tuned_copy import kept_view


@dataclass
class TrainMeasurement:
    """Retention of the kept checkpoint, the tuned model's figures and stance fit."""

    retention: Optional[float]
    probe: RetentionProbe
    fit: Optional[StanceFit]  # on the held-out examples (None when none were held out)
    fit_train: Optional[StanceFit]  # on the training examples
    seconds: dict[str, float] = field(default_factory=dict)  # per phase


def measure_training(base, blender, tuned_deltas, kept, probes: Sequence[str], held_out: Sequence[Example],
                     trained: Sequence[Example], tuned_model=None, progress: ProgressCallback = no_progress,
                     cancel: Optional[CancelFlag] = None) -> TrainMeasurement:
    """Measure the kept delta ``kept`` of a training run whose full delta is
    ``tuned_deltas`` (``tuned_model``: the trained copy, when kept)."""
    cancel = ensure_flag(cancel)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    probe = retention_probe(base, blender, tuned_deltas, probes, cancel=cancel, tuned_model=tuned_model,
                            progress=_timed(progress, seconds, clock))
    cancel.between_steps()  # between phases, no stance scope is open: other short work may run
    progress(Progress("retention", 1, 2, "Scoring the tuned model's answers under the kept checkpoint"))
    kept_model, kept_scope = kept_view(base, blender, tuned_deltas, kept, tuned_model)
    retention = None
    if probe.retention_of(probe.ll_tuned) is not None:  # else the tuned model shows no shift to retain
        with kept_scope():
            retention = probe.retention_of(mean_loglik(kept_model, probe.generations, cancel=cancel,
                                                       share_prefix=True))
    cancel.between_steps()
    progress(Progress("retention", 2, 2, "Retention undefined: the tuned model is no closer to its answers than base"
                      if retention is None else f"Retention {retention:.3f}"))
    now = time.perf_counter()
    seconds["retention"] = now - clock - seconds.get("answers", 0.0)
    clock = now
    examples = list(held_out) + list(trained)
    progress(Progress("fit", 0, 1, f"Stance fit on {len(held_out)} held-out and {len(trained)} training examples"))
    fit = fit_train = None
    if examples:
        base_ll = base_logliks(base, blender, examples, cancel=cancel)
        cancel.between_steps()
        with kept_scope():
            kept_ll = response_logliks(kept_model, examples, cancel=cancel, share_prefix=True)
        h = len(held_out)
        fit = fit_from_logliks(kept_ll[:h], base_ll[:h]) if h else None
        fit_train = fit_from_logliks(kept_ll[h:], base_ll[h:]) if trained else None
    progress(Progress("fit", 1, 1, "Stance fit " + ("–" if fit is None or fit.nats is None else f"{fit.nats:+.3f}")
                      + " nats/token on the held-out examples"))
    seconds["fit"] = time.perf_counter() - clock
    return TrainMeasurement(retention, probe, fit, fit_train, seconds)


def _timed(progress: ProgressCallback, seconds: dict, started: float) -> ProgressCallback:
    """Forward reports; note when the answers are done (the end of that phase)."""

    def report(p: Progress) -> None:
        if p.stage == "answers" and p.total and p.done >= p.total:
            seconds["answers"] = time.perf_counter() - started
        progress(p)

    return report
