"""What a stance is, for measuring: its reference examples and which of them were
held out of training.

``evaluate --stance NAME`` takes, in this order: a checkpoint in the library (its
recorded dataset, with the held-out prompts it recorded), a dataset file, or a
built-in stance name. A dataset given directly has no recorded split, so stance fit
is measured on all its examples (``fit_split`` says which).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from stance_studio.core.checkpoints import SUFFIX
from stance_studio.core.datasets import Example, StanceDataset, builtin_stances, load_dataset
from stance_studio.core.errors import CheckpointError, DatasetError
from stance_studio.core.holdout import examples_for_prompts


@dataclass
class StanceReference:
    """A stance's reference responses: all of them train the classifier; the held-out
    ones (or all, with no recorded split) are scored for stance fit."""

    name: str
    examples: list[Example]
    held_out: list[Example]
    trained_on: list[Example]
    fit_split: str  # "held-out" or "all"
    dataset_sha256: str
    source: str

    def as_json(self) -> dict:
        return {"name": self.name, "source": self.source, "examples": len(self.examples),
                "fit_split": self.fit_split, "fit_examples": len(self.held_out)}


def reference_from_dataset(dataset: StanceDataset, held_out_prompts: Optional[Sequence[str]] = None,
                           name: Optional[str] = None, source: Optional[str] = None) -> StanceReference:
    """A stance from its dataset; with ``held_out_prompts`` the recorded split."""
    if held_out_prompts:
        held, rest = examples_for_prompts(dataset, held_out_prompts)
        split = "held-out"
    else:
        held, rest, split = list(dataset.examples), [], "all"
    if not held:
        raise DatasetError(f"None of the held-out prompts recorded for {name or dataset.name} appear in "
                           f"{dataset.path}; the dataset has changed since training.")
    return StanceReference(name or dataset.name, list(dataset.examples), held, rest, split, dataset.sha256,
                           source or str(dataset.path or dataset.name))


def reference_from_checkpoint(ckpt) -> StanceReference:
    """The stance a checkpoint was trained on: its recorded dataset and split."""
    info = ckpt.stance or {}
    path = info.get("dataset")
    if not path:
        raise CheckpointError(f"Checkpoint {ckpt.name} records no dataset, so it has no stance to score against; "
                              "pass --stance with a dataset file or a built-in stance.")
    candidates = [Path(path)]
    if info.get("dataset_name") in builtin_stances():
        candidates.append(builtin_stances()[info["dataset_name"]])
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        where = "" if Path(path).is_absolute() else f" (a path relative to the folder training ran in, not {Path.cwd()})"
        raise DatasetError(f"Checkpoint {ckpt.name} was trained on {path}{where}, which no longer exists; "
                           "pass --stance with the dataset file.")
    dataset = load_dataset(found)
    changed = bool(info.get("dataset_hash")) and info.get("dataset_hash") != dataset.sha256
    held = (ckpt.training or {}).get("holdout", {}).get("prompts") or None
    if held and not set(held) <= {ex.prompt for ex in dataset.examples}:
        held = None  # the recorded split is gone from the file: score fit on every example instead
    note = ", changed since training" if changed else ""
    return reference_from_dataset(dataset, held, name=ckpt.name, source=f"checkpoint {ckpt.name} ({found}{note})")


def resolve_stance(name: str, library) -> StanceReference:
    """A library checkpoint's stance, a dataset file, or a built-in stance name."""
    if library is not None and (name.endswith(SUFFIX) or (Path(library.folder) / f"{name}{SUFFIX}").is_file()):
        return reference_from_checkpoint(library.load(name))
    if Path(name).is_file() or name in builtin_stances():
        return reference_from_dataset(load_dataset(name))
    known = ", ".join(builtin_stances())
    raise DatasetError(f"No stance {name!r}: not a checkpoint in the library, a dataset file or a built-in stance "
                       f"({known}).")


def own_stance(terms, strict: bool = True) -> Optional[StanceReference]:
    """The stance a variant is scored against by default: that of its checkpoint
    with the largest |weight| (None for base, or for raw deltas). With ``strict``
    off, a checkpoint whose dataset cannot be found gives None instead of an error."""
    checkpoints = [(src, w) for src, w in terms if hasattr(src, "stance") and hasattr(src, "training")]
    if not checkpoints:
        return None
    ckpt = max(checkpoints, key=lambda term: abs(term[1]))[0]
    try:
        return reference_from_checkpoint(ckpt)
    except (CheckpointError, DatasetError):
        if strict:
            raise
        return None
