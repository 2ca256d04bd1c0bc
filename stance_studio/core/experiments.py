"""The research report's comparisons, measured instead of judged by eye.

- :func:`compare_methods`: train one dataset with each training method (the report's
  five approaches by default) and measure every fully tuned delta on the probes.
- :func:`compare_policies`: train once, then extract the delta with each extraction
  policy and measure its size and retention (the size-against-retention curve; the
  report's "selective checkpointing" is ``top:2``).

Both are jobs (progress callback, cancel flag) that the GUI's experiments window and
the CLI run unchanged, and both return an
:class:`~stance_studio.core.experiment_result.ExperimentResult`. Each row is reported as soon as it is
measured, in a :class:`~stance_studio.core.jobs.MeasuredRow` report, so a table can fill in live.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

from stance_studio.core.blend import Blender
from stance_studio.core.capability import DEFAULT_TOKENS
from stance_studio.core.datasets import encode_example, load_probes
from stance_studio.core.holdout import split_dataset
from stance_studio.core.deltas import delta_bytes
from stance_studio.core.errors import PolicyError, TrainingDivergedError
from stance_studio.core.experiment_result import ExperimentResult
from stance_studio.core.extraction import DEFAULT_POLICY, extract, parse_policy
from stance_studio.core.jobs import CancelFlag, MeasuredRow, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.metrics import evaluate, retention_probe
from stance_studio.core.pipeline import validated_dataset
from stance_studio.core.steering_build import DEFAULT_BAND, SteerConfig, build_steering
from stance_studio.core.stance_reference import reference_from_dataset
from stance_studio.core.training import TrainConfig, train

# The candidates of the README's policy table: the report's Path 2 (top:2), more
# modules, every module at a fixed rank, spectral-energy and byte-budget truncation,
# and the compression terms (quantized factors, sign and scale, DARE) at 2 % and 1 %.
POLICY_CANDIDATES = (
    "top:2", "top:100", "rank:4", "rank:16+fp16", "rank:16+q4", "energy:0.8+fp16", "sign", "dare:0.9+fp16",
    "budget:0.02+fp16", "budget:0.02+q4+fp16", DEFAULT_POLICY, "budget:0.02+mixed+sign+fp16",
    "budget:0.01+fp16", "budget:0.01+mixed+sign+fp16", "budget:0.01+mixed+fp16", "all",
)


def report_methods(num_layers: int) -> list[tuple[str, TrainConfig]]:
    """The research report's five approaches, on this model (layers by depth)."""
    return [
        ("full", TrainConfig(method="full")),
        ("lora r8 q,v all layers", TrainConfig(method="lora", rank=8, modules=["q_proj", "v_proj"])),
        ("lora r32 one v_proj (depth 0.63)", TrainConfig(method="lora", rank=32, modules=["depth:0.63:v_proj"])),
        ("selective q,v at depth 0.53+0.63", TrainConfig(
            method="selective", modules=["depth:0.53:q_proj", "depth:0.53:v_proj", "depth:0.63:q_proj", "depth:0.63:v_proj"])),
        ("selective q,v at depth 0.63", TrainConfig(method="selective", modules=["depth:0.63:q_proj", "depth:0.63:v_proj"])),
        (f"steering ({SteerConfig.mode}, depth {DEFAULT_BAND})", SteerConfig()),
    ]


def _labelled(progress: ProgressCallback, label: str) -> ProgressCallback:
    """Forward a sub-job's reports with ``label`` in front of their message."""

    def report(p: Progress) -> None:
        progress(replace(p, message=f"{label}: {p.message}" if p.message else label))

    return report


def compare_methods(
    base,
    dataset,
    methods: Optional[Sequence[tuple[str, TrainConfig]]] = None,
    probes: Optional[Sequence[str]] = None,
    steps: Optional[int] = None,
    seed: int = 0,
    lr: Optional[float] = None,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    blender: Optional[Blender] = None,
    holdout: float = TrainConfig.holdout,
    base_generations=None,
    capability_tokens: int = DEFAULT_TOKENS,
) -> ExperimentResult:
    """Train every method on one dataset and measure each fully tuned delta: the
    report's comparison table. The first row is the base model itself. ``steps`` and
    ``lr``, when given, replace every method's own.

    Every method trains on the same seeded split (``holdout`` kept out); stance rate
    and stance fit score against the dataset itself, stance fit on its held-out part.
    ``base_generations``: base's answers to ``probes``, when already known;
    ``capability_tokens``: the capability text's budget (0 = skip).

    ``blender``: a view of ``base``'s stance runtime; the blend it shows is left
    as it is (training starts from the true base, metrics use per-row weights)."""
    cancel = ensure_flag(cancel)
    data = validated_dataset(base, dataset)
    split = split_dataset(data, holdout, seed)
    stance = reference_from_dataset(data, split.held_out_prompts or None)
    probes = list(probes) if probes is not None else load_probes()
    methods = list(methods) if methods is not None else report_methods(base.num_layers)
    total = len(methods) + 1
    blender = blender or Blender(base)
    rows: list[dict] = []
    progress(Progress("compare", 0, total, "Generating base answers"))
    base_metrics = evaluate(base, blender, [], probes, cancel=cancel, stance=stance,
                            capability_tokens=capability_tokens,
                            base_generations=base_generations, progress=_labelled(progress, "base"))
    row = {"method": "base", "trainable_params": 0, "seconds": 0.0, "nonfinite_steps": 0, "bytes": 0,
           **metric_fields(base_metrics)}
    rows.append(row)
    progress(Progress("compare", 1, total, "Measured base", partial=MeasuredRow(row)))
    for i, (label, config) in enumerate(methods, start=1):
        cancel.raise_if_set("comparison")
        if isinstance(config, SteerConfig):
            rows.append(_steering_row(base, split.train, label, replace(config, seed=seed), blender, probes,
                                      base_metrics, _labelled(progress, label), cancel,
                                      stance=stance, capability_tokens=capability_tokens))
            progress(Progress("compare", i + 1, total, f"Measured {label}", partial=MeasuredRow(rows[-1])))
            continue
        config = replace(config, seed=seed, holdout=holdout, **({"steps": steps} if steps is not None else {}),
                         **({"lr": lr} if lr is not None else {}))
        row = {"method": label, "config": config.as_json()}
        try:
            result = train(base, split.train, config, progress=_labelled(progress, label), cancel=cancel)
        except TrainingDivergedError as exc:
            row.update(trainable_params=None, seconds=None, nonfinite_steps=None, bytes=None,
                       stance_score=None, kl_to_base=None, identical_fraction=None, error=str(exc))
        else:
            metrics = evaluate(base, blender, [(result.deltas, 1.0)], probes, cancel=cancel, stance=stance,
                               capability_tokens=capability_tokens,
                               base_generations=base_metrics.generations, progress=_labelled(progress, label))
            row.update(trainable_params=result.trainable_params, seconds=result.seconds,
                       nonfinite_steps=result.nonfinite_steps, bytes=delta_bytes(result.deltas),
                       final_loss=result.final_loss, **metric_fields(metrics))
        rows.append(row)
        progress(Progress("compare", i + 1, total, f"Measured {label}", partial=MeasuredRow(row)))
    return ExperimentResult("methods", rows, runs=[{"seed": seed, "rows": rows}])


def _steering_row(base, data, label, config, blender, probes, base_metrics, progress, cancel, **measure) -> dict:
    """The steering method's row: vectors built from the training split (no training),
    applied at weight 1 and measured like the trained rows."""
    ckpt = build_steering(base, data, "steering", config, progress=progress, cancel=cancel)
    metrics = evaluate(base, blender, [(ckpt, 1.0)], probes, cancel=cancel, **measure,
                       base_generations=base_metrics.generations, progress=progress)
    return {"method": label, "config": config.as_json(), "trainable_params": 0,
            "seconds": ckpt.training["seconds"], "nonfinite_steps": 0, "bytes": ckpt.nbytes, "final_loss": None,
            **metric_fields(metrics)}


# The figures of a variant that experiment tables show (with their intervals).
METRIC_KEYS = ("stance_rate", "stance_rate_strict", "looping_fraction", "stance_fit_nats", "stance_score",
               "hedges_per_100w", "boosters_per_100w", "kl_to_base", "identical_fraction", "capability_change")


def metric_fields(m) -> dict:
    """A :class:`~stance_studio.core.metrics.VariantMetrics` as flat row fields."""
    doc = m.as_json()
    out = {key: doc.get(key) for key in METRIC_KEYS if key in doc}
    for key in list(out):  # each figure's interval as <key>_ci95 (stance fit's is stance_fit_ci95 in evaluate)
        ci = doc.get("stance_fit_ci95") if key == "stance_fit_nats" else doc.get(f"{key}_ci95")
        if ci is not None:
            out[f"{key}_ci95"] = ci
    out["stance_rate_reliable"] = doc.get("stance_rate_reliable")
    out["classifier_accuracy"] = doc.get("classifier_accuracy")
    capability = doc.get("capability")
    if capability:
        out["capability_change"] = capability["change"]
        out["capability_change_ci95"] = capability["change_ci95"]
        out["perplexity"] = capability["perplexity"]
    out["sample"] = m.generations[0].text if m.generations else ""
    return out


def parse_policies(texts: Sequence[str]) -> list[str]:
    """Validate a list of extraction policies (duplicates dropped, order kept)."""
    out: list[str] = []
    for text in texts:
        policy = parse_policy(text)
        if policy.text not in out:
            out.append(policy.text)
    if not out:
        raise PolicyError("Name at least one extraction policy to compare.")
    return out


def compare_policies(
    base,
    dataset,
    policies: Sequence[str] = POLICY_CANDIDATES,
    config: TrainConfig = TrainConfig(),
    probes: Optional[Sequence[str]] = None,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    blender: Optional[Blender] = None,
) -> ExperimentResult:
    """Train ``dataset`` once with ``config``, then extract the delta with each policy
    and measure its retention (DESIGN.md's definition) and bytes.

    Returns the ``training`` record, ``base_model_bytes`` and the ``rows``; each row has
    ``policy``, ``modules``, ``bytes``, ``fraction_of_base``, ``bits_per_weight`` and
    ``retention``, or
    ``error`` where the policy cannot be applied to this model.
    """
    cancel = ensure_flag(cancel)
    policies = parse_policies(policies)
    data = validated_dataset(base, dataset)
    probes = list(probes) if probes is not None else load_probes()
    blender = blender or Blender(base)
    base_bytes = base.parameter_bytes()
    split = split_dataset(data, config.holdout, config.seed)
    result = train(base, split.train, config, progress=_labelled(progress, "training"), cancel=cancel,
                   keep_model=True)
    calibration = [encode_example(base.tokenizer, ex)[0] for ex in split.train.examples]
    tuned_model, result.model = result.model, None  # measuring alone holds the trained copy
    measured = measure_policies(base, result.deltas, policies, probes, calibration, progress, cancel, blender,
                                tuned_model=tuned_model)
    del tuned_model
    training = {"dataset": data.name, "method": config.method, "steps": result.steps,
                "seconds": result.seconds, "final_loss": result.final_loss,
                "nonfinite_steps": result.nonfinite_steps, "full_delta_bytes": delta_bytes(result.deltas),
                "ll_base": measured["ll_base"], "ll_tuned": measured["ll_tuned"]}
    run = {"seed": config.seed, "training": training, "base_model_bytes": base_bytes, "rows": measured["rows"]}
    return ExperimentResult("policies", measured["rows"], runs=[run], training=training, base_model_bytes=base_bytes)


def measure_policies(
    base,
    deltas,
    policies: Sequence[str],
    probes: Sequence[str],
    calibration=None,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    blender: Optional[Blender] = None,
    tuned_model=None,
) -> dict:
    """Extract one fully tuned delta with each policy and measure retention, bytes and
    bits per touched weight: ``{"ll_base", "ll_tuned", "rows"}``. ``calibration``: the
    training examples as token ids (for ``aware`` and ``sign``). ``tuned_model``: the
    trained copy, if kept: the tuned model's answers and every candidate then run as
    plain weights in it (:mod:`~stance_studio.core.tuned_copy`), not at runtime."""
    cancel = ensure_flag(cancel)
    blender = blender or Blender(base)
    base_bytes = base.parameter_bytes()
    total = len(policies) + 1
    progress(Progress("compare", 0, total, f"Measuring the tuned model on {len(probes)} probe prompts"))
    probe = retention_probe(base, blender, deltas, probes, cancel=cancel, tuned_model=tuned_model)
    progress(Progress("compare", 1, total, "Measured the tuned model"))
    rows: list[dict] = []
    cache: dict = {}
    for i, text in enumerate(policies, start=1):
        cancel.raise_if_set("comparison")
        try:
            kept, info = extract(deltas, base, text, cancel=cancel, calibration=calibration, cache=cache)
        except PolicyError as exc:  # e.g. a byte budget too small for this model
            row = {"policy": text, "modules": None, "bytes": None, "fraction_of_base": None,
                   "bits_per_weight": None, "retention": None, "default": text == DEFAULT_POLICY,
                   "error": str(exc)}
        else:
            row = {"policy": text, "modules": len(kept), "bytes": info["bytes"],
                   "fraction_of_base": info["bytes"] / base_bytes, "bits_per_weight": info["bits_per_weight"],
                   "representations": info["representations"],
                   "retention": probe.measure(base, blender, kept, cancel=cancel, tuned_deltas=deltas,
                                              tuned_model=tuned_model),
                   "default": text == DEFAULT_POLICY}
        rows.append(row)
        progress(Progress("compare", i + 1, total, f"Measured {text}", partial=MeasuredRow(row)))
    return {"ll_base": probe.ll_base, "ll_tuned": probe.ll_tuned, "rows": rows}
