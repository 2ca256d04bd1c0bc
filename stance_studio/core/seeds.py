"""Experiments repeated over seeds: ``compare-methods --seeds N`` and
``compare-policies --seeds N`` run the experiment with seeds S, S+1, … S+N−1 (the seed
sets the held-out split, the example order and initialisation) and report each
figure as mean ± spread (sample standard deviation over the seeds that succeeded).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

from stance_studio.core.blend import Blender
from stance_studio.core import experiments
from stance_studio.core.experiment_result import ExperimentResult
from stance_studio.core.experiments import METRIC_KEYS, _labelled, compare_methods, compare_policies
from stance_studio.core.generation import generate_many
from stance_studio.core.intervals import mean_spread
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.metrics import EVAL_SETTINGS
from stance_studio.core.errors import StanceStudioError
from stance_studio.core.training import TrainConfig, check_seed

MAX_SEEDS = 100  # each seed is a full training run of every row; more is a typo that never ends


def check_seeds(seeds: int, seed: int = 0, name: str = "The number of seeds") -> int:
    """``seeds`` when it is 1 … MAX_SEEDS and every seed of the run, ``seed`` …
    ``seed + seeds − 1``, is one torch can take; else an error naming the value
    (``name``: what the count is called where it was given, e.g. ``--seeds``)."""
    if not 1 <= seeds <= MAX_SEEDS:
        raise StanceStudioError(f"{name} must be from 1 to {MAX_SEEDS} (got {seeds}).")
    check_seed(seed)
    check_seed(seed + seeds - 1, f"The last seed (--seed {seed} + --seeds {seeds} - 1)")
    return seeds


_RUN_KEYS = ("trainable_params", "seconds", "nonfinite_steps", "bytes", "final_loss",
             "modules", "fraction_of_base", "retention", "classifier_accuracy")


def aggregate(runs: Sequence[Sequence[dict]], key: str) -> list[dict]:
    """One row per ``key`` value (in first-run order): each number is the mean over
    the runs where that row succeeded (a single run's rows are returned as they are), with ``<name>_spread`` its standard deviation
    and ``seeds`` how many runs it is over; a row that failed in every run keeps the
    first error."""
    labels: list = []
    for run in runs:
        for row in run:
            if row[key] not in labels:
                labels.append(row[key])
    out = []
    for label in labels:
        rows = [row for run in runs for row in run if row[key] == label]
        ok = [row for row in rows if not row.get("error")]
        merged = {key: label, "seeds": len(ok), "failed_seeds": len(rows) - len(ok)}
        if not ok:
            merged["error"] = rows[0].get("error", "failed")
            out.append(merged)
            continue
        for name in METRIC_KEYS + _RUN_KEYS:
            values = [row.get(name) for row in ok]
            if all(v is None for v in values):
                continue
            merged[name], merged[f"{name}_spread"] = mean_spread(values)
        reliable = [row.get("stance_rate_reliable") for row in ok if row.get("stance_rate_reliable") is not None]
        if reliable:
            merged["stance_rate_reliable"] = all(reliable)
        for flag in ("default",):
            if flag in ok[0]:
                merged[flag] = ok[0][flag]
        out.append(merged)
    return out


def compare_methods_seeds(base, dataset, seeds: int = 1, seed: int = 0, probes: Optional[Sequence[str]] = None,
                          progress: ProgressCallback = no_progress, cancel: Optional[CancelFlag] = None,
                          blender: Optional[Blender] = None, **kwargs) -> ExperimentResult:
    """``compare_methods`` for each of ``seeds`` seeds; ``{"rows": aggregated,
    "runs": [{"seed", "rows"}, …]}``. Base's answers are generated once."""
    cancel = ensure_flag(cancel)
    check_seeds(seeds, seed)
    probes = list(probes) if probes is not None else experiments.load_probes()
    blender = blender or Blender(base)
    with blender.runtime.scoped([]):  # the base's answers; the blend shown stays as it is
        base_gens = generate_many(base, probes, EVAL_SETTINGS, cancel=cancel)
    runs = []
    for k in range(seeds):
        label = f"seed {seed + k} ({k + 1}/{seeds})"
        result = compare_methods(base, dataset, probes=probes, seed=seed + k, progress=_labelled(progress, label),
                                 cancel=cancel, blender=blender, base_generations=base_gens, **kwargs)
        runs += result.runs
        progress(Progress("seeds", k + 1, seeds, f"Finished {label}"))
    rows = runs[0]["rows"] if seeds == 1 else aggregate([r["rows"] for r in runs], "method")
    return ExperimentResult("methods", rows, runs=runs)


def compare_policies_seeds(base, dataset, policies, config: TrainConfig = TrainConfig(), seeds: int = 1,
                           progress: ProgressCallback = no_progress, cancel: Optional[CancelFlag] = None,
                           **kwargs) -> ExperimentResult:
    """``compare_policies`` for seeds config.seed … config.seed + seeds − 1."""
    check_seeds(seeds, config.seed)
    runs = []
    for k in range(seeds):
        label = f"seed {config.seed + k} ({k + 1}/{seeds})"
        result = compare_policies(base, dataset, policies, replace(config, seed=config.seed + k),
                                  progress=_labelled(progress, label), cancel=cancel, **kwargs)
        runs += result.runs
    first = runs[0]
    rows = first["rows"] if seeds == 1 else aggregate([r["rows"] for r in runs], "policy")
    return ExperimentResult("policies", rows, runs=runs, training=first["training"],
                            base_model_bytes=first["base_model_bytes"])
