"""Building an activation-steering stance from a stance dataset (``--method steer``).

Contrastive activation addition: for every prompt of the dataset, the base model
reads two answers, teacher-forced: the stance's reference response and its own
greedy answer. Per decoder layer N, the outputs over the answer tokens are
averaged, giving one vector per answer. The stance's direction at layer N is

- ``mean``: the mean over prompts of (reference − own answer), or
- ``pca``: the first principal direction of those paired differences (uncentred
  SVD, sign towards the mean difference), scaled to the mean projection on it.

No training run: one generation pass and two forward passes. Every layer's vector
is stored (the layer sweep and the plots use them); the ones applied by default are
a depth band chosen at build time, each scaled so the band adds one vector's worth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from stance_studio.core.checkpoints import ACTIVATION, StanceCheckpoint, make_checkpoint
from stance_studio.core.datasets import IGNORE, Example, StanceDataset, dataset_record, encode_example
from stance_studio.core.errors import StanceStudioError
from stance_studio.core.generation import GenerationSettings, generate_many
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.modules import _depth_layers
from stance_studio.core.runtime import runtime_for
from stance_studio.core.steering import check_strength, decoder_layers, decoder_layers_path

MODES = ("mean", "pca")
DEFAULT_BAND = "0.3-0.55"


@dataclass(frozen=True)
class SteerConfig:
    """How to build a steering stance. ``band``: depth fractions of the layers applied
    by default; ``strength``: the total multiple of a layer's vector they add."""

    mode: str = "mean"
    band: str = DEFAULT_BAND
    strength: float = 4.0
    max_new_tokens: int = 64  # length of the base model's own answers
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise StanceStudioError(f"Unknown steering mode {self.mode!r}; choose one of {', '.join(MODES)}.")
        check_strength(self.strength)
        if self.max_new_tokens < 1:
            raise StanceStudioError(f"max new tokens must be at least 1 (got {self.max_new_tokens}).")

    def as_json(self) -> dict:
        return {"mode": self.mode, "band": self.band, "strength": self.strength,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed}


def band_layers(band: str, num_layers: int) -> list[int]:
    """The layers whose depth fraction lies in ``band`` (``A-B``, or one fraction)."""
    layers = sorted(_depth_layers(band, num_layers))
    if not layers:
        raise StanceStudioError(f"Depth band {band!r} holds no layer of this {num_layers}-layer model; widen it.")
    return layers


@torch.no_grad()
def answer_means(base, pairs: Sequence[tuple[Example, str]], cancel: CancelFlag) -> torch.Tensor:
    """(answers × layers × hidden): each answer's mean decoder-layer output over its
    tokens, teacher-forced after its prompt."""
    layers = decoder_layers(base.model)
    captured: list[torch.Tensor] = []

    def grab(module, args, output):
        captured.append((output[0] if isinstance(output, tuple) else output).detach())

    handles = [layer.register_forward_hook(grab) for layer in layers]
    rows = []
    try:
        for example, answer in pairs:
            cancel.raise_if_set("steering build")
            ids, labels = encode_example(base.tokenizer, Example(example.prompt, answer, example.system))
            mask = torch.tensor(labels) != IGNORE
            captured.clear()
            base.model(input_ids=torch.tensor([ids]))
            rows.append(torch.stack([h[0][mask].float().mean(0) for h in captured]))
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(rows)


def directions_from(stance: torch.Tensor, own: torch.Tensor, mode: str) -> torch.Tensor:
    """(layers × hidden) directions from paired answer means (answers × layers × hidden)."""
    diffs = (stance - own).float()
    mean = diffs.mean(0)
    if mode == "mean" or diffs.shape[0] < 2:
        return mean
    out = torch.empty_like(mean)
    for layer in range(diffs.shape[1]):
        d = diffs[:, layer]
        _, _, vh = torch.linalg.svd(d, full_matrices=False)
        u = vh[0]
        if torch.dot(u, mean[layer]) < 0:
            u = -u
        out[layer] = u * (d @ u).mean()
    return out


def build_steering(
    base,
    dataset: StanceDataset,
    name: str,
    config: SteerConfig = SteerConfig(),
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
) -> StanceCheckpoint:
    """An ``activation`` checkpoint for ``dataset`` on ``base`` (not saved)."""
    cancel = ensure_flag(cancel)
    started = time.perf_counter()
    applied = band_layers(config.band, base.num_layers)
    examples = list(dataset.examples)
    with runtime_for(base.model).scoped([]):  # the true base, whatever blend is shown
        vectors, residual = _read_directions(base, examples, config, progress, cancel)
    cancel.raise_if_set("steering build")
    return _checkpoint(base, dataset, name, config, applied, vectors, residual, started, progress)


def _read_directions(base, examples, config: SteerConfig, progress, cancel) -> tuple[torch.Tensor, list[float]]:
    """Per-layer directions, and each layer's mean output norm on the base's own answers."""
    progress(Progress("steer", 0, 3, f"Generating the base model's own answers to {len(examples)} prompts"))
    settings = GenerationSettings(max_new_tokens=config.max_new_tokens)
    own = generate_many(base, [ex.prompt for ex in examples], settings, cancel=cancel)
    progress(Progress("steer", 1, 3, "Reading activations of the reference responses"))
    stance_means = answer_means(base, [(ex, ex.response) for ex in examples], cancel)
    progress(Progress("steer", 2, 3, "Reading activations of the base model's answers"))
    own_means = answer_means(base, [(ex, g.text) for ex, g in zip(examples, own)], cancel)
    vectors = directions_from(stance_means, own_means, config.mode)
    return vectors, [float(h.norm(dim=-1).mean()) for h in own_means.transpose(0, 1)]


def _checkpoint(base, dataset, name, config, applied, vectors, residual, started, progress) -> StanceCheckpoint:
    norms = [float(v.norm()) for v in vectors]
    steering = {
        "mode": config.mode,
        "layers": list(range(base.num_layers)),
        "apply_layers": applied,
        "scale": config.strength / len(applied),
        "norms": norms,
        "band": config.band,
        "strength": config.strength,
        "residual_norms": residual,
        "module": decoder_layers_path(base.model)[0],
    }
    ckpt = make_checkpoint(
        name, {}, base,
        stance={"description": dataset.description, "dataset": dataset_record(dataset), "dataset_name": dataset.name,
                "dataset_hash": dataset.sha256, "examples": len(dataset)},
        training={"method": "steer", "hyperparameters": config.as_json(), "steps": 0, "loss": [],
                  "nonfinite_steps": 0, "seconds": time.perf_counter() - started},
        extraction={"policy": f"steer:{config.mode}"},
    )
    ckpt.kind = ACTIVATION
    ckpt.steering = steering
    ckpt.directions = {layer: vectors[layer].contiguous() for layer in range(base.num_layers)}
    ckpt.extraction["bytes"] = ckpt.nbytes
    progress(Progress("steer", 3, 3, f"Directions at {base.num_layers} layers; applied at layers "
                      f"{applied[0]}-{applied[-1]}"))
    return ckpt


def build_steering_stance(
    base,
    dataset,
    name: str,
    config: SteerConfig = SteerConfig(),
    library=None,
    probes: Optional[Sequence[str]] = None,
    blender=None,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    overwrite: bool = False,
) -> StanceCheckpoint:
    """Build → measure on the probes (marker score and KL against base) → save.

    The model is read with its base weights (a blend in force is set aside and put
    back); nothing is written on cancel.
    """
    from stance_studio.core.blend import Blender
    from stance_studio.core.datasets import load_probes
    from stance_studio.core.library import Library
    from stance_studio.core.metrics import EVAL_SETTINGS, evaluate
    from stance_studio.core.pipeline import validated_dataset

    cancel = ensure_flag(cancel)
    library = library or Library()
    library.check_new_name(name, overwrite)
    data = validated_dataset(base, dataset)
    probes = list(probes) if probes is not None else load_probes()
    blender = blender or Blender(base)
    started = time.perf_counter()
    ckpt = build_steering(base, data, name, config, progress=progress, cancel=cancel)
    progress(Progress("measure", 0, 1, f"Measuring the stance shift on {len(probes)} probe prompts"))
    measured = evaluate(base, blender, [(ckpt, 1.0)], probes, cancel=cancel)
    base_hedges, base_boosters = _rates([g.text for g in measured.base_generations])
    cancel.raise_if_set("steering build")
    ckpt.metrics = {
        "retention": None,
        "probes": len(probes),
        "max_new_tokens": EVAL_SETTINGS.max_new_tokens,
        "stance_score": measured.stance_score,
        "stance_score_base": base_hedges - base_boosters,
        "kl_to_base": measured.kl_to_base,
        "identical_fraction": measured.identical_fraction,
        "base_model_bytes": base.parameter_bytes(),
        "seconds_total": time.perf_counter() - started,
    }
    progress(Progress("measure", 1, 1, f"Marker score {measured.stance_score:+.2f} "
                      f"(base {base_hedges - base_boosters:+.2f})"))
    library.save(ckpt, overwrite=overwrite)
    return ckpt


def _rates(texts):
    from stance_studio.core.metrics import pooled_rates

    return pooled_rates(texts)
