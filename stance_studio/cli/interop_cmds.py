"""``export-model``, ``export-gguf`` and ``import-peft``: stances to and from other tools."""

from __future__ import annotations

from stance_studio.cli.common import add_common, emit, load_model, open_library, sigint_cancel


def register(sub) -> None:
    p = sub.add_parser("export-model",
                       help="write the base with a stance or blend merged in as a transformers model folder")
    add_common(p, suppress=True)
    p.add_argument("spec", metavar="SPEC", help="base, a stance name, or a blend 'a=0.7,b=-0.3'")
    p.add_argument("outdir", metavar="OUTDIR", help="a new or empty folder (or an earlier export to replace)")
    p.add_argument("--allow-mismatch", action="store_true", help="merge checkpoints made on another base model")
    p.set_defaults(func=cmd_export_model)

    p = sub.add_parser("export-gguf", help="write a stance for llama.cpp / Ollama: a LoRA adapter GGUF "
                                           "(factorised stances) or a control vector GGUF (steering stances)")
    add_common(p, suppress=True)
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("file", metavar="FILE", help="the .gguf file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_export_gguf)

    p = sub.add_parser("import-peft", help="add a PEFT LoRA adapter folder to the library as a stance")
    add_common(p, suppress=True)
    p.add_argument("folder", metavar="DIR", help="a folder holding adapter_config.json and adapter_model.safetensors")
    p.add_argument("--name", required=True, help="the stance's name in the library")
    p.set_defaults(func=cmd_import_peft)


def cmd_export_model(args) -> int:
    from stance_studio.core.model_export import export_model
    from stance_studio.core.storage import check_export_target
    from stance_studio.core.variants import parse_variant, resolve_variant

    variant = parse_variant(args.spec)
    library = open_library(args)
    outdir = check_export_target(args.outdir, library.folder, "model")
    blend = resolve_variant(variant, library)
    base = load_model(args, sigint_cancel())
    out = export_model(base, blend, outdir, allow_mismatch=args.allow_mismatch, spec=variant.spec)
    emit(args, {"variant": variant.spec, "model": base.model_id, "folder": str(out)},
         f"Wrote {base.model_id} with {variant.spec} merged in to {out} (AutoModelForCausalLM.from_pretrained loads it)")
    return 0


def cmd_export_gguf(args) -> int:
    from stance_studio.core.checkpoints import ACTIVATION
    from stance_studio.core.compatibility import check_compatible
    from stance_studio.core.gguf_export import export_gguf
    from stance_studio.core.storage import check_export_target

    library = open_library(args)
    target = check_export_target(args.file, library.folder, "GGUF file")
    ckpt = library.load(args.checkpoint)
    config = None
    if ckpt.kind != ACTIVATION:
        # the q/k permutation needs the head layout of the model the stance was made on
        base = load_model(args, sigint_cancel())
        check_compatible(ckpt, base, allow_mismatch=True)
        config = base.model.config
    out = export_gguf(ckpt, target, config, overwrite=args.overwrite)
    what = "control vector" if ckpt.kind == ACTIVATION else "LoRA adapter"
    emit(args, {"checkpoint": ckpt.name, "file": str(out), "type": what, "bytes": out.stat().st_size},
         f"Wrote {ckpt.name} as a llama.cpp {what} to {out}")
    return 0


def cmd_import_peft(args) -> int:
    from stance_studio.core.library import validate_name
    from stance_studio.core.peft_import import import_peft

    name = validate_name(args.name)
    library = open_library(args)
    base = load_model(args, sigint_cancel())
    ckpt = import_peft(args.folder, name, base, library)
    ranks = sorted({d.rank for d in ckpt.deltas.values()})
    emit(args, {"name": ckpt.name, "checkpoint": str(ckpt.path), "modules": len(ckpt.deltas), "ranks": ranks},
         f"Imported {args.folder} as {ckpt.name} ({len(ckpt.deltas)} modules, rank {'/'.join(map(str, ranks))}) "
         f"into {ckpt.path}")
    return 0
