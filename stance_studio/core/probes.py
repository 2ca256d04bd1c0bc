"""The neutral probe set: prompts in labelled categories (science, history, practical
advice, opinion, arithmetic) that no shipped stance dataset contains.

``resources/probes/neutral.jsonl`` holds one ``{"prompt", "category"}`` per line. A
user's own file may be the same JSONL, or plain text with one prompt per line (``#``
lines are comments; its prompts get the category ``uncategorised``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from stance_studio.core.errors import DatasetError
from stance_studio.core.resources import resource

UNCATEGORISED = "uncategorised"
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


def default_probe_path() -> Path:
    return resource("probes", "neutral.jsonl")


def load_probe_set(path: str | os.PathLike | None = None) -> ProbeSet:
    """Read a probe file (JSONL with categories, or one prompt per line)."""
    path = Path(path) if path else default_probe_path()
    if not path.is_file():
        raise DatasetError(f"Probe file {path} does not exist.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"Probe file {path} is not UTF-8 text ({exc}).") from exc
    prompts: list[str] = []
    categories: list[str] = []
    jsonl = path.suffix == ".jsonl"
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or (not jsonl and line.startswith("#")):
            continue
        if jsonl:
            prompt, category = _probe_line(line, path, lineno)
        else:
            prompt, category = line, UNCATEGORISED
        prompts.append(prompt)
        categories.append(category)
    if not prompts:
        raise DatasetError(f"Probe file {path} holds no prompts (one prompt per line, or JSONL with \"prompt\").")
    return ProbeSet(tuple(prompts), tuple(categories), path)


def _probe_line(line: str, path: Path, lineno: int) -> tuple[str, str]:
    where = f"{path}, line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc.msg}).") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
        raise DatasetError(f"{where}: each line needs a non-empty string \"prompt\" (and optionally \"category\").")
    category = obj.get("category", UNCATEGORISED)
    if not isinstance(category, str) or not category.strip():
        raise DatasetError(f"{where}: \"category\" must be a non-empty string.")
    return obj["prompt"].strip(), category.strip()


def retention_probes() -> list[str]:
    """The fixed subset of the shipped probes that saving a checkpoint measures on."""
    return list(load_probe_set().subset(RETENTION_PER_CATEGORY).prompts)
