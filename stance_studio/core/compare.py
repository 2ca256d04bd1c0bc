"""The side-by-side job: one prompt under N variants in one batch, streaming, then
each column measured against the base model.

The GUI's side-by-side panel, ``generate`` and its ``--json`` all run this one job.
Batch row ``j`` runs with column ``j``'s stance weights (no weight is written); the
metrics come from their single definitions in :mod:`stance_studio.core.metrics`:
marker rates and marker score, KL to base (every column and the base teacher-forced
in one batch, again with per-row weights) and identical-to-base. With
``measure_stances``, each stance a column runs with (a checkpoint that records its
dataset) also gets its classifier's verdict on every column's answer: the
probability that the answer reads as that stance (the classifier of the stance rate,
:mod:`~stance_studio.core.stance_classifier`; built once per stance and model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from stance_studio.core.errors import StanceStudioError
from stance_studio.core.generation import Generation, GenerationSettings, side_by_side
from stance_studio.core.jobs import CancelFlag, ColumnText, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.metrics import EVAL_SETTINGS, kl_per_token, marker_rates, variant_and_base_logprobs
from stance_studio.core.repetition import loops
from stance_studio.core.stance_classifier import stance_classifier
from stance_studio.core.stance_reference import reference_from_checkpoint


@dataclass(frozen=True)
class VariantColumn:
    """One column to run: its label, its spec as text and its blend ([] = base)."""

    label: str
    spec: str
    blend: Sequence[tuple[object, float]] = ()


@dataclass
class ColumnResult:
    label: str
    spec: str
    text: str
    new_tokens: int
    hedges: float
    boosters: float
    kl_to_base: float
    identical_to_base: bool
    loops: bool = False  # the answer repeats itself (core/repetition.py)
    # stance name → probability that this column's answer reads as that stance
    stance_probability: dict = field(default_factory=dict)

    @property
    def stance_score(self) -> float:
        return self.hedges - self.boosters

    def as_json(self) -> dict:
        return {
            "variant": self.label, "spec": self.spec, "text": self.text, "new_tokens": self.new_tokens,
            "hedges_per_100w": self.hedges, "boosters_per_100w": self.boosters,
            "stance_score": self.stance_score, "kl_to_base": self.kl_to_base,
            "identical_to_base": self.identical_to_base, "loops": self.loops,
            "stance_probability": dict(self.stance_probability),
        }


@dataclass
class StanceCheck:
    """One stance whose classifier read every column: how well it tells the stance
    from base (cross-validated accuracy) and whether that is enough to trust it."""

    name: str
    accuracy: Optional[float]
    reliable: bool

    def as_json(self) -> dict:
        return {"stance": self.name, "classifier_accuracy": self.accuracy, "reliable": self.reliable}


@dataclass
class CompareResult:
    prompt: str
    settings: GenerationSettings
    columns: list[ColumnResult] = field(default_factory=list)
    stances: list[StanceCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # stances that could not be read, and why


def compare(
    base,
    blender,
    columns: Sequence[VariantColumn],
    prompt: str,
    settings: GenerationSettings = GenerationSettings(),
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    allow_mismatch: bool = False,
    measure_stances: bool = True,
) -> CompareResult:
    """Generate ``prompt`` for every column in one batch and measure each column.

    Streams ``Progress("token", partial=ColumnText(column, text))`` while generating;
    a base row is generated too when no column is the base, for the metrics.
    """
    cancel = ensure_flag(cancel)
    blends = [list(c.blend) for c in columns]
    base_index = next((i for i, b in enumerate(blends) if not b), None)
    rows = blends if base_index is not None else [*blends, []]
    base_row = base_index if base_index is not None else len(rows) - 1
    visible = len(columns)

    def on_token(row: int, text: str) -> None:
        if row < visible:
            progress(Progress("token", partial=ColumnText(row, text)))

    generations = side_by_side(base, blender, rows, prompt, settings, on_token=on_token, cancel=cancel,
                               allow_mismatch=allow_mismatch)
    cancel.raise_if_set("comparison")
    progress(Progress("metrics", 0, visible, "Measuring KL to base"))
    kls = kl_to_base(base, blender, blends, generations[:visible])
    result = CompareResult(prompt, settings)
    base_ids = generations[base_row].new_ids
    for column, gen, kl in zip(columns, generations, kls):
        hedges, boosters = marker_rates(gen.text)
        result.columns.append(ColumnResult(
            label=column.label, spec=column.spec, text=gen.text, new_tokens=len(gen.new_ids),
            hedges=float(hedges), boosters=float(boosters), kl_to_base=kl,
            identical_to_base=gen.new_ids == base_ids, loops=loops(gen.text),
        ))
    if measure_stances:
        _read_stances(base, blender, blends, result, progress, cancel)
    progress(Progress("metrics", visible, visible, "Done"))
    return result


def _read_stances(base, blender, blends, result: CompareResult, progress: ProgressCallback,
                  cancel: CancelFlag) -> None:
    """Each stance of the columns' blends reads every column's answer."""
    sources = {}
    for blend in blends:
        for src, weight in blend:
            if weight != 0 and getattr(src, "stance", None) is not None:
                sources.setdefault(src.name, src)
    texts = [c.text for c in result.columns]
    for name, src in sources.items():
        cancel.raise_if_set("comparison")
        if not (src.stance or {}).get("dataset"):
            result.notes.append(f"{name} records no stance dataset (made or imported without one), so no "
                                "classifier reads the answers for it.")
            continue
        try:
            reference = reference_from_checkpoint(src)
        except StanceStudioError as exc:
            result.notes.append(f"{name}: {exc}")
            continue
        progress(Progress("metrics", 0, len(texts), f"Reading the answers with {name}'s stance classifier "
                          "(built once per stance and model)"))
        classifier = stance_classifier(base, blender, reference, EVAL_SETTINGS, cancel=cancel)
        result.stances.append(StanceCheck(name, classifier.accuracy, classifier.reliable))
        for column, p in zip(result.columns, classifier.probability(texts)):
            column.stance_probability[name] = float(p)


@torch.no_grad()
def kl_to_base(base, blender, blends: Sequence[Sequence[tuple[object, float]]],
               generations: Sequence[Generation]) -> list[float]:
    """Mean per-token KL(p_variant ‖ p_base) over each generation's new tokens, each
    under its own blend; 0 for the base and for empty generations. One batch."""
    measured = [i for i, (b, g) in enumerate(zip(blends, generations)) if b and g.new_ids]
    out = [0.0] * len(generations)
    if not measured:
        return out
    logp_v, logp_b = variant_and_base_logprobs(base, blender.runtime, [blends[i] for i in measured],
                                               [generations[i] for i in measured])
    for i, v, b in zip(measured, logp_v, logp_b):
        out[i] = max(float(kl_per_token(v, b).mean()), 0.0)
    return out


def to_markdown(result: CompareResult) -> str:
    s = result.settings
    decoding = "greedy" if s.greedy else f"sampling (temperature {s.temperature}, top-p {s.top_p}, seed {s.seed})"
    lines = [f"## Prompt\n\n{result.prompt}\n", f"*{decoding}, at most {s.max_new_tokens} new tokens*\n",
             "| variant | marker score | KL to base | identical to base |", "| --- | ---: | ---: | :---: |"]
    for c in result.columns:
        lines.append(f"| {c.label} | {c.stance_score:+.2f} | {c.kl_to_base:.4f} | {'yes' if c.identical_to_base else 'no'} |")
    lines.append("")
    if result.stances:
        lines += ["Probability that each answer reads as a stance (its stance classifier):", "",
                  "| variant | " + " | ".join(s.name + ("" if s.reliable else " (unreliable)") for s in result.stances)
                  + " |", "| --- |" + " ---: |" * len(result.stances)]
        for c in result.columns:
            lines.append(f"| {c.label} | " + " | ".join(f"{c.stance_probability[s.name]:.2f}" for s in result.stances)
                         + " |")
        lines.append("")
    for c in result.columns:
        quoted = "\n".join("> " + line for line in (c.text or "(no text)").splitlines())
        lines.append(f"### {c.label}\n\n`{c.spec}`\n\n{quoted}\n")
    return "\n".join(lines)


def to_json(result: CompareResult) -> dict:
    s = result.settings
    return {
        "prompt": result.prompt,
        "settings": {"max_new_tokens": s.max_new_tokens, "greedy": s.greedy, "temperature": s.temperature,
                     "top_p": s.top_p, "seed": s.seed, "min_new_tokens": s.min_new_tokens,
                     "system_prompt": s.system_prompt},
        "columns": [c.as_json() for c in result.columns],
        "stances": [s.as_json() for s in result.stances],
        "notes": list(result.notes),
    }
