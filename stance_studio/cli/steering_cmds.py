"""``train --method steer`` and ``sweep-layers``: activation-steering stances from
the command line."""

from __future__ import annotations

from stance_studio.cli.common import (
    add_common,
    emit,
    eval_settings,
    human_bytes,
    load_model,
    open_library,
    progress_bar,
    sigint_cancel,
)


def add_steer_options(p) -> None:
    """The options of ``train`` that only ``--method steer`` reads."""
    from stance_studio.core.steering_build import DEFAULT_BAND, MODES, SteerConfig

    p.add_argument("--steer-mode", choices=MODES, default=None,
                   help="steer: mean difference of activations, or their first principal direction (default mean)")
    p.add_argument("--steer-band", default=None, metavar="A-B",
                   help=f"steer: depth fractions of the layers applied by default (default {DEFAULT_BAND})")
    p.add_argument("--strength", type=float, default=None,
                   help=f"steer: total multiple of a layer's vector the band adds at weight 1 (default {SteerConfig.strength:g})")


def cmd_train_steer(args) -> int:
    from stance_studio.core.datasets import load_dataset, load_probes
    from stance_studio.core.steering_build import SteerConfig, build_steering_stance

    given = {"mode": args.steer_mode, "band": args.steer_band, "strength": args.strength}
    config = SteerConfig(seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    dataset = load_dataset(args.dataset)
    probes = load_probes(args.prompts) if args.prompts else None
    library = open_library(args)
    library.check_new_name(args.name, args.overwrite, hint=" or pass --overwrite")
    cancel = sigint_cancel()
    base = load_model(args, cancel)
    ckpt = build_steering_stance(base, dataset, args.name, config, library=library, probes=probes,
                                 progress=progress_bar("steer"), cancel=cancel, overwrite=args.overwrite)
    size = ckpt.path.stat().st_size
    m = ckpt.metrics
    layers = ckpt.steering["apply_layers"]
    doc = {
        "checkpoint": str(ckpt.path), "name": ckpt.name, "bytes": size, "steps": 0, "loss": [],
        "nonfinite_steps": 0, "seconds": ckpt.training["seconds"], "method": "steer", "kind": ckpt.kind,
        "steering": ckpt.steering, "metrics": m,
    }
    text = (
        f"Saved {ckpt.name} to {ckpt.path}\n"
        f"  steering vectors ({config.mode}) at {len(ckpt.directions)} layers in {ckpt.training['seconds']:.0f} s, "
        f"{human_bytes(size)}; applied at layers {layers[0]}-{layers[-1]} (depth {config.band}), "
        f"strength {config.strength:g}\n"
        f"  on the probes: marker score {m['stance_score']:+.2f} (base {m['stance_score_base']:+.2f}), "
        f"KL to base {m['kl_to_base']:.3f}, identical to base {m['identical_fraction']:.0%}"
    )
    emit(args, doc, text)
    return 0


def register(sub) -> None:
    p = sub.add_parser("sweep-layers", help="a steering stance's metrics with its vector at each layer alone, "
                                            "against depth")
    add_common(p, suppress=True)
    p.add_argument("checkpoint", metavar="STEERING_CHECKPOINT")
    p.add_argument("--layers", metavar="N,N,...", help="layers to sweep (default: every layer)")
    p.add_argument("--every", type=int, default=1, metavar="K", help="sweep every K-th layer (default 1)")
    p.add_argument("--strength", type=float, default=None,
                   help="multiple of each layer's vector added there (default: the stance's build strength)")
    p.add_argument("--prompts", metavar="FILE", help="probe prompts, one per line (default: the shipped neutral probes)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N probes")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens per answer (default 48)")
    p.set_defaults(func=cmd_sweep_layers)


def _layer_list(args, ckpt) -> list[int]:
    from stance_studio.core.errors import StanceStudioError

    if args.every < 1:
        raise StanceStudioError("--every must be at least 1.")
    if args.layers is not None:
        try:
            layers = [int(x) for x in args.layers.split(",") if x.strip()]
        except ValueError as exc:
            raise StanceStudioError(f"Cannot read --layers {args.layers!r}; write layer numbers like 3,7,12.") from exc
        if not layers:
            raise StanceStudioError(f"--layers {args.layers!r} names no layer; write layer numbers like 3,7,12, "
                                    "or leave it out to sweep every layer.")
        return layers
    return sorted(ckpt.directions)[:: args.every]


def cmd_sweep_layers(args) -> int:
    from stance_studio.core.datasets import load_probes
    from stance_studio.core.errors import StanceStudioError
    from stance_studio.core.layer_sweep import sweep_layers, sweep_table

    ckpt = open_library(args).load(args.checkpoint)
    layers = _layer_list(args, ckpt)
    probes = load_probes(args.prompts)
    if args.limit is not None:
        if args.limit < 1:
            raise StanceStudioError("--limit must be at least 1.")
        probes = probes[: args.limit]
    settings = eval_settings(args)
    cancel = sigint_cancel()
    base = load_model(args, cancel)
    rows = sweep_layers(base, ckpt, probes, layers, args.strength, settings, progress=progress_bar("sweep-layers"),
                        cancel=cancel)
    doc = {"checkpoint": ckpt.name, "model": base.model_id, "num_layers": base.num_layers, "probes": len(probes),
           "rows": rows}
    emit(args, doc, f"{ckpt.name}: each layer's vector alone, {len(probes)} probes ({base.model_id})\n"
                    + sweep_table(rows))
    return 0


def inspect_steering(args, ckpt, base) -> int:
    """``inspect`` of a steering stance: its per-layer vector norms and where it applies."""
    from stance_studio.core.layer_sweep import depth_fraction
    from stance_studio.core.steering import applied_vectors

    applied = applied_vectors(ckpt)
    rows = [{"layer": n, "depth": depth_fraction(n, base.num_layers), "norm": float(v.norm()),
             "applied": n in applied, "applied_norm": float(applied[n].norm()) if n in applied else 0.0}
            for n, v in sorted(ckpt.directions.items())]
    doc = {"name": ckpt.name, "path": str(ckpt.path), "kind": ckpt.kind,
           "bytes": ckpt.path.stat().st_size if ckpt.path else ckpt.nbytes, "stance": ckpt.stance,
           "base": ckpt.base, "training": ckpt.training, "steering": ckpt.steering, "metrics": ckpt.metrics,
           "modules": [], "layers": rows}
    info = ckpt.steering
    lines = [f"{ckpt.name}  ({ckpt.path})",
             f"  made on   {ckpt.base.get('model', '?')} ({ckpt.base.get('num_layers', '?')} layers)",
             f"  kind      activation steering ({info.get('mode', '?')}), applied at layers "
             f"{', '.join(map(str, sorted(applied)))} × {info.get('scale', 1.0):.3g}",
             f"  size      {human_bytes(doc['bytes'])}",
             f"    {'layer':>5} {'depth':>6} {'|v|':>9}  applied"]
    lines += [f"    {r['layer']:>5} {r['depth']:>6.2f} {r['norm']:>9.4g}  {'yes' if r['applied'] else ''}" for r in rows]
    emit(args, doc, "\n".join(lines))
    return 0
