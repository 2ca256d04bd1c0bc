"""Whole jobs the GUI's training dialog and the CLI both run: train a stance into a
checkpoint in the library, and the report's method comparison, measured."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Optional, Sequence

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import StanceCheckpoint, make_checkpoint
from stance_studio.core.datasets import StanceDataset, check_context, encode_example, load_dataset, load_probes, model_context
from stance_studio.core.deltas import delta_bytes
from stance_studio.core.errors import LibraryError, TrainingDivergedError
from stance_studio.core.extraction import DEFAULT_POLICY, FILE_RESERVE_BYTES, extract, parse_policy
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.library import Library
from stance_studio.core.metrics import EVAL_SETTINGS, evaluate, retention_probe
from stance_studio.core.training import TrainConfig, train


def _dataset(base, dataset) -> StanceDataset:
    """A validated dataset whose every example fits ``base``'s context."""
    if isinstance(dataset, StanceDataset):
        check_context(dataset, base.tokenizer, model_context(base))
        return dataset
    return load_dataset(dataset, base.tokenizer, model_context(base))


def build_stance(
    base,
    dataset,
    name: str,
    config: TrainConfig = TrainConfig(),
    policy=DEFAULT_POLICY,
    library: Optional[Library] = None,
    probes: Optional[Sequence[str]] = None,
    blender: Optional[Blender] = None,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    overwrite: bool = False,
) -> StanceCheckpoint:
    """Train → extract → measure retention on the probes → save atomically.

    Nothing is written when the run is cancelled or diverges. Training starts from
    the base weights (any blend in force is set aside and put back afterwards).
    """
    cancel = ensure_flag(cancel)
    library = library or Library()
    policy = parse_policy(policy)
    target = library.path_for(name)
    if target.exists() and not overwrite:
        raise LibraryError(f"A stance named {name!r} already exists in {library.folder}; choose another name.")
    data = _dataset(base, dataset)
    probes = list(probes) if probes is not None else load_probes()
    blender = blender or Blender(base)
    previous = blender.active
    started = time.perf_counter()
    try:
        blender.reset()
        result = train(base, data, config, progress=progress, cancel=cancel)
        training = {
            "method": config.method,
            "hyperparameters": config.as_json(),
            "steps": result.steps,
            "lr": config.effective_lr,
            "loss": result.losses,
            "grad_norms": result.grad_norms,
            "nonfinite_steps": result.nonfinite_steps,
            "skipped_steps": result.nonfinite_steps,
            "trainable_params": result.trainable_params,
            "seconds": result.seconds,
            "full_delta_bytes": delta_bytes(result.deltas),
        }
        calibration = [encode_example(base.tokenizer, ex)[0] for ex in data.examples]
        # a byte budget covers the whole file, this record included
        reserve = FILE_RESERVE_BYTES + 2 * len(json.dumps(training))
        kept, info = extract(result.deltas, base, policy, progress=progress, cancel=cancel, calibration=calibration,
                             reserve_bytes=reserve)
        progress(Progress("measure", 0, 1, f"Measuring retention on {len(probes)} probe prompts"))
        probe = retention_probe(base, blender, result.deltas, probes, cancel=cancel)
        kept_retention = probe.measure(base, blender, kept, cancel=cancel)
        hedges, boosters = probe.tuned_rates
        progress(Progress("measure", 1, 1, f"Retention {kept_retention:.3f}"))
        cancel.raise_if_set("training")
        ckpt = make_checkpoint(
            name,
            kept,
            base,
            stance={"description": data.description, "dataset": str(data.path), "dataset_name": data.name,
                    "dataset_hash": data.sha256, "examples": len(data)},
            training=training,
            extraction=info,
            metrics={
                "retention": kept_retention,
                "probes": len(probes),
                "max_new_tokens": EVAL_SETTINGS.max_new_tokens,
                "ll_base": probe.ll_base,
                "ll_tuned": probe.ll_tuned,
                "tuned_kl_to_base": probe.kl_tuned_to_base,
                "tuned_hedges_per_100w": hedges,
                "tuned_boosters_per_100w": boosters,
                "tuned_stance_score": hedges - boosters,
                "base_model_bytes": base.parameter_bytes(),
                "seconds_total": time.perf_counter() - started,
            },
        )
        library.save(ckpt, overwrite=overwrite)
        return ckpt
    finally:
        blender.apply(previous, allow_mismatch=True)


def report_methods(num_layers: int) -> list[tuple[str, TrainConfig]]:
    """The research report's five approaches, on this model (layers by depth)."""
    return [
        ("full", TrainConfig(method="full")),
        ("lora r8 q,v all layers", TrainConfig(method="lora", rank=8, modules=["q_proj", "v_proj"])),
        ("lora r32 one v_proj (depth 0.63)", TrainConfig(method="lora", rank=32, modules=["depth:0.63:v_proj"])),
        ("selective q,v at depth 0.53+0.63", TrainConfig(
            method="selective", modules=["depth:0.53:q_proj", "depth:0.53:v_proj", "depth:0.63:q_proj", "depth:0.63:v_proj"])),
        ("selective q,v at depth 0.63", TrainConfig(method="selective", modules=["depth:0.63:q_proj", "depth:0.63:v_proj"])),
    ]


def compare_methods(
    base,
    dataset,
    methods: Optional[Sequence[tuple[str, TrainConfig]]] = None,
    probes: Optional[Sequence[str]] = None,
    steps: Optional[int] = None,
    seed: int = 0,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
) -> list[dict]:
    """Train every method on one dataset and measure each fully tuned delta: the
    report's comparison table, measured instead of judged by eye."""
    cancel = ensure_flag(cancel)
    data = _dataset(base, dataset)
    probes = list(probes) if probes is not None else load_probes()
    methods = list(methods) if methods is not None else report_methods(base.num_layers)
    blender = Blender(base)
    previous = blender.active
    rows: list[dict] = []
    try:
        blender.reset()
        progress(Progress("compare", 0, len(methods) + 1, "Generating base answers"))
        base_metrics = evaluate(base, blender, [], probes, cancel=cancel)
        rows.append({"method": "base", "trainable_params": 0, "seconds": 0.0, "nonfinite_steps": 0, "bytes": 0,
                     **_metric_fields(base_metrics)})
        for i, (label, config) in enumerate(methods, start=1):
            cancel.raise_if_set("comparison")
            config = replace(config, seed=seed, **({"steps": steps} if steps else {}))
            progress(Progress("compare", i, len(methods) + 1, f"Training {label}"))
            row = {"method": label, "config": config.as_json()}
            try:
                result = train(base, data, config, cancel=cancel)
            except TrainingDivergedError as exc:
                row.update(trainable_params=None, seconds=None, nonfinite_steps=None, bytes=None,
                           stance_score=None, kl_to_base=None, identical_fraction=None, error=str(exc))
                rows.append(row)
                continue
            metrics = evaluate(base, blender, [(result.deltas, 1.0)], probes, cancel=cancel,
                               base_generations=base_metrics.generations)
            row.update(trainable_params=result.trainable_params, seconds=result.seconds,
                       nonfinite_steps=result.nonfinite_steps, bytes=delta_bytes(result.deltas),
                       final_loss=result.final_loss, **_metric_fields(metrics))
            rows.append(row)
        progress(Progress("compare", len(methods) + 1, len(methods) + 1, "Done"))
        return rows
    finally:
        blender.apply(previous, allow_mismatch=True)


def _metric_fields(m) -> dict:
    return {"stance_score": m.stance_score, "hedges_per_100w": m.hedges_per_100w,
            "boosters_per_100w": m.boosters_per_100w, "kl_to_base": m.kl_to_base,
            "identical_fraction": m.identical_fraction,
            "sample": m.generations[0].text if m.generations else ""}
