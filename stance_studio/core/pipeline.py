"""The whole job the GUI's training dialog and the CLI both run: train a stance,
extract the kept delta, measure its retention and save it in the library."""

from __future__ import annotations

import json
import time
from typing import Optional, Sequence

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import StanceCheckpoint, make_checkpoint
from stance_studio.core.datasets import StanceDataset, check_context, encode_example, load_dataset, load_probes, model_context
from stance_studio.core.deltas import delta_bytes
from stance_studio.core.errors import LibraryError
from stance_studio.core.extraction import DEFAULT_POLICY, FILE_RESERVE_BYTES, extract, parse_policy
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.library import Library
from stance_studio.core.metrics import EVAL_SETTINGS, retention_probe
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
    library.check_writable()  # a read-only library fails now, not after the training
    data = validated_dataset(base, dataset)
    probes = list(probes) if probes is not None else load_probes()
    blender = blender or Blender(base)
    started = time.perf_counter()
    with blender.restoring():
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
        progress(Progress("measure", 1, 1, "Retention undefined: the tuned model is no closer to its answers than base"
                          if kept_retention is None else f"Retention {kept_retention:.3f}"))
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
