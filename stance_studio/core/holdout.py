"""The held-out split: every training run keeps part of its dataset out of training,
so stance fit can be measured on reference responses the model never saw.

The split is seeded (the training seed) and recorded in the checkpoint as the
held-out prompts, so the same examples can be found again later.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Sequence

from stance_studio.core.datasets import Example, StanceDataset
from stance_studio.core.errors import DatasetError

DEFAULT_HOLDOUT = 0.25
MIN_HELD_OUT = 2


@dataclass
class Split:
    train: StanceDataset
    held_out: list[Example]
    fraction: float

    @property
    def held_out_prompts(self) -> list[str]:
        return [ex.prompt for ex in self.held_out]


def check_fraction(fraction: float) -> float:
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 <= fraction < 1):
        raise DatasetError(f"The held-out fraction must be at least 0 and below 1 (got {fraction}).")
    return float(fraction)


def held_out_count(n: int, fraction: float) -> int:
    """How many of ``n`` examples a fraction holds out: the rounded share, at least
    :data:`MIN_HELD_OUT` (none when the fraction is 0)."""
    if fraction == 0:
        return 0
    return max(MIN_HELD_OUT, round(fraction * n))


def split_dataset(dataset: StanceDataset, fraction: float = DEFAULT_HOLDOUT, seed: int = 0) -> Split:
    """Hold out a seeded ``fraction`` of ``dataset`` (at least 2 examples, at least 1
    left to train on); ``fraction`` 0 trains on everything. The split is drawn over
    distinct prompts, so examples that share a prompt are all held out or all
    trained on: nothing held out is ever trained on, and the recorded prompts find
    exactly the held-out examples again."""
    fraction = check_fraction(fraction)
    n = len(dataset)
    prompts = list(dict.fromkeys(ex.prompt for ex in dataset.examples))  # in order of first appearance
    m = len(prompts)
    k = held_out_count(m, fraction)
    if k and m - k < 1:
        shared = f" ({m} distinct prompt{'s' if m != 1 else ''})" if m != n else ""
        raise DatasetError(
            f"{dataset.path or dataset.name} has {n} example{'s' if n != 1 else ''}{shared}: too few to hold out {k} "
            "and still train; add examples or set the held-out fraction to 0."
        )
    chosen = {prompts[i] for i in random.Random(seed).sample(range(m), k)}
    held = [ex for ex in dataset.examples if ex.prompt in chosen]
    train = replace(dataset, examples=[ex for ex in dataset.examples if ex.prompt not in chosen])
    return Split(train, held, fraction)


def examples_for_prompts(dataset: StanceDataset, prompts: Sequence[str]) -> tuple[list[Example], list[Example]]:
    """(examples whose prompt is in ``prompts``, the others): a recorded split found again."""
    wanted = set(prompts)
    inside = [ex for ex in dataset.examples if ex.prompt in wanted]
    return inside, [ex for ex in dataset.examples if ex.prompt not in wanted]
