"""``bench`` figures for the stance library: listing 500 checkpoints cold (every
header read and validated) and rescanning after one change (what the GUI does when
its folder watcher fires), each against its baseline measured in the same run."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch
from safetensors import safe_open

from stance_studio.core.bench_figures import figure, median_seconds
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress

LIBRARY_SIZE = 500


def _sample_checkpoint():
    """A checkpoint shaped like a trained one: 16 rank-8 factor pairs and the metadata
    a training run records (a loss curve, ranks, metrics)."""
    from stance_studio.core.checkpoints import StanceCheckpoint
    from stance_studio.core.deltas import LowRankDelta

    gen = torch.Generator().manual_seed(0)
    names = [f"model.layers.{i}.self_attn.{k}_proj.weight" for i in range(8) for k in ("q", "v")]
    deltas = {n: LowRankDelta(A=torch.randn(8, 64, generator=gen), B=torch.randn(64, 8, generator=gen)) for n in names}
    return StanceCheckpoint(
        name="sample", deltas=deltas, created="2026-01-01T00:00:00+00:00",
        stance={"name": "sample", "description": "a bench stance", "dataset_hash": "0" * 64},
        base={"model": "bench", "architecture": "LlamaForCausalLM", "num_layers": 8, "fingerprint": "0" * 32},
        training={"method": "lora", "steps": 20, "loss": [2.0 - i / 20 for i in range(20)], "seconds": 10.0},
        extraction={"policy": "rank:8", "ranks": {n: 8 for n in names}, "bytes": 65536},
        metrics={"retention": 0.9},
    )


@contextmanager
def bench_library(count: int = LIBRARY_SIZE, cancel: Optional[CancelFlag] = None) -> Iterator[Path]:
    """A temporary library folder of ``count`` checkpoints (copies of one file)."""
    from stance_studio.core.checkpoints import SUFFIX, save_checkpoint

    cancel = ensure_flag(cancel)
    with tempfile.TemporaryDirectory(prefix="stance-bench-library-") as tmp:
        folder = Path(tmp)
        first = save_checkpoint(_sample_checkpoint(), folder / f"stance-0000{SUFFIX}")
        for i in range(1, count):
            cancel.raise_if_set()
            shutil.copyfile(first, folder / f"stance-{i:04d}{SUFFIX}")
        yield folder


def _bare_headers(folder: Path) -> int:
    """The floor: open each file's safetensors header and read its names and metadata."""
    n = 0
    for path in sorted(folder.glob("*.stance.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            n += len(list(fh.keys())) + len(fh.metadata() or {})
    return n


def bench_library_scan(model_spec=None, repeats: int = 5, progress: ProgressCallback = no_progress,
                       cancel: Optional[CancelFlag] = None) -> dict:
    """Listing a library of 500 checkpoints, cold, against parsing their bare headers."""
    from stance_studio.core.library import Library

    progress(Progress("bench", 0, 2, f"library scan: writing {LIBRARY_SIZE} checkpoints"))
    with bench_library(cancel=cancel) as folder:
        progress(Progress("bench", 1, 2, "library scan: listing"))
        counts = []
        value = median_seconds(lambda: counts.append(len(Library(folder).scan()[0])), repeats)
        baseline = median_seconds(lambda: _bare_headers(folder), repeats)
    progress(Progress("bench", 2, 2, "library scan: done"))
    return figure(value, "bare safetensors headers of the same files", baseline,
                  f"{LIBRARY_SIZE} checkpoints listed in under 1 s", value < 1.0 and counts[-1] == LIBRARY_SIZE,
                  checkpoints=LIBRARY_SIZE, per_checkpoint_ms=1000 * value / LIBRARY_SIZE)


def bench_library_rescan(model_spec=None, repeats: int = 5, progress: ProgressCallback = no_progress,
                         cancel: Optional[CancelFlag] = None) -> dict:
    """Rescanning the 500-checkpoint library after one checkpoint was added (the GUI's
    refresh), against a cold scan: unchanged files are not read again."""
    from stance_studio.core.library import Library

    cancel = ensure_flag(cancel)
    progress(Progress("bench", 0, 2, f"library rescan: writing {LIBRARY_SIZE} checkpoints"))
    with bench_library(cancel=cancel) as folder:
        library = Library(folder)
        library.scan()
        source = next(folder.glob("*.stance.safetensors"))
        added = iter(range(10**6))

        def add_one_and_rescan():
            shutil.copyfile(source, folder / f"added-{next(added)}.stance.safetensors")
            return library.scan()

        progress(Progress("bench", 1, 2, "library rescan: measuring"))
        value = median_seconds(add_one_and_rescan, repeats)
        baseline = median_seconds(lambda: Library(folder).scan(), repeats)
    progress(Progress("bench", 2, 2, "library rescan: done"))
    return figure(value, "a cold scan of the same library", baseline,
                  "a rescan after one change stays under 100 ms (the GUI's event-loop budget)", value < 0.1,
                  checkpoints=LIBRARY_SIZE)
