"""Retention and size of extraction policies on one fully tuned stance.

Trains a stance with the default full fine-tuning on the bundled model (or --model),
then extracts the delta with each candidate policy and measures its retention on the
probe prompts (DESIGN.md's definition) and its bytes as a share of the base model.
This is the measurement behind extraction.DEFAULT_POLICY.

    python benchmarks/extraction_policies.py [--model SPEC] [--dataset NAME] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from stance_studio.core.blend import Blender
from stance_studio.core.datasets import encode_example, load_dataset, load_probes
from stance_studio.core.extraction import DEFAULT_POLICY, extract
from stance_studio.core.metrics import retention_probe
from stance_studio.core.models import load_base
from stance_studio.core.training import TrainConfig, train

CANDIDATES = [
    "top:2", "top:50", "top:100", "rank:1", "rank:4", "rank:8", "rank:16", "rank:16+fp16",
    "rank:32+fp16", "energy:0.5+fp16", "energy:0.8+fp16", "top:100+rank:16+fp16", "all",
    "budget:0.02+fp16", "rank:16+aware+fp16", "budget:0.02+aware+fp16",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dataset", default="curious-uncertainty")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--policies", nargs="*", default=None)
    args = parser.parse_args(argv)
    base = load_base(args.model)
    data = load_dataset(args.dataset, base.tokenizer)
    t0 = time.perf_counter()
    result = train(base, data, TrainConfig())
    print(f"trained {data.name}: {result.steps} steps in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    blender = Blender(base)
    probe = retention_probe(base, blender, result.deltas, load_probes())
    base_bytes = base.parameter_bytes()
    rows = []
    policies = args.policies or CANDIDATES
    if DEFAULT_POLICY not in policies:
        policies.append(DEFAULT_POLICY)
    print(f"{'policy':<24} {'modules':>7} {'bytes':>12} {'% of base':>9} {'retention':>9}")
    calibration = [encode_example(base.tokenizer, ex)[0] for ex in data.examples]
    for policy in policies:
        kept, info = extract(result.deltas, base, policy, calibration=calibration)
        ret = probe.measure(base, blender, kept)
        row = {"policy": policy, "modules": len(kept), "bytes": info["bytes"],
               "fraction_of_base": info["bytes"] / base_bytes, "retention": ret}
        rows.append(row)
        mark = "  (default)" if policy == DEFAULT_POLICY else ""
        print(f"{policy:<24} {len(kept):>7} {info['bytes']:>12,} {100 * row['fraction_of_base']:>8.2f}% {ret:>9.3f}{mark}",
              flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": base.model_id, "dataset": data.name, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
