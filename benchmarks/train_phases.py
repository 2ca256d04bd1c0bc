"""What ``train`` spends after its steps, as a share of the steps, measured in CPU time.

Runs the ``train`` job (``pipeline.build_stance``) with the defaults on the bundled
model (or --model) for a few steps, and reports each phase's wall and CPU seconds
(progress stages: train, extract, answers, retention, fit, save). With ``--threads 1``
the CPU seconds do not depend on what else the machine runs (no thread waits for
another), so the ratio of the phases after training to the steps, scaled to the
default 20 steps, is the same on a loaded machine as on a quiet one.

    python benchmarks/train_phases.py [--model SPEC] [--steps 3] [--threads 1] [--keep POLICY] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from stance_studio.core.extraction import DEFAULT_POLICY
from stance_studio.core.library import Library
from stance_studio.core.models import load_base
from stance_studio.core.pipeline import build_stance
from stance_studio.core.training import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dataset", default="curious-uncertainty")
    parser.add_argument("--steps", type=int, default=3, help="steps measured (scaled to --scale-to)")
    parser.add_argument("--scale-to", type=int, default=TrainConfig.steps, help="the steps of a default run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", default=DEFAULT_POLICY, help=f"extraction policy (default {DEFAULT_POLICY})")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load_base(args.model)
    marks: list[tuple[str, float, float]] = []
    steps_cpu: list[float] = []

    def progress(p) -> None:
        now = (time.perf_counter(), time.process_time())
        if not marks or marks[-1][0] != p.stage:
            marks.append((p.stage, *now))
            print(f"[{now[0] - marks[0][1]:7.1f} s wall, {now[1] - marks[0][2]:7.1f} s cpu] {p.stage}: {p.message}",
                  flush=True)
        if p.stage == "train" and p.info.get("loss") is not None:
            steps_cpu.append(now[1])

    with tempfile.TemporaryDirectory() as folder:
        ckpt = build_stance(base, args.dataset, "phases", TrainConfig(steps=args.steps), args.keep, library=Library(folder),
                            progress=progress)
        marks.append(("end", time.perf_counter(), time.process_time()))
    cpu = {a[0]: b[2] - a[2] for a, b in zip(marks, marks[1:])}
    # the training steps alone: from the first step's start (the copy is made before it)
    per_step = (steps_cpu[-1] - steps_cpu[0]) / max(len(steps_cpu) - 1, 1)
    after = sum(v for k, v in cpu.items() if k not in ("train",))
    doc = {"model": base.model_id, "threads": args.threads, "steps": args.steps, "cpu_seconds_per_step": per_step,
           "cpu_seconds_by_phase": cpu, "cpu_seconds_after_training": after,
           "share_of_default_steps": after / (per_step * args.scale_to),
           "seconds_phases": ckpt.metrics.get("seconds_phases")}
    print(json.dumps(doc, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)


if __name__ == "__main__":
    main()
