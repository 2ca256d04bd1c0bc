"""``sweep`` and ``interference``: dose–response and the overlap of two stances'
deltas from the command line."""

from __future__ import annotations

import re

from stance_studio.cli.common import add_common, emit, eval_settings, load_model, open_library, progress_bar, sigint_cancel


def register(sub) -> None:
    from stance_studio.core.sweep import DEFAULT_ALPHAS, DEFAULT_GRID

    p = sub.add_parser("sweep", help="measure a stance or blend across weights (dose–response), or a grid of two")
    add_common(p, suppress=True)
    p.add_argument("spec", metavar="SPEC",
                   help="a stance name or a blend 'a=1,b=-0.5' (scaled as a whole by α); with --grid, two stances 'A,B'")
    p.add_argument("--alpha", metavar="LO:HI:STEP",
                   help=f"weights α (default {DEFAULT_ALPHAS}; with --grid {DEFAULT_GRID}); also a list '0,0.5,1'")
    p.add_argument("--grid", action="store_true", help="measure every (α, β): α scales the first stance, β the second")
    p.add_argument("--beta", metavar="LO:HI:STEP", help="weights β of the second stance with --grid (default: as --alpha)")
    p.add_argument("--prompts", metavar="FILE", help="probe prompts, one per line (default: the shipped neutral probes)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens per answer (default 48)")
    p.add_argument("--stance", metavar="NAME",
                   help="the stance to score against (a checkpoint, dataset file or built-in stance; default: the "
                        "first direction's own)")
    p.add_argument("--allow-mismatch", action="store_true", help="apply checkpoints made on another base model")
    p.set_defaults(func=cmd_sweep)
    # Weights such as "-1:2:0.25" start with a minus sign: argparse would read them
    # as an option unless they count as negative numbers here (no option of this
    # command starts with "-" and a digit, so nothing is shadowed).
    p._negative_number_matcher = re.compile(r"^-\.?\d")

    p = sub.add_parser("interference", help="per-layer cosine similarity and sign conflict of two stances' deltas")
    add_common(p, suppress=True)
    p.add_argument("a", metavar="A", help="a library name or a path")
    p.add_argument("b", metavar="B", help="a library name or a path")
    p.add_argument("--allow-mismatch", action="store_true", help="compare stances made on different base models")
    p.set_defaults(func=cmd_interference)


def sweep_plan(spec: str, grid: bool, alpha: str | None, beta: str | None):
    """(directions as [(name, weight)] lists, weights per axis) for a sweep's arguments."""
    from stance_studio.core.errors import SweepRangeError
    from stance_studio.core.sweep import DEFAULT_ALPHAS, DEFAULT_GRID, parse_range
    from stance_studio.core.variants import parse_variant

    variant = parse_variant(spec)
    if variant.is_base:
        raise SweepRangeError("Sweeping base changes nothing; name a stance or a blend, e.g. 'curious' or 'a=1,b=-0.5'.")
    if not grid:
        if beta is not None:
            raise SweepRangeError("--beta applies to a grid; add --grid and name two stances 'A,B'.")
        return [list(variant.weights)], [parse_range(DEFAULT_ALPHAS if alpha is None else alpha)]
    if len(variant.weights) != 2:
        raise SweepRangeError(f"A grid sweeps two stances; write 'A,B' (got {spec!r}).")
    alphas = parse_range(DEFAULT_GRID if alpha is None else alpha)
    betas = parse_range(beta) if beta is not None else alphas
    return [[term] for term in variant.weights], [alphas, betas]


def cmd_sweep(args) -> int:
    from stance_studio.core.blend import Blender
    from stance_studio.core.datasets import load_probes
    from stance_studio.core.experiment_tables import to_text
    from stance_studio.core.sweep import run_sweep
    from stance_studio.core.sweep_tables import columns, grid_matrix, label, plotted

    named, weights = sweep_plan(args.spec, args.grid, args.alpha, args.beta)
    library = open_library(args)
    directions = [[(library.load(name), w) for name, w in terms] for terms in named]
    options = {}
    if args.stance:
        from stance_studio.core.stance_reference import resolve_stance

        options["stance"] = resolve_stance(args.stance, library)
    probes = load_probes(args.prompts)
    settings = eval_settings(args)
    cancel = sigint_cancel()
    base = load_model(args, cancel)
    result = run_sweep(base, Blender(base), directions, weights, probes, settings, progress=progress_bar("sweep"),
                       cancel=cancel, allow_mismatch=args.allow_mismatch, evaluate_options=options)
    rows = result["rows"]
    head = (f"{' × '.join(result['directions'])} on {len(probes)} probe prompts ({base.model_id}), "
            f"{len(rows)} points")
    lines = [head, to_text(columns(rows, result["axes"]), rows)]
    if args.grid and plotted(rows):
        key, text = plotted(rows)[0]
        alphas, betas, matrix = grid_matrix(rows, key)
        lines += ["", f"{text}: α ({result['directions'][0]}) down, β ({result['directions'][1]}) across",
                  "        " + "".join(f"{b:>9g}" for b in betas)]
        lines += [f"{a:>8g}" + "".join("        –" if v is None else f"{v:>9.3f}" for v in line)
                  for a, line in zip(alphas, matrix)]
    elif plotted(rows):
        lines.append("plotted: " + "; ".join(label(k) for k, _ in plotted(rows)))
    emit(args, {"spec": args.spec, "model": base.model_id, **result}, "\n".join(lines))
    return 0


def cmd_interference(args) -> int:
    from stance_studio.core.compatibility import model_difference
    from stance_studio.core.errors import IncompatibleBaseError
    from stance_studio.core.interference import checkpoint_interference

    library = open_library(args)
    a, b = library.load(args.a), library.load(args.b)
    differs = model_difference(a.base, b.base)
    if differs and not args.allow_mismatch:
        raise IncompatibleBaseError(f"{a.name!r} and {b.name!r} were made on different base models ({differs}); "
                                    "pass --allow-mismatch to compare them anyway.")
    result = checkpoint_interference(a, b)

    def show(x, fmt):
        return "–" if x is None else format(x, fmt)

    o = result.overall
    lines = [f"{a.name} vs {b.name}: cosine {show(o.cosine, '+.3f')}, sign conflict {show(o.sign_conflict, '.1%')} "
             f"over {o.shared_weights:,} weights both change",
             f"  {'layer':<10} {'cosine':>8} {'sign conflict':>14} {'shared weights':>15}"]
    lines += [f"  {r.name:<10} {show(r.cosine, '+.3f'):>8} {show(r.sign_conflict, '.1%'):>14} {r.shared_weights:>15,}"
              for r in result.layers]
    emit(args, result.as_json(), "\n".join(lines))
    return 0
