"""How long a side-by-side generation asked for during a training run waits for its
answer, through the GUI's own job runner (no window).

    python benchmarks/interactive_latency.py [--model bundled|tiny|PATH] [--steps 12]
                                             [--requests 3] [--tokens 32] [--columns 2]

A full training of curious-uncertainty runs on the model worker; once it has taken a
step, a generation (``--columns`` columns of base, ``--tokens`` tokens, greedy) is
submitted as interactive every few seconds. For each: the seconds from submitting it
to its result, and the same generation's time on an idle worker for reference. Also
the training's median step time: an interactive job waits at most for the step under
way. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--columns", type=int, default=2)
    args = parser.parse_args(argv)

    from PySide6.QtCore import QCoreApplication

    from stance_studio.core.blend import Blender
    from stance_studio.core.compare import VariantColumn, compare
    from stance_studio.core.datasets import load_dataset
    from stance_studio.core.generation import GenerationSettings
    from stance_studio.core.jobs import TrainStep
    from stance_studio.core.models import load_base
    from stance_studio.core.training import TrainConfig, train
    from stance_studio.qt.workers import JobRunner

    app = QCoreApplication.instance() or QCoreApplication(sys.argv[:1])
    base = load_base(args.model)
    blender = Blender(base)
    data = load_dataset("curious-uncertainty", base.tokenizer)
    settings = GenerationSettings(max_new_tokens=args.tokens)
    columns = [VariantColumn(f"base {i}", "base") for i in range(args.columns)]
    runner = JobRunner(threads=0)

    def wait(job) -> None:
        while job.is_active:
            app.processEvents()
            time.sleep(0.005)

    def generation(progress, cancel):
        return compare(base, blender, columns, "Why do we dream?", settings, progress, cancel)

    def timed(job) -> float:
        started = time.perf_counter()
        wait(job)
        if job.state != "finished":
            raise SystemExit(f"the generation ended {job.state}: {job.error}")
        return time.perf_counter() - started

    timed(runner.submit(generation, "warm-up", interactive=True))
    idle = [timed(runner.submit(generation, "idle", interactive=True)) for _ in range(2)]
    config = TrainConfig(method="full", steps=args.steps)
    training = runner.submit(lambda progress, cancel: train(base, data, config, progress, cancel), "training")
    steps: list[float] = []
    training.progressed.connect(lambda reports: steps.extend(
        r.partial.seconds for r in reports if isinstance(r.partial, TrainStep)))
    while not steps and training.is_active:
        app.processEvents()
        time.sleep(0.01)
    during = []
    for _ in range(args.requests):
        if not training.is_active:
            break
        during.append(timed(runner.submit(generation, "during training", interactive=True)))
        time.sleep(1.0)
    ran_during = training.is_active
    wait(training)
    if training.state != "finished":
        raise SystemExit(f"the training ended {training.state}: {training.error}")
    step_times = [b - a for a, b in zip(steps, steps[1:])]
    print(json.dumps({
        "model": base.model_id, "training_steps": args.steps, "columns": args.columns, "tokens": args.tokens,
        "generation_idle_s": [round(t, 2) for t in idle],
        "generation_during_training_s": [round(t, 2) for t in during],
        "all_answered_while_training_ran": ran_during,
        "median_training_step_s": round(statistics.median(step_times), 2) if step_times else None,
        "longest_training_step_s": round(max(step_times), 2) if step_times else None,
    }, indent=2))
    runner.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
