"""Retention, size and bits per weight of extraction policies on one fully tuned stance.

Trains a stance with the default full fine-tuning on the bundled model (or --model),
then extracts the delta with each candidate policy and measures its retention on the
probe prompts (DESIGN.md's definition), its bytes as a share of the base model and
its bits per touched weight. This is the measurement behind
extraction.DEFAULT_POLICY; the same job is ``stance-studio compare-policies`` and the
app's Experiments window.

Training takes minutes on a CPU, so ``--save-delta FILE`` keeps the fully tuned delta
(a plain safetensors file of float32 tensors, one per changed parameter) and
``--delta FILE`` measures more policies against it later without training again.

    python benchmarks/extraction_policies.py [--model SPEC] [--dataset NAME] [--json OUT]
        [--policies P ...] [--save-delta FILE | --delta FILE]
"""

from __future__ import annotations

import argparse
import json
import sys

from safetensors.torch import load_file, save_file

from stance_studio.core.datasets import encode_example, load_probes
from stance_studio.core.deltas import DenseDelta
from stance_studio.core.experiments import measure_policies, parse_policies
from stance_studio.core.extraction import DEFAULT_POLICY
from stance_studio.core.jobs import MeasuredRow
from stance_studio.core.models import load_base
from stance_studio.core.pipeline import validated_dataset
from stance_studio.core.training import TrainConfig, train

CANDIDATES = [
    "top:2", "top:100", "rank:1", "rank:4", "rank:16+fp16", "rank:32+fp16", "rank:16+q4", "rank:64+mixed",
    "energy:0.8+fp16", "sign", "dare:0.9+fp16", "all",
    "budget:0.02+fp16", "budget:0.02+q8+fp16", "budget:0.02+q4+fp16", "budget:0.02+mixed+fp16",
    "budget:0.02+mixed+sign+fp16", "budget:0.02+mixed+sign+dare:0.9+fp16",
    "budget:0.01+fp16", "budget:0.01+mixed+fp16", "budget:0.01+mixed+sign+fp16",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dataset", default="curious-uncertainty")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--policies", nargs="*", default=None)
    parser.add_argument("--save-delta", default=None, metavar="FILE", help="keep the fully tuned delta in FILE")
    parser.add_argument("--delta", default=None, metavar="FILE", help="measure against this kept delta (no training)")
    args = parser.parse_args(argv)
    base = load_base(args.model)
    policies = parse_policies(args.policies or CANDIDATES)
    data = validated_dataset(base, args.dataset)
    if args.delta:
        deltas = {n: DenseDelta(t.float()) for n, t in load_file(args.delta).items()}
        trained = {"dataset": data.name, "delta": args.delta}
    else:
        result = train(base, data, TrainConfig())
        deltas = result.deltas
        trained = {"dataset": data.name, "steps": result.steps, "seconds": result.seconds}
        print(f"trained {data.name}: {result.steps} steps in {result.seconds:.0f} s", file=sys.stderr)
        if args.save_delta:
            save_file({n: d.materialize().contiguous() for n, d in deltas.items()}, args.save_delta)
    base_bytes = base.parameter_bytes()
    print(f"{'policy':<38} {'modules':>7} {'bytes':>12} {'% of base':>9} {'bits/w':>7} {'retention':>9}")

    def show(p) -> None:
        if not isinstance(p.partial, MeasuredRow):
            return
        row = p.partial.row
        if row.get("error"):
            print(f"{row['policy']:<38} failed: {row['error']}", flush=True)
            return
        ret = "–" if row["retention"] is None else f"{row['retention']:.3f}"
        mark = "  (default)" if row["default"] else ""
        print(f"{row['policy']:<38} {row['modules']:>7} {row['bytes']:>12,} {100 * row['bytes'] / base_bytes:>8.2f}% "
              f"{row['bits_per_weight']:>7.3f} {ret:>9}{mark}", flush=True)

    calibration = [encode_example(base.tokenizer, ex)[0] for ex in data.examples]
    measured = measure_policies(base, deltas, policies, load_probes(), calibration, progress=show)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": base.model_id, "training": trained, "base_model_bytes": base_bytes,
                       "default": DEFAULT_POLICY, **measured}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
