"""``generate``: one prompt, side by side across base, stances and blends, each
column measured against the base (the GUI's side-by-side job, :mod:`core.compare`)."""

from __future__ import annotations

import shutil
import sys
import textwrap

from stance_studio.cli.common import (
    add_common,
    add_map_layers,
    emit,
    load_model,
    map_layers,
    open_library,
    progress_bar,
    sigint_cancel,
)


def register(sub) -> None:
    p = sub.add_parser("generate", help="run one prompt side by side across variants")
    add_common(p, suppress=True)
    p.add_argument("--prompt", required=True, help="the user prompt")
    p.add_argument("--variant", action="append", metavar="SPEC",
                   help="base, a stance name, or a blend 'a=0.7,b=-0.3'; repeat for more columns "
                        "(default: base and every compatible stance in the library)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="seeded sampling instead of greedy decoding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--allow-mismatch", action="store_true",
                   help="apply checkpoints made on another base model (transfer experiments)")
    p.add_argument("--no-stances", action="store_true",
                   help="skip reading each answer with the columns' stance classifiers (each is built once per "
                        "stance and model, from base's answers to the stance's prompts)")
    add_map_layers(p)
    p.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    from stance_studio.core.blend import Blender
    from stance_studio.core.compatibility import compatibility
    from stance_studio.core.compare import VariantColumn, compare
    from stance_studio.core.errors import CheckpointError, StanceStudioError
    from stance_studio.core.generation import GenerationSettings
    from stance_studio.core.variants import parse_variant, resolve_variant

    if args.max_new_tokens < 1:
        raise StanceStudioError("--max-new-tokens must be at least 1.")
    library = open_library(args)
    specs = args.variant
    variants = [parse_variant(s) for s in specs] if specs else None
    resolved = [resolve_variant(v, library) for v in variants] if variants else None
    cancel = sigint_cancel()
    base = load_model(args, cancel)
    if variants is None:
        variants = [parse_variant("base")]
        resolved = [[]]
        entries, problems = library.scan()
        for problem in problems:
            print(f"stance-studio: warning: skipped {problem.path.name}: {problem.message}", file=sys.stderr)
        for entry in entries:
            if compatibility(entry.metadata, base)[0]:
                try:  # one broken file never stops the others' columns
                    ckpt = library.load(entry.path)
                except CheckpointError as exc:
                    print(f"stance-studio: warning: skipped {entry.path.name}: {exc}", file=sys.stderr)
                    continue
                variants.append(parse_variant(entry.name))
                resolved.append([(ckpt, 1.0)])
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        greedy=not args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    resolved = map_layers(args, resolved, base)
    columns = [VariantColumn(v.label, v.spec, blend) for v, blend in zip(variants, resolved)]  # as typed
    bar = progress_bar("generate")
    result = compare(base, Blender(base), columns, args.prompt, settings, cancel=cancel,
                     progress=lambda p: None if p.partial is not None else bar(p), allow_mismatch=args.allow_mismatch,
                     measure_stances=not args.no_stances)
    columns = [c.as_json() for c in result.columns]
    doc = {"prompt": args.prompt, "model": base.model_id, "settings": settings.__dict__, "columns": columns,
           "stances": [s.as_json() for s in result.stances], "notes": list(result.notes)}
    emit(args, doc, render_columns(columns) + render_stances(result))
    return 0


def render_stances(result) -> str:
    """One line per stance: the probability that each column's answer reads as it."""
    lines = []
    for stance in result.stances:
        reads = " · ".join(f"{c.label} {c.stance_probability[stance.name]:.2f}" for c in result.columns)
        from stance_studio.core.stance_classifier import RELIABLE_ACCURACY

        flag = "" if stance.reliable else f" (unreliable classifier: accuracy below {RELIABLE_ACCURACY:g})"
        lines.append(f"reads as {stance.name}{flag}: {reads}")
    lines += [f"note: {note}" for note in result.notes]
    return "\n\n" + "\n".join(lines) if lines else ""


def render_columns(columns: list[dict]) -> str:
    """Columns of wrapped text side by side, sized to the terminal."""
    total = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else 120
    gap = 3
    width = max(16, (total - gap * (len(columns) - 1)) // max(len(columns), 1))
    wrapped = [[c["variant"][:width], "-" * min(width, max(len(c["variant"]), 4))]
               + textwrap.wrap(c["text"].strip() or "(empty)", width) + (["(repeats itself)"] if c.get("loops") else [])
               for c in columns]
    height = max(len(w) for w in wrapped)
    lines = []
    for row in range(height):
        cells = [(w[row] if row < len(w) else "").ljust(width) for w in wrapped]
        lines.append((" " * gap).join(cells).rstrip())
    return "\n".join(lines)
