"""The whole job the GUI's training dialog and the CLI both run: train a stance,
extract the kept delta, measure its retention and save it in the library."""

from __future__ import annotations

import json
import time
from typing import Optional, Sequence

from stance_studio.core import distributed
from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import StanceCheckpoint, make_checkpoint
from stance_studio.core.datasets import (StanceDataset, check_context, dataset_record, encode_example, load_dataset,
                                         model_context)
from stance_studio.core.deltas import delta_bytes
from stance_studio.core.extraction import DEFAULT_POLICY, FILE_RESERVE_BYTES, extract, parse_policy
from stance_studio.core.holdout import split_dataset
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.library import Library
from stance_studio.core.metrics import EVAL_SETTINGS
from stance_studio.core.probes import retention_probes
from stance_studio.core.train_measure import measure_training
from stance_studio.core.training import TrainConfig, train


def validated_dataset(base, dataset) -> StanceDataset:
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
) -> Optional[StanceCheckpoint]:
    """Hold out part of the dataset → train on the rest → extract → measure retention
    on the probes and stance fit on the held-out and training examples
    (:mod:`~stance_studio.core.train_measure`: each answer generated once) → save
    atomically. Progress stages: train, extract, answers, retention, fit, save.

    Nothing is written when the run is cancelled or diverges. Under a distributed
    launcher every rank trains and only rank 0 goes on (other ranks get ``None``). Training starts from
    the true base weights and measuring runs with per-row stance weights, so the
    blend shown stays shown throughout.
    """
    cancel = ensure_flag(cancel)
    library = library or Library()
    policy = parse_policy(policy)
    library.check_new_name(name, overwrite)
    library.check_writable()  # a read-only library fails now, not after the training
    data = validated_dataset(base, dataset)
    probes = list(probes) if probes is not None else retention_probes()
    split = split_dataset(data, config.holdout, config.seed)
    blender = blender or Blender(base)
    started = time.perf_counter()
    result = train(base, split.train, config, progress=progress, cancel=cancel, keep_model=True)
    if not distributed.is_main():
        return None  # under torchrun/accelerate, rank 0 alone extracts, measures and writes
    trained_at = time.perf_counter()
    training = {
        "method": config.method,
        "hyperparameters": config.as_json(),
        "steps": result.steps,
        "lr": config.effective_lr,
        "loss": result.losses,
        "grad_norms": result.grad_norms,
        "nonfinite_steps": result.nonfinite_steps,
        "skipped_steps": [step for step, loss in enumerate(result.losses, start=1) if loss is None],
        "trainable_params": result.trainable_params,
        "seconds": result.seconds,
        "full_delta_bytes": delta_bytes(result.deltas),
        "holdout": {"fraction": split.fraction, "seed": config.seed, "prompts": split.held_out_prompts},
    }
    if result.parallel:
        training["parallel"] = result.parallel
    calibration = [encode_example(base.tokenizer, ex)[0] for ex in split.train.examples]
    # a byte budget covers the whole file, this record included
    reserve = FILE_RESERVE_BYTES + 2 * len(json.dumps(training))
    kept, info = extract(result.deltas, base, policy, progress=progress, cancel=cancel, calibration=calibration,
                         reserve_bytes=reserve)
    extracted_at = time.perf_counter()
    cancel.between_steps()  # interactive work waits at most one phase, as between training steps
    tuned_model, result.model = result.model, None  # measuring alone holds the trained copy
    measured = measure_training(base, blender, result.deltas, kept, probes, split.held_out, split.train.examples,
                                tuned_model=tuned_model, progress=progress, cancel=cancel)
    del tuned_model
    probe, fit, fit_train = measured.probe, measured.fit, measured.fit_train
    hedges, boosters = probe.tuned_rates
    cancel.raise_if_set("training")
    progress(Progress("save", 0, 1, f"Saving {name} to {library.folder}"))
    seconds_total = time.perf_counter() - started
    ckpt = make_checkpoint(
        name,
        kept,
        base,
        stance={"description": data.description, "dataset": dataset_record(data), "dataset_name": data.name,
                "dataset_hash": data.sha256, "examples": len(data)},
        training=training,
        extraction=info,
        metrics={
            "retention": measured.retention,
            "probes": len(probes),
            "max_new_tokens": EVAL_SETTINGS.max_new_tokens,
            "ll_base": probe.ll_base,
            "ll_tuned": probe.ll_tuned,
            "tuned_kl_to_base": probe.kl_tuned_to_base,
            "tuned_hedges_per_100w": hedges,
            "tuned_boosters_per_100w": boosters,
            "tuned_stance_score": hedges - boosters,
            "stance_fit_nats": None if fit is None else fit.nats,
            "stance_fit_ci95": None if fit is None else fit.ci95,
            "stance_fit_train_nats": None if fit_train is None else fit_train.nats,
            "stance_fit_train_ci95": None if fit_train is None else fit_train.ci95,
            "base_model_bytes": base.parameter_bytes(),
            # the training steps are training.seconds; everything from the start of the
            # run to the save is seconds_total, and seconds_phases splits it
            "seconds_total": seconds_total,
            "seconds_phases": {
                "training_steps": result.seconds,
                "preparing": trained_at - started - result.seconds,
                "extraction": extracted_at - trained_at,
                **{f"measuring_{k}": v for k, v in measured.seconds.items()},
                "measuring": seconds_total - (extracted_at - started),
            },
        },
    )
    library.save(ckpt, overwrite=overwrite)
    progress(Progress("save", 1, 1, f"Saved {ckpt.path.name}"))
    return ckpt
