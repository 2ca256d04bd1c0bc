"""Retention and size of extraction policies on one fully tuned stance.

Trains a stance with the default full fine-tuning on the bundled model (or --model),
then extracts the delta with each candidate policy and measures its retention on the
probe prompts (DESIGN.md's definition) and its bytes as a share of the base model.
This is the measurement behind extraction.DEFAULT_POLICY; the same job is
``stance-studio compare-policies`` and the app's Experiments window.

    python benchmarks/extraction_policies.py [--model SPEC] [--dataset NAME] [--json OUT] [--policies P ...]
"""

from __future__ import annotations

import argparse
import json
import sys

from stance_studio.core.experiments import compare_policies
from stance_studio.core.extraction import DEFAULT_POLICY
from stance_studio.core.models import load_base
from stance_studio.core.training import TrainConfig

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
    policies = list(args.policies or CANDIDATES)
    if DEFAULT_POLICY not in policies:
        policies.append(DEFAULT_POLICY)
    print(f"{'policy':<24} {'modules':>7} {'bytes':>12} {'% of base':>9} {'retention':>9}")

    def show(p) -> None:
        row = p.info.get("row")
        if row is None:
            return
        ret = "–" if row["retention"] is None else f"{row['retention']:.3f}"
        mark = "  (default)" if row["default"] else ""
        print(f"{row['policy']:<24} {row['modules']:>7} {row['bytes']:>12,} {100 * row['fraction_of_base']:>8.2f}% "
              f"{ret:>9}{mark}", flush=True)

    result = compare_policies(base, args.dataset, policies, TrainConfig(), progress=show)
    t = result["training"]
    print(f"trained {t['dataset']}: {t['steps']} steps in {t['seconds']:.0f} s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": base.model_id, "dataset": t["dataset"], **result}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
