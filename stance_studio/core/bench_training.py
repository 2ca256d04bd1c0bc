"""Training figures of ``stance-studio bench``: full fine-tuning step time and peak
memory, each against a plain transformers ``Trainer`` loop on the same model copy,
data, batch size, optimiser and number of steps, measured in the same run.

Memory is each loop's peak resident set size in a fresh child process
(``ru_maxrss``), so one loop's allocations never hide in the other's high-water mark.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from stance_studio.core.bench_figures import figure
from stance_studio.core.errors import StanceStudioError
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.runtime import base_copy

DATASET = "curious-uncertainty"
BATCH = 4
MEMORY_TARGET_BYTES = int(4.5e9)


def _ours(base, data, steps: int, cancel: CancelFlag) -> list[float]:
    """Wall-clock time of each step of our full fine-tuning loop, the first left out."""
    from stance_studio.core.training import TrainConfig, train

    ends: list[float] = []
    train(base, data, TrainConfig(method="full", steps=steps, batch_size=BATCH),
          progress=lambda p: ends.append(time.perf_counter()) if p.stage == "train" and p.done else None,
          cancel=cancel)
    return [b - a for a, b in zip(ends, ends[1:])]


def _trainer(base, data, steps: int, cancel: CancelFlag) -> list[float]:
    """The same with transformers' ``Trainer`` (AdamW, constant lr, clip 1.0, CPU)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from stance_studio.core.datasets import collate
    from stance_studio.core.training import DEFAULT_LR

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())
            control.should_training_stop = cancel.is_set()

    model = base_copy(base.model)  # the true base, whatever blend is shown
    for p in model.parameters():
        p.requires_grad_(True)
    examples = data.examples
    items = [examples[i % len(examples)] for i in range(steps * BATCH)]
    with tempfile.TemporaryDirectory(prefix="stance-bench-trainer-") as out:
        args = TrainingArguments(
            output_dir=out, use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
            eval_strategy="no", disable_tqdm=True, max_steps=steps, per_device_train_batch_size=BATCH,
            learning_rate=DEFAULT_LR["full"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
            max_grad_norm=1.0, optim="adamw_torch", dataloader_drop_last=True, remove_unused_columns=False,
            dataloader_pin_memory=False, seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=items,
                          data_collator=lambda batch: collate(base.tokenizer, batch), callbacks=[Clock()])
        for printer in (PrinterCallback, ProgressCallback):  # stdout belongs to --json
            trainer.remove_callback(printer)
        trainer.train()
    cancel.raise_if_set("benchmark")
    return [b - a for a, b in zip(ends, ends[1:])]


LOOPS = {"ours": _ours, "trainer": _trainer}


def bench_training_step(model_spec=None, repeats: int = 3, progress: ProgressCallback = no_progress,
                        cancel: Optional[CancelFlag] = None, steps: int = 6) -> dict:
    """Median step time of full fine-tuning against a plain ``Trainer`` loop."""
    from stance_studio.core.datasets import load_dataset, model_context
    from stance_studio.core.models import load_base

    cancel = ensure_flag(cancel)
    runs = max(1, repeats // 2)
    progress(Progress("bench", 0, 2 * runs, "training step: loading model"))
    base = load_base(model_spec)
    data = load_dataset(DATASET, base.tokenizer, model_context(base))
    times: dict[str, list[float]] = {"ours": [], "trainer": []}
    for run in range(runs):
        for i, (name, loop) in enumerate(LOOPS.items()):  # interleaved, so drift hits both alike
            cancel.raise_if_set("benchmark")
            progress(Progress("bench", 2 * run + i, 2 * runs, f"training step: {name}, run {run + 1}/{runs}"))
            times[name] += loop(base, data, steps, cancel)
    progress(Progress("bench", 2 * runs, 2 * runs, "training step: done"))
    ours, theirs = statistics.median(times["ours"]), statistics.median(times["trainer"])
    return figure(ours, "transformers Trainer loop, same data and batch", theirs,
                  "step time <= the Trainer loop's", ours <= theirs, steps_per_run=steps, runs=runs)


def bench_training_memory(model_spec=None, repeats: int = 3, progress: ProgressCallback = no_progress,
                          cancel: Optional[CancelFlag] = None, steps: int = 3) -> dict:
    """Peak resident memory of a full fine-tuning process against the same process
    running the ``Trainer`` loop; ``added_bytes`` is what training adds to the
    loaded model."""

    cancel = ensure_flag(cancel)
    runs = max(1, repeats // 3)
    samples: dict[str, list[dict]] = {"ours": [], "trainer": []}
    for run in range(runs):
        for i, name in enumerate(LOOPS):
            progress(Progress("bench", 2 * run + i, 2 * runs, f"training memory: {name}, run {run + 1}/{runs}"))
            samples[name].append(_measure_in_child(name, model_spec, steps, cancel))
    progress(Progress("bench", 2 * runs, 2 * runs, "training memory: done"))
    peak = {n: int(statistics.median(s["peak_bytes"] for s in samples[n])) for n in LOOPS}
    added = {n: int(statistics.median(max(0, s["peak_bytes"] - s["loaded_bytes"]) for s in samples[n])) for n in LOOPS}
    return figure(peak["ours"], "transformers Trainer loop, same data and batch", peak["trainer"],
                  "peak <= 4.5 GB", peak["ours"] <= MEMORY_TARGET_BYTES, unit="bytes", added_bytes=added["ours"],
                  baseline_added_bytes=added["trainer"], steps_per_run=steps, runs=runs)


def _measure_in_child(loop: str, model_spec, steps: int, cancel: CancelFlag) -> dict:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "stance_studio.core.bench_training", loop, str(model_spec or ""), str(steps)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        while proc.poll() is None:
            if cancel.is_set():
                proc.kill()
                proc.wait()
                cancel.raise_if_set("benchmark")
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        lines = out.read().decode(errors="replace").strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = err.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise StanceStudioError(f"Memory measurement of the {loop} loop failed (exit {proc.returncode}): {tail[0]}")
    return json.loads(lines[-1])


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB elsewhere


def _rss_bytes() -> int:
    """The current resident set size (the peak so far where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _max_rss_bytes()


def _child(argv: list[str]) -> None:
    """Load the model, note its resident size, run one loop, print that and the peak as JSON."""
    from stance_studio.core.datasets import load_dataset, model_context
    from stance_studio.core.models import load_base

    loop, spec, steps = argv[0], argv[1] or None, int(argv[2])
    base = load_base(spec)
    data = load_dataset(DATASET, base.tokenizer, model_context(base))
    loaded = _rss_bytes()
    LOOPS[loop](base, data, steps, ensure_flag(None))
    print(json.dumps({"loaded_bytes": loaded, "peak_bytes": _max_rss_bytes()}))


if __name__ == "__main__":
    _child(sys.argv[1:])
