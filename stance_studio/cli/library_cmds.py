"""``list``, ``inspect`` and ``export-peft``: the stance library from the command line."""

from __future__ import annotations

import sys

from stance_studio.cli.common import add_common, emit, human_bytes, load_model, open_library


def register(sub) -> None:
    p = sub.add_parser("list", help="list the stance checkpoints in the library")
    add_common(p, suppress=True)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("inspect", help="show a checkpoint's metadata and per-module weight changes")
    add_common(p, suppress=True)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a library name or a path")
    p.add_argument("--top", type=int, default=20, help="modules shown in the text table (JSON lists all)")
    p.add_argument("--no-spectra", action="store_true", help="skip the per-module SVDs (rank90) for speed")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="measure against the loaded model even if the checkpoint was made on another")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("export-peft", help="export a factorised checkpoint as a PEFT LoRA adapter folder")
    add_common(p, suppress=True)
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("outdir", metavar="OUTDIR")
    p.set_defaults(func=cmd_export_peft)


def cmd_list(args) -> int:
    library = open_library(args)
    entries, problems = library.scan()
    for problem in problems:
        print(f"stance-studio: warning: skipped {problem.path.name}: {problem.message}", file=sys.stderr)
    rows = [e.as_json() for e in entries]
    lines = [f"Library: {library.folder}"]
    if not entries:
        lines.append("  (no stances yet; train one with `stance-studio train DATASET --name NAME`)")
    else:
        width = max(len(e.name) for e in entries)
        lines.append(f"  {'name':<{width}}  {'method':<9} {'size':>9}  {'bits/w':>6}  {'retention':>9}  base")
        for e in entries:
            ret = f"{e.retention:.2f}" if e.retention is not None else "-"
            bits = f"{e.bits_per_weight:.2f}" if e.bits_per_weight is not None else "-"
            lines.append(f"  {e.name:<{width}}  {e.method:<9} {human_bytes(e.bytes):>9}  {bits:>6}  {ret:>9}  {e.base_model}")
    emit(args, rows, "\n".join(lines))
    return 0


def cmd_inspect(args) -> int:
    from stance_studio.core.analysis import analyse
    from stance_studio.core.compatibility import check_compatible, compatibility
    from stance_studio.core.errors import SettingsError

    if args.top < 0:
        raise SettingsError(f"--top must be 0 or more (got {args.top}).")
    library = open_library(args)
    ckpt = library.load(args.checkpoint)
    base = load_model(args)
    check_compatible(ckpt, base, allow_mismatch=args.allow_mismatch)
    if ckpt.kind == "activation":
        from stance_studio.cli.steering_cmds import inspect_steering

        return inspect_steering(args, ckpt, base)
    compatible, reason = compatibility(ckpt, base)
    changes = analyse(ckpt.deltas, base, spectra=not args.no_spectra)
    doc = {
        "name": ckpt.name,
        "path": str(ckpt.path),
        "bytes": ckpt.path.stat().st_size if ckpt.path else ckpt.nbytes,
        "base_model_bytes": base.parameter_bytes(),
        "bits_per_weight": ckpt.bits_per_weight,
        "stance": ckpt.stance,
        "base": ckpt.base,
        "training": ckpt.training,
        "extraction": ckpt.extraction,
        "metrics": ckpt.metrics,
        "compatible": compatible,
        "modules": [c.as_json() for c in changes],
    }
    lines = [
        f"{ckpt.name}  ({ckpt.path})",
        f"  made on   {ckpt.base.get('model', '?')} ({ckpt.base.get('architecture', '?')}, "
        f"{ckpt.base.get('num_layers', '?')} layers){'' if compatible else '  [NOT the loaded model: ' + reason + ']'}",
        f"  method    {ckpt.method}   policy {ckpt.extraction.get('policy', '?')}",
        f"  size      {human_bytes(doc['bytes'])} ({100 * doc['bytes'] / max(doc['base_model_bytes'], 1):.2f} % of the base model), "
        f"{ckpt.bits_per_weight:.2f} bits per touched weight{_forms(ckpt)}",
    ]
    if ckpt.metrics.get("retention") is not None:
        lines.append(f"  retention {ckpt.metrics['retention']:.3f}")
    lines.append(f"  modules   {len(changes)} touched; most changed (relative Frobenius):")
    lines.append(f"    {'module':<48} {'layer':>5} {'rel.change':>10} {'|Δ|':>9} {'rank90':>6}")
    for c in changes[: args.top]:
        layer = "-" if c.layer is None else str(c.layer)
        rank = "-" if c.rank90 is None else str(c.rank90)
        lines.append(f"    {c.name:<48} {layer:>5} {c.relative_change:>10.4g} {c.abs_change:>9.4g} {rank:>6}")
    emit(args, doc, "\n".join(lines))
    return 0


def _forms(ckpt) -> str:
    forms = ckpt.extraction.get("representations")
    return f" ({', '.join(f'{n} {k}' for k, n in forms.items())})" if isinstance(forms, dict) and forms else ""


def cmd_export_peft(args) -> int:
    from stance_studio.core.peft_export import export_peft
    from stance_studio.core.storage import check_export_target

    library = open_library(args)
    outdir = check_export_target(args.outdir, library.folder, "PEFT adapter")
    ckpt = library.load(args.checkpoint)
    out = export_peft(ckpt, outdir)
    emit(args, {"checkpoint": ckpt.name, "adapter": str(out)}, f"Wrote PEFT adapter for {ckpt.name} to {out}")
    return 0
