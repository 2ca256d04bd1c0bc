"""The neutral probe set: prompts in labelled categories (science, history, practical
advice, opinion, arithmetic) that no shipped stance dataset contains.

``resources/probes/neutral.jsonl`` holds one ``{"prompt", "category"}`` per line. A
user's own file may be the same JSONL, or plain text with one prompt per line (``#``
lines are comments; its prompts get the category ``uncategorised``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from stance_studio.core.datasets import UNCATEGORISED, read_probe_file

__all__ = ["UNCATEGORISED", "ProbeSet", "load_probe_set", "retention_probes"]

# Saving a checkpoint measures retention on this many probes per category (the first
# ones of each), so that measuring stays cheap next to training; evaluate uses all.
RETENTION_PER_CATEGORY = 8


@dataclass(frozen=True)
class ProbeSet:
    """Prompts and their categories, in file order."""

    prompts: tuple[str, ...]
    categories: tuple[str, ...]
    path: Optional[Path] = None

    def __len__(self) -> int:
        return len(self.prompts)

    def category_names(self) -> list[str]:
        return list(dict.fromkeys(self.categories))

    def subset(self, per_category: int) -> "ProbeSet":
        """The first ``per_category`` prompts of each category."""
        seen: dict[str, int] = {}
        keep = []
        for prompt, cat in zip(self.prompts, self.categories):
            seen[cat] = seen.get(cat, 0) + 1
            if seen[cat] <= per_category:
                keep.append((prompt, cat))
        return ProbeSet(tuple(p for p, _ in keep), tuple(c for _, c in keep), self.path)


def load_probe_set(path: str | os.PathLike | None = None) -> ProbeSet:
    """Read a probe file (JSONL with categories, or one prompt per line)."""
    entries = read_probe_file(path)
    return ProbeSet(tuple(p for p, _ in entries), tuple(c for _, c in entries), Path(path) if path else None)


def retention_probes() -> list[str]:
    """The fixed subset of the shipped probes that saving a checkpoint measures on."""
    return list(load_probe_set().subset(RETENTION_PER_CATEGORY).prompts)
