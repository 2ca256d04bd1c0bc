"""The side-by-side job (no Qt): generate one prompt under several variants, then
measure each column against the base model.

Metrics follow DESIGN.md: stance score = hedges − boosters per 100 words; KL to base
= mean per-token KL(p_variant ‖ p_base) over the column's own continuation, teacher
forced through both weight sets; identical = the same tokens as the base column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from stance_studio.core.generation import Generation, GenerationSettings, side_by_side
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, no_progress

Weights = tuple[tuple[str, float], ...]


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

    @property
    def stance_score(self) -> float:
        return self.hedges - self.boosters

    def as_json(self) -> dict:
        return {
            "variant": self.label, "spec": self.spec, "text": self.text, "new_tokens": self.new_tokens,
            "hedges_per_100w": self.hedges, "boosters_per_100w": self.boosters,
            "stance_score": self.stance_score, "kl_to_base": self.kl_to_base,
            "identical_to_base": self.identical_to_base,
        }


@dataclass
class CompareResult:
    prompt: str
    settings: GenerationSettings
    columns: list[ColumnResult] = field(default_factory=list)


@torch.no_grad()
def _token_logprobs(model, ids: list[int], start: int) -> torch.Tensor:
    """Log-probabilities of the next token at positions ``start-1 … len-2``."""
    logits = model(torch.tensor([ids])).logits[0, start - 1 : len(ids) - 1]
    return torch.log_softmax(logits.float(), dim=-1)


@torch.no_grad()
def kl_to_base(base, blender, blend, generation: Generation) -> float:
    """Mean per-token KL(p_variant ‖ p_base) over ``generation``'s new tokens.

    Applies ``blend`` then the base weights; the blend in force before is put back.
    """
    if not blend or not generation.new_ids:
        return 0.0
    ids = list(generation.prompt_ids) + list(generation.new_ids)
    start = len(generation.prompt_ids)
    with blender.restoring():
        blender.apply(blend, allow_mismatch=True)
        lp_variant = _token_logprobs(base.model, ids, start)
        blender.reset()
        lp_base = _token_logprobs(base.model, ids, start)
    kl = (lp_variant.exp() * (lp_variant - lp_base)).sum(-1)
    return float(kl.mean().clamp_min(0.0))


def run_comparison(
    base,
    blender,
    columns: Sequence[tuple[str, str, list]],
    prompt: str,
    settings: GenerationSettings,
    marker_rates: Callable[[str], tuple[float, float]],
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
) -> CompareResult:
    """Generate ``prompt`` for each ``(label, spec, blend)`` column and measure it.

    Streams ``Progress("token", info={"column": i, "text": ...})`` while generating.
    A base row is generated too when no column is the base, for the metrics.
    """
    blends = [blend for _, _, blend in columns]
    base_index = next((i for i, b in enumerate(blends) if not b), None)
    rows = list(blends) if base_index is not None else [*blends, []]
    base_row = base_index if base_index is not None else len(rows) - 1
    visible = len(columns)

    def on_token(row: int, text: str) -> None:
        if row < visible:
            progress(Progress("token", info={"column": row, "text": text}))

    generations = side_by_side(base, blender, rows, prompt, settings, on_token=on_token, cancel=cancel,
                               allow_mismatch=True)
    result = CompareResult(prompt, settings)
    base_ids = generations[base_row].new_ids
    for i, (label, spec, blend) in enumerate(columns):
        if cancel is not None:
            cancel.raise_if_set("comparison")
        progress(Progress("metrics", i, visible, f"Measuring {label}"))
        gen = generations[i]
        hedges, boosters = marker_rates(gen.text)
        result.columns.append(ColumnResult(
            label=label, spec=spec, text=gen.text, new_tokens=len(gen.new_ids),
            hedges=float(hedges), boosters=float(boosters),
            kl_to_base=kl_to_base(base, blender, blend, gen),
            identical_to_base=gen.new_ids == base_ids,
        ))
    progress(Progress("metrics", visible, visible, "Done"))
    return result


def to_markdown(result: CompareResult) -> str:
    s = result.settings
    decoding = "greedy" if s.greedy else f"sampling (temperature {s.temperature}, top-p {s.top_p}, seed {s.seed})"
    lines = [f"## Prompt\n\n{result.prompt}\n", f"*{decoding}, at most {s.max_new_tokens} new tokens*\n",
             "| variant | stance score | KL to base | identical to base |", "| --- | ---: | ---: | :---: |"]
    for c in result.columns:
        lines.append(f"| {c.label} | {c.stance_score:+.2f} | {c.kl_to_base:.4f} | {'yes' if c.identical_to_base else 'no'} |")
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
                     "top_p": s.top_p, "seed": s.seed},
        "columns": [c.as_json() for c in result.columns],
    }
