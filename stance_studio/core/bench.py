"""Building blocks of ``stance-studio bench``: each figure is a ratio against its
baseline measured in the same run (medians over repeats), never an absolute time
compared with a constant, because shared machines are noisy."""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Optional

import torch

from stance_studio.core.bench_figures import figure, is_tiny, median_seconds, skipped
from stance_studio.core.bench_library import bench_library_rescan, bench_library_scan
from stance_studio.core.bench_training import bench_training_memory, bench_training_step
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress


def random_low_rank_stances(base, count: int = 3, rank: int = 16, seed: int = 0):
    """``count`` checkpoints with a rank-``rank`` delta on every linear module."""
    from stance_studio.core.checkpoints import make_checkpoint
    from stance_studio.core.deltas import LowRankDelta

    gen = torch.Generator().manual_seed(seed)
    stances = []
    for i in range(count):
        deltas = {}
        for name, p in base.model.named_parameters():
            if p.dim() == 2 and "embed" not in name and "lm_head" not in name:
                deltas[name] = LowRankDelta(
                    A=torch.randn(rank, p.shape[1], generator=gen) * 1e-3,
                    B=torch.randn(p.shape[0], rank, generator=gen) * 1e-3,
                )
        stances.append(make_checkpoint(f"bench-{i}", deltas, base))
    return stances


def bench_blend_apply(model_spec=None, repeats: int = 5, progress: ProgressCallback = no_progress,
                      cancel: Optional[CancelFlag] = None) -> dict:
    """Moving one slider with 3 stances loaded (rank 16, every linear module)
    against reloading the model: with runtime stances a move sets one number."""
    from stance_studio.core.blend import Blender
    from stance_studio.core.models import load_base

    cancel = ensure_flag(cancel)
    progress(Progress("bench", 0, 3, "blend apply: loading model"))
    base = load_base(model_spec)
    stances = random_low_rank_stances(base)
    blender = Blender(base)
    blender.apply([(s, 0.1) for s in stances])  # loading the stances is done once
    cancel.raise_if_set("benchmark")
    progress(Progress("bench", 1, 3, "blend apply: timing slider moves"))
    steps = iter(range(1, 1_000_000))
    moves = max(repeats, 50)  # one move is far below the timer's noise: time many, report one
    apply_s = median_seconds(
        lambda: [blender.apply([(stances[0], 0.01 * next(steps)), (stances[1], -0.1), (stances[2], 0.05)])
                 for _ in range(moves)], repeats) / moves
    blender.reset()
    cancel.raise_if_set("benchmark")
    progress(Progress("bench", 2, 3, "blend apply: timing reload"))
    reload_s = median_seconds(lambda: load_base(model_spec), max(1, repeats // 2))
    progress(Progress("bench", 3, 3, "blend apply: done"))
    return figure(apply_s, "reload the model", reload_s, "one slider move <= 5 ms and >= 100x faster than reloading",
                  apply_s <= 0.005 and reload_s / apply_s >= 100)


def bench_runtime_generation(model_spec=None, repeats: int = 3, progress: ProgressCallback = no_progress,
                             cancel: Optional[CancelFlag] = None, new_tokens: int = 32) -> dict:
    """Generating with 3 runtime stances (rank 16, every linear module) against the
    same blend merged into the weights (the merge switch)."""
    from stance_studio.core.blend import Blender
    from stance_studio.core.generation import GenerationSettings, generate
    from stance_studio.core.models import load_base

    cancel = ensure_flag(cancel)
    progress(Progress("bench", 0, 3, "runtime generation: loading model"))
    base = load_base(model_spec)
    stances = random_low_rank_stances(base)
    blender = Blender(base)
    blender.apply([(s, w) for s, w in zip(stances, (0.5, -0.3, 0.2))])
    settings = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    prompt = "Explain, step by step, how a refrigerator keeps food cold."
    run = lambda: generate(base, prompt, settings, cancel=cancel)  # noqa: E731
    run()  # warm-up: the first forward stacks the factors
    progress(Progress("bench", 1, 3, "runtime generation: runtime stances"))
    runtime_s = median_seconds(run, repeats)
    cancel.raise_if_set("benchmark")
    progress(Progress("bench", 2, 3, "runtime generation: merged weights"))
    blender.runtime.merge = True
    try:
        merged_s = median_seconds(run, repeats)
    finally:
        blender.runtime.merge = False
        blender.reset()
    progress(Progress("bench", 3, 3, "runtime generation: done"))
    return figure(runtime_s, "the same blend merged into the weights", merged_s,
                  f"<= 1.3x the time of merged weights ({new_tokens} tokens)", runtime_s <= 1.3 * merged_s)


def bench_cached_reload(model_spec=None, repeats: int = 3, progress: ProgressCallback = no_progress,
                        cancel: Optional[CancelFlag] = None) -> dict:
    """The cached safetensors reload against the first (dequantizing) GGUF load."""
    from stance_studio.core.models import load_base, resolve_model_spec

    cancel = ensure_flag(cancel)
    if is_tiny(model_spec):
        return skipped("the tiny model is built in code: there is no GGUF load to cache")
    kind, _ = resolve_model_spec(model_spec)
    if kind != "gguf":
        return skipped("the model is not a GGUF file, so there is nothing to cache")
    old = os.environ.get("STANCE_STUDIO_CACHE")
    with tempfile.TemporaryDirectory(prefix="stance-bench-") as tmp:
        os.environ["STANCE_STUDIO_CACHE"] = tmp
        try:
            progress(Progress("bench", 0, 2, "cached reload: first GGUF load"))
            first = median_seconds(lambda: load_base(model_spec, use_cache=False), 1)
            load_base(model_spec)  # writes the cache
            cancel.raise_if_set("benchmark")
            progress(Progress("bench", 1, 2, "cached reload: timing cached loads"))
            cached = median_seconds(lambda: load_base(model_spec), repeats)
        finally:
            if old is None:
                os.environ.pop("STANCE_STUDIO_CACHE", None)
            else:
                os.environ["STANCE_STUDIO_CACHE"] = old
    progress(Progress("bench", 2, 2, "cached reload: done"))
    return figure(cached, "first GGUF load (dequantize)", first, ">= 5x faster than the first GGUF load",
                  first / cached >= 5)


def bench_side_by_side(model_spec=None, repeats: int = 3, progress: ProgressCallback = no_progress,
                       cancel: Optional[CancelFlag] = None, new_tokens: int = 64) -> dict:
    """4 variants × 64 new tokens: one batch with per-row stance weights against
    generating one variant at a time."""
    from stance_studio.core.blend import Blender
    from stance_studio.core.generation import GenerationSettings, side_by_side
    from stance_studio.core.models import load_base

    cancel = ensure_flag(cancel)
    progress(Progress("bench", 0, 3, "side by side: loading model"))
    base = load_base(model_spec)
    stances = random_low_rank_stances(base)
    columns = [[]] + [[(s, 1.0)] for s in stances]
    blender = Blender(base)
    # min_new_tokens keeps every column generating all its tokens.
    settings = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    prompt = "Explain, step by step, how a refrigerator keeps food cold."
    progress(Progress("bench", 1, 3, "side by side: batched"))
    batched = median_seconds(lambda: side_by_side(base, blender, columns, prompt, settings, cancel=cancel), repeats)
    cancel.raise_if_set("benchmark")
    progress(Progress("bench", 2, 3, "side by side: one variant at a time"))
    one_by_one = median_seconds(
        lambda: side_by_side(base, blender, columns, prompt, settings, cancel=cancel, batched=False), repeats
    )
    progress(Progress("bench", 3, 3, "side by side: done"))
    return figure(batched, "one variant at a time", one_by_one,
                  ">= 2.5x faster than one variant at a time (4 variants x 64 tokens)", one_by_one / batched >= 2.5)


def bench_extraction(model_spec=None, repeats: int = 1, progress: ProgressCallback = no_progress,
                     cancel: Optional[CancelFlag] = None, policy: Optional[str] = None) -> dict:
    """The default extraction policy's checkpoint file (bytes, share of the base) and
    retention, against the full delta it was extracted from (one training run: the
    figure is a size and a ratio, not a time, so it is not repeated)."""
    from stance_studio.core.errors import PolicyError
    from stance_studio.core.extraction import DEFAULT_POLICY, FILE_RESERVE_BYTES, parse_policy
    from stance_studio.core.library import Library
    from stance_studio.core.models import load_base
    from stance_studio.core.pipeline import build_stance
    from stance_studio.core.training import TrainConfig

    cancel = ensure_flag(cancel)
    policy = policy or DEFAULT_POLICY
    progress(Progress("bench", 0, 1, "extraction: loading model"))
    base = load_base(model_spec)
    budget = parse_policy(policy).budget
    if budget is not None and budget * base.parameter_bytes() <= FILE_RESERVE_BYTES:
        return skipped(f"{policy} allows {budget * base.parameter_bytes():,.0f} bytes on this model, less than a "
                       f"checkpoint's metadata ({FILE_RESERVE_BYTES:,} bytes are kept for it)")
    with tempfile.TemporaryDirectory(prefix="stance-bench-") as tmp:
        try:
            ckpt = build_stance(base, "curious-uncertainty", "bench", TrainConfig(method="full"), policy,
                                library=Library(tmp), progress=progress, cancel=cancel)
        except PolicyError as exc:
            return skipped(f"{policy} cannot make a checkpoint of this model: {exc}")
        file_bytes = ckpt.path.stat().st_size
    share = file_bytes / base.parameter_bytes()
    retained = ckpt.metrics.get("retention")
    return figure(file_bytes, "the full delta (policy all)", ckpt.training["full_delta_bytes"],
                  "retention >= 97 % at <= 2 % of the base model's bytes",
                  retained is not None and retained >= 0.97 and share <= 0.02, unit="bytes", policy=policy,
                  share_of_base=share, retention=retained, bits_per_weight=ckpt.bits_per_weight)


MAX_REPEATS = 1000  # the median settles long before; a larger count is a typo that never ends

BENCHMARKS: dict[str, Callable[..., dict]] = {
    "blend_apply": bench_blend_apply,
    "cached_reload": bench_cached_reload,
    "side_by_side": bench_side_by_side,
    "runtime_generation": bench_runtime_generation,
    "training_step": bench_training_step,
    "training_memory": bench_training_memory,
    "extraction": bench_extraction,
    "library_scan": bench_library_scan,
    "library_rescan": bench_library_rescan,
}
