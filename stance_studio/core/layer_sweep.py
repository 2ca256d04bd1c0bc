"""Where is a stance steerable? The stance metrics with a steering stance's vector
applied at each layer alone, against depth fraction: the stance rate (the stance's
own classifier, when the checkpoint records its dataset), the marker score, KL to
base and the share of answers identical to base.

Every probe is answered once by a batch holding the base model and one row per
swept layer (per-row steering hooks), so a sweep costs one batched generation per
probe instead of one per layer and probe. Each layer adds its own vector times the
stance's strength (what the default band adds in total), so the rows compare like
with like.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import StanceCheckpoint
from stance_studio.core.errors import StanceStudioError
from stance_studio.core.generation import Generation, side_by_side
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.metrics import EVAL_SETTINGS, continuation_logprobs, kl_per_token, pooled_rates
from stance_studio.core.runtime import runtime_for
from stance_studio.core.repetition import looping_fields
from stance_studio.core.stance_classifier import RELIABLE_ACCURACY, stance_classifier, stance_rate
from stance_studio.core.stance_reference import reference_from_checkpoint
from stance_studio.core.steering import at_layer, check_strength, is_steering

KL_ROWS = 8  # rows teacher-forced at once (bounds the logits' memory)


def depth_fraction(layer: int, num_layers: int) -> float:
    """A layer's depth as the module patterns count it: (i + 0.5) / L."""
    return (layer + 0.5) / num_layers


@torch.no_grad()
def _kl_rows(base, columns, gens: list[Generation]) -> list[float]:
    """Sum of per-token KL(variant ‖ base) and token count, per column."""
    sums = []
    for start in range(0, len(columns), KL_ROWS):
        cols, chunk = columns[start:start + KL_ROWS], gens[start:start + KL_ROWS]
        if not any(g.new_ids for g in chunk):
            sums.extend((0.0, 0) for _ in chunk)
            continue
        runtime = runtime_for(base.model)
        with runtime.rows(cols):
            steered = continuation_logprobs(base, chunk)
        with runtime.scoped([]):
            plain = continuation_logprobs(base, chunk)
        sums.extend((float(kl_per_token(v, b).sum()), len(g.new_ids)) for v, b, g in zip(steered, plain, chunk))
    return sums


def sweep_layers(
    base,
    ckpt: StanceCheckpoint,
    probes: Sequence[str],
    layers: Optional[Sequence[int]] = None,
    strength: Optional[float] = None,
    settings=EVAL_SETTINGS,
    blender: Optional[Blender] = None,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
) -> list[dict]:
    """One row per layer (plus the base model first): stance rate with its 95 %
    interval (None when the checkpoint records no dataset), marker score, hedges and
    boosters per 100 words, KL to base and the share of answers identical to base."""
    if not is_steering(ckpt):
        raise StanceStudioError(f"{ckpt.name!r} is not a steering stance; sweep-layers needs one (train --method steer).")
    cancel = ensure_flag(cancel)
    blender = blender or Blender(base)
    blender.check(ckpt)
    layers = sorted(ckpt.directions) if layers is None else sorted(set(layers))
    unknown = [n for n in layers if n not in ckpt.directions]
    if unknown:
        raise StanceStudioError(f"{ckpt.name!r} holds no vector for layer {unknown[0]} "
                                f"(it has layers {min(ckpt.directions)}-{max(ckpt.directions)}).")
    strength = check_strength(ckpt.steering.get("strength", 1.0) if strength is None else strength)
    columns = [[]] + [[(at_layer(ckpt, n, strength), 1.0)] for n in layers]
    texts: list[list[str]] = [[] for _ in columns]
    identical = [0] * len(columns)
    kl = [[0.0, 0] for _ in columns]
    for index, prompt in enumerate(probes):
        cancel.raise_if_set("layer sweep")
        progress(Progress("sweep", index, len(probes), f"Probe {index + 1} of {len(probes)}: {len(columns)} rows"))
        gens = side_by_side(base, blender, columns, prompt, settings, cancel=cancel)
        for row, (total, count) in enumerate(_kl_rows(base, columns, gens)):
            kl[row][0] += total
            kl[row][1] += count
        for row, gen in enumerate(gens):
            texts[row].append(gen.text)
            identical[row] += gen.new_ids == gens[0].new_ids
    classifier = _classifier(base, blender, ckpt, progress, cancel)
    progress(Progress("sweep", len(probes), len(probes), "Done"))
    rows = []
    for row, layer in enumerate([None, *layers]):
        hedges, boosters = pooled_rates(texts[row])
        rows.append({
            "layer": layer,
            "depth": None if layer is None else depth_fraction(layer, base.num_layers),
            "norm": None if layer is None else float(ckpt.directions[layer].norm()),
            "strength": 0.0 if layer is None else strength,
            "hedges_per_100w": hedges,
            "boosters_per_100w": boosters,
            "stance_score": hedges - boosters,
            "kl_to_base": kl[row][0] / kl[row][1] if kl[row][1] else 0.0,
            "identical_fraction": identical[row] / max(len(probes), 1),
            "sample": texts[row][0] if texts[row] else "",
            **_rate(classifier, texts[row]),
        })
    return rows


def _classifier(base, blender, ckpt, progress: ProgressCallback, cancel: CancelFlag):
    """The stance's classifier, or None when the checkpoint records no usable dataset."""
    try:  # reference_from_checkpoint refuses a checkpoint with no dataset recorded, or one gone
        reference = reference_from_checkpoint(ckpt)
    except StanceStudioError:
        return None
    progress(Progress("sweep", 0, 1, f"Preparing {ckpt.name}'s stance classifier (once per stance and model)"))
    return stance_classifier(base, blender, reference, EVAL_SETTINGS, cancel=cancel)


def _rate(classifier, texts: list[str]) -> dict:
    """Stance rate (with the strict rate and the share of looping answers)."""
    if classifier is None:
        return {"stance_rate": None, "stance_rate_ci95": None, "classifier_accuracy": None,
                "stance_rate_reliable": None, **looping_fields(texts)}
    rate = stance_rate(classifier, texts)
    return {"stance_rate": rate.rate, "stance_rate_ci95": rate.ci95, "classifier_accuracy": classifier.accuracy,
            "stance_rate_reliable": classifier.reliable, **looping_fields(texts, rate.labels)}


def sweep_table(rows: list[dict]) -> str:
    """The sweep as a plain-text table (one line per layer)."""
    lines = [f"{'layer':>5} {'depth':>6} {'|v|':>8} {'rate':>5} {'strict':>6} {'loops':>5} {'score':>7} "
             f"{'hedges':>7} {'boosters':>8} {'KL':>7} {'same':>5}"]
    for r in rows:
        layer = "base" if r["layer"] is None else str(r["layer"])
        depth = "" if r["depth"] is None else f"{r['depth']:.2f}"
        norm = "" if r["norm"] is None else f"{r['norm']:.3g}"
        rate = "–" if r.get("stance_rate") is None else f"{r['stance_rate']:.2f}"
        strict = "–" if r.get("stance_rate_strict") is None else f"{r['stance_rate_strict']:.2f}"
        loops = "–" if r.get("looping_fraction") is None else f"{r['looping_fraction']:.0%}"
        lines.append(f"{layer:>5} {depth:>6} {norm:>8} {rate:>5} {strict:>6} {loops:>5} {r['stance_score']:>+7.2f} "
                     f"{r['hedges_per_100w']:>7.2f} "
                     f"{r['boosters_per_100w']:>8.2f} {r['kl_to_base']:>7.3f} {r['identical_fraction']:>5.0%}")
    if rows and rows[0].get("stance_rate") is not None and rows[0].get("stance_rate_reliable") is False:
        lines.append(f"rate: the stance's classifier is unreliable (cross-validated accuracy below {RELIABLE_ACCURACY:g})")
    lines.append("strict: the rate counting no looping answer; loops: share of answers that repeat themselves")
    return "\n".join(lines)
