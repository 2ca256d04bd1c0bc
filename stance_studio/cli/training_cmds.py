"""``train``, ``evaluate``, ``compare-methods`` and ``compare-policies``: the training
engine and the report's comparisons from the command line."""

from __future__ import annotations

from stance_studio.cli.common import (
    add_common,
    add_map_layers,
    emit,
    eval_settings,
    human_bytes,
    load_model,
    map_layers,
    open_library,
    progress_bar,
    sigint_cancel,
)


def register(sub) -> None:
    from stance_studio.core.extraction import DEFAULT_POLICY

    p = sub.add_parser("train", help="train a stance dataset into a checkpoint in the library")
    add_common(p, suppress=True)
    p.add_argument("dataset", metavar="DATASET", help="a JSONL file, or a built-in stance name (e.g. curious-uncertainty)")
    p.add_argument("--name", required=True, help="the checkpoint's name in the library")
    p.add_argument("--method", choices=("full", "selective", "lora", "steer"), default="full",
                   help="how to encode the stance; steer builds activation-steering vectors (no training run)")
    p.add_argument("--modules", metavar="PATTERN,...",
                   help="modules to train (selective/lora): e.g. q_proj,v_proj, layers.13.self_attn.q_proj, depth:0.6:v_proj")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default 20)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 5e-5 full, 1e-4 selective, 1e-3 lora)")
    p.add_argument("--rank", type=int, default=None, help="LoRA rank (default 8)")
    p.add_argument("--batch-size", type=int, default=None, help="examples per step (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", default=None, metavar="POLICY",
                   help=f"extraction policy: all, top:K, rank:R, energy:F, budget:F, aware, fp16, bf16, q8, q4, mixed, "
                        f"sign or dare:P, combined with + (default {DEFAULT_POLICY})")
    p.add_argument("--prompts", metavar="FILE", help="probe prompts for the retention measurement (one per line)")
    p.add_argument("--holdout", type=float, default=None, metavar="F",
                   help="share of the dataset kept out of training for stance fit (default 0.25, at least 2 "
                        "examples; 0 = none)")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint of the same name")
    p.add_argument("--fsdp", action="store_true",
                   help="under torchrun/accelerate launch: shard the model over the processes (FSDP full-shard) "
                        "instead of copying it to each (DDP)")
    from stance_studio.cli.steering_cmds import add_steer_options

    add_steer_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="measure a variant's stance on the probe prompts")
    add_common(p, suppress=True)
    p.add_argument("spec", metavar="SPEC", help="base, a stance name, or a blend 'a=0.7,b=-0.3'")
    p.add_argument("--prompts", metavar="FILE",
                   help="probe prompts: JSONL {prompt, category} or one per line (default: the shipped neutral probes)")
    p.add_argument("--stance", metavar="NAME",
                   help="stance to score against: a library checkpoint (its dataset and held-out split), a dataset "
                        "file, or a built-in stance (default: the checkpoint's own; none for base)")
    p.add_argument("--capability-tokens", type=int, default=None, metavar="N",
                   help="tokens of the neutral text scored for capability cost (default 2048; 0 = skip)")
    p.add_argument("--by-category", action="store_true", help="also print the metrics per probe category")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens per answer (default 48)")
    p.add_argument("--allow-mismatch", action="store_true", help="apply checkpoints made on another base model")
    add_map_layers(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare-methods", help="train the report's five methods on one dataset and measure each")
    add_common(p, suppress=True)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--steps", type=int, default=None, help="steps per method (default: each method's default)")
    p.add_argument("--lr", type=float, default=None, help="learning rate of every method (default: each method's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="repeat with seeds SEED … SEED+N-1 and report mean ± spread (default 1)")
    p.add_argument("--holdout", type=float, default=None, metavar="F", help="held-out share of the dataset (default 0.25)")
    p.add_argument("--prompts", metavar="FILE", help="probe prompts, one per line")
    p.set_defaults(func=cmd_compare)

    from stance_studio.core.experiments import POLICY_CANDIDATES

    p = sub.add_parser("compare-policies",
                       help="train a dataset once and measure size and retention of each extraction policy")
    add_common(p, suppress=True)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--keep", action="append", metavar="POLICY",
                   help="a policy to compare (repeat it); default: " + " ".join(POLICY_CANDIDATES))
    p.add_argument("--method", choices=("full", "selective", "lora"), default="full")
    p.add_argument("--modules", metavar="PATTERN,...", help="modules to train (selective/lora)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default 20)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--rank", type=int, default=None, help="LoRA rank (default 8)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="repeat with seeds SEED … SEED+N-1 and report mean ± spread (default 1)")
    p.add_argument("--holdout", type=float, default=None, metavar="F", help="held-out share of the dataset (default 0.25)")
    p.add_argument("--prompts", metavar="FILE", help="probe prompts for the retention measurement")
    p.set_defaults(func=cmd_compare_policies)


def _config(args):
    from stance_studio.core.training import TrainConfig

    _refuse_options_across_training_methods(args)
    fields = {"method": args.method, "seed": args.seed}
    for attr, key in (("steps", "steps"), ("lr", "lr"), ("rank", "rank"), ("batch_size", "batch_size"),
                      ("holdout", "holdout")):
        if getattr(args, attr) is not None:
            fields[key] = getattr(args, attr)
    if args.modules is not None:
        fields["modules"] = [args.modules]
    if getattr(args, "fsdp", False):
        fields["fsdp"] = True
    return TrainConfig(**fields)


# Options that only some methods read: given with another method they would be
# ignored in silence, and the checkpoint would not be what the command line says.
_TRAINING_ONLY = ("modules", "steps", "lr", "rank", "batch_size", "keep", "holdout")
_STEER_ONLY = ("steer_mode", "steer_band", "strength")


def _refuse_options_across_steer(args) -> None:
    """Training options with ``--method steer``, or steering options without it."""
    from stance_studio.core.errors import StanceStudioError

    def flag(attr: str) -> str:
        return "--" + attr.replace("_", "-")

    if args.method == "steer":
        given = [flag(a) for a in _TRAINING_ONLY if getattr(args, a) is not None] + (["--fsdp"] if args.fsdp else [])
        if given:
            raise StanceStudioError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to "
                                    "--method steer (it builds steering vectors, no training run); leave "
                                    f"{'it' if len(given) == 1 else 'them'} out.")
        return
    given = [flag(a) for a in _STEER_ONLY if getattr(args, a) is not None]
    if given:
        raise StanceStudioError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --method steer only; "
                                f"leave {'it' if len(given) == 1 else 'them'} out or add --method steer.")


def _refuse_options_across_training_methods(args) -> None:
    """``--modules`` with full fine-tuning, ``--rank`` with anything but LoRA (train and
    compare-policies)."""
    from stance_studio.core.errors import StanceStudioError

    if args.method == "full" and args.modules is not None:
        raise StanceStudioError("--modules applies to --method selective and lora; --method full trains every "
                                "parameter. Leave it out, or choose --method selective or lora.")
    if args.method != "lora" and args.rank is not None:
        raise StanceStudioError(f"--rank is the LoRA rank and applies to --method lora only (not {args.method}); "
                                "to keep a low-rank delta, use --keep rank:R.")


def cmd_train(args) -> int:
    from stance_studio.core import distributed
    from stance_studio.core.jobs import no_progress
    from stance_studio.core.datasets import load_dataset, load_probes
    from stance_studio.core.extraction import DEFAULT_POLICY, parse_policy
    from stance_studio.core.pipeline import build_stance

    _refuse_options_across_steer(args)
    if args.method == "steer":
        from stance_studio.cli.steering_cmds import cmd_train_steer

        return cmd_train_steer(args)
    # Every input is checked before the model loads, so a typo fails in a second.
    config = _config(args)
    policy = parse_policy(DEFAULT_POLICY if args.keep is None else args.keep)
    dataset = load_dataset(args.dataset)
    probes = load_probes(args.prompts) if args.prompts else None
    library = open_library(args)
    library.check_new_name(args.name, args.overwrite, hint=" or pass --overwrite")
    library.check_writable()
    cancel = sigint_cancel()
    main_rank = distributed.is_main()
    base = load_model(args, cancel)
    try:
        ckpt = build_stance(base, dataset, args.name, config, policy, library=library, probes=probes,
                            progress=progress_bar("train") if main_rank else no_progress, cancel=cancel,
                            overwrite=args.overwrite)
    finally:
        distributed.finish()
    if ckpt is None:  # another rank than 0 of a torchrun/accelerate run: rank 0 reports
        return 0
    size = ckpt.path.stat().st_size
    doc = {
        "checkpoint": str(ckpt.path),
        "name": ckpt.name,
        "bytes": size,
        "steps": ckpt.training["steps"],
        "loss": ckpt.training["loss"],
        "nonfinite_steps": ckpt.training["nonfinite_steps"],
        "seconds": ckpt.training["seconds"],
        "method": ckpt.method,
        "policy": ckpt.extraction["policy"],
        "bits_per_weight": ckpt.bits_per_weight,
        "metrics": ckpt.metrics,
        "holdout": ckpt.training.get("holdout", {}).get("prompts", []),
    }
    finite = [x for x in ckpt.training["loss"] if x is not None]
    text = (
        f"Saved {ckpt.name} to {ckpt.path}\n"
        f"  method {ckpt.method}, {ckpt.training['steps']} steps in {ckpt.training['seconds']:.0f} s, "
        f"loss {finite[0]:.3f} → {finite[-1]:.3f}, {ckpt.training['nonfinite_steps']} non-finite steps skipped\n"
        f"  kept {len(ckpt.deltas)} modules with policy {ckpt.extraction['policy']}: {human_bytes(size)} "
        f"({100 * size / ckpt.metrics['base_model_bytes']:.2f} % of the base model, "
        f"{ckpt.bits_per_weight:.2f} bits per touched weight), "
        f"retention {_retention(ckpt.metrics['retention'])}\n"
        f"  tuned model on the probes: marker score {ckpt.metrics['tuned_stance_score']:+.2f}, "
        f"KL to base {ckpt.metrics['tuned_kl_to_base']:.3f}\n"
        f"  stance fit {_fit(ckpt.metrics.get('stance_fit_nats'), ckpt.metrics.get('stance_fit_ci95'))} nats/token on "
        f"{len(doc['holdout'])} held-out examples, {_fit(ckpt.metrics.get('stance_fit_train_nats'), None)} on the "
        "training examples"
    ) if finite else f"Saved {ckpt.name} to {ckpt.path}"
    emit(args, doc, text)
    return 0


def _fit(value, ci) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def _retention(value) -> str:
    return "undefined (training did not move the model on the probes)" if value is None else f"{value:.3f}"


def cmd_evaluate(args) -> int:
    from stance_studio.cli.evaluate_report import evaluate_text
    from stance_studio.core.blend import Blender
    from stance_studio.core.capability import DEFAULT_TOKENS
    from stance_studio.core.errors import StanceStudioError
    from stance_studio.core.metrics import evaluate
    from stance_studio.core.probes import load_probe_set
    from stance_studio.core.stance_reference import own_stance, resolve_stance
    from stance_studio.core.variants import parse_variant, resolve_variant

    variant = parse_variant(args.spec)
    library = open_library(args)
    blend = resolve_variant(variant, library)
    probes = load_probe_set(args.prompts)
    settings = eval_settings(args)
    tokens = DEFAULT_TOKENS if args.capability_tokens is None else args.capability_tokens
    if tokens < 0 or tokens == 1:
        raise StanceStudioError("--capability-tokens must be 0 (skip) or at least 2.")
    if args.stance:
        stance = resolve_stance(args.stance, library)
    else:  # the checkpoint's own stance; in a blend, the one with the largest weight; none for base
        stance = own_stance(blend, strict=False)
    cancel = sigint_cancel()
    base = load_model(args, cancel)
    blend = map_layers(args, [blend], base)[0]
    metrics = evaluate(base, Blender(base), blend, list(probes.prompts), settings, progress=progress_bar("evaluate"),
                       cancel=cancel, allow_mismatch=args.allow_mismatch, categories=list(probes.categories),
                       stance=stance, capability_tokens=tokens)
    doc = {"variant": variant.spec, "model": base.model_id, "probes": len(probes), **metrics.as_json()}
    emit(args, doc, evaluate_text(variant.spec, base.model_id, doc, by_category=args.by_category))
    return 0


def _seeds(args) -> int:
    from stance_studio.core.seeds import check_seeds

    return check_seeds(args.seeds, args.seed, "--seeds")  # before the model loads


def cmd_compare(args) -> int:
    from stance_studio.core.datasets import load_dataset, load_probes
    from stance_studio.core.holdout import DEFAULT_HOLDOUT, check_fraction
    from stance_studio.core.seeds import compare_methods_seeds
    from stance_studio.core.training import TrainConfig

    seeds = _seeds(args)
    holdout = check_fraction(DEFAULT_HOLDOUT if args.holdout is None else args.holdout)
    TrainConfig(**{k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None})  # refused before the load
    dataset = load_dataset(args.dataset)
    probes = load_probes(args.prompts) if args.prompts else None
    cancel = sigint_cancel()
    base = load_model(args, cancel)
    result = compare_methods_seeds(base, dataset, seeds=seeds, seed=args.seed, probes=probes, steps=args.steps,
                                   lr=args.lr, holdout=holdout, progress=progress_bar("compare"), cancel=cancel)
    lines = [result.text(), *result.errors(), result.uncertainty_note(args.seed)]
    emit(args, {"dataset": args.dataset, "model": base.model_id, **result.as_json()}, "\n".join(lines))
    return 0


def cmd_compare_policies(args) -> int:
    from stance_studio.core.datasets import load_dataset, load_probes
    from stance_studio.core.experiments import POLICY_CANDIDATES, parse_policies
    from stance_studio.core.seeds import compare_policies_seeds

    seeds = _seeds(args)
    config = _config(args)
    policies = parse_policies(args.keep or POLICY_CANDIDATES)
    dataset = load_dataset(args.dataset)
    probes = load_probes(args.prompts) if args.prompts else None
    cancel = sigint_cancel()
    base = load_model(args, cancel)
    result = compare_policies_seeds(base, dataset, policies, config, seeds=seeds, probes=probes,
                                    progress=progress_bar("compare"), cancel=cancel)
    t = result.training
    lines = [f"{t['dataset']}: {t['method']} training, {t['steps']} steps in {t['seconds']:.0f} s; "
             f"the full delta is {human_bytes(t['full_delta_bytes'])}", result.text(), *result.errors()]
    if seeds > 1:
        lines.append(result.uncertainty_note(args.seed))
    emit(args, {"dataset": args.dataset, "model": base.model_id, **result.as_json()}, "\n".join(lines))
    return 0
