"""``install-builtins`` and ``rebuild-builtins``: the shipped checkpoints of the
built-in stances (core/shipped.py) from the command line."""

from __future__ import annotations

from stance_studio.cli.common import add_common, emit, human_bytes, load_model, open_library, progress_bar, sigint_cancel


def register(sub) -> None:
    from stance_studio.core.shipped import REBUILD_POLICY

    p = sub.add_parser("install-builtins",
                       help="add the shipped checkpoints of the built-in stances to the library (no training)")
    add_common(p, suppress=True)
    p.add_argument("--from", dest="folder", metavar="DIR",
                   help="a folder of shipped checkpoints with its manifest.json (default: the ones shipped for the "
                        "bundled model)")
    p.add_argument("--stance", action="append", metavar="NAME", help="install only this stance (repeat it)")
    p.add_argument("--overwrite", action="store_true", help="replace library stances of the same names")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("rebuild-builtins",
                       help="train the built-in stances with train's job and write them as a shipped set")
    add_common(p, suppress=True)
    p.add_argument("--out", metavar="DIR", help="where to write the checkpoints and manifest.json "
                                                "(default: the shipped folder, resources/checkpoints)")
    p.add_argument("--stance", action="append", metavar="NAME", help="only this built-in stance (repeat it)")
    p.add_argument("--keep", default=REBUILD_POLICY, metavar="POLICY",
                   help=f"extraction policy (default {REBUILD_POLICY})")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: train's, 20)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: train's)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_rebuild)


def cmd_install(args) -> int:
    from stance_studio.core.shipped import install, require_set

    library = open_library(args)
    library.check_writable()
    shipped = require_set(args.folder)  # no set or a bad manifest fails before the model loads
    cancel = sigint_cancel()
    base = load_model(args, cancel)
    before = set(library.names())
    written = install(base, library, names=args.stance, folder=args.folder, overwrite=args.overwrite,
                      progress=progress_bar("install"), cancel=cancel)
    names = [p.name[: -len(".stance.safetensors")] for p in written]
    chosen = args.stance or [s.name for s in shipped.stances]
    skipped = [n for n in chosen if n not in names and n in before]
    doc = {"model": base.model_id, "folder": str(shipped.folder), "library": str(library.folder),
           "installed": [{"name": n, "path": str(p), "bytes": p.stat().st_size} for n, p in zip(names, written)],
           "skipped": skipped}
    lines = [f"Added {n} ({human_bytes(p.stat().st_size)}) to {library.folder}" for n, p in zip(names, written)]
    lines += [f"Skipped {n}: already in the library (--overwrite replaces it)" for n in skipped]
    emit(args, doc, "\n".join(lines) or "Nothing to add.")
    return 0


def _library_folder(args):
    """The stance library's folder, or None where there is none to protect."""
    from stance_studio.core.errors import StanceStudioError

    try:
        return open_library(args).folder
    except StanceStudioError:
        return None


def cmd_rebuild(args) -> int:
    from stance_studio.core.extraction import parse_policy
    from stance_studio.core.errors import StorageError
    from stance_studio.core.shipped import default_folder, rebuild
    from stance_studio.core.storage import check_export_target
    from stance_studio.core.training import TrainConfig

    policy = parse_policy(args.keep)
    fields = {"seed": args.seed, **({"steps": args.steps} if args.steps is not None else {}),
              **({"lr": args.lr} if args.lr is not None else {})}
    config = TrainConfig(**fields)
    out = str(default_folder()) if args.out is None else args.out
    target = check_export_target(out, _library_folder(args), "shipped set")
    if target.exists() and not target.is_dir():
        raise StorageError(f"--out {target} is a file; choose a folder for the shipped set.")
    cancel = sigint_cancel()
    base = load_model(args, cancel)
    shipped = rebuild(base, out, names=args.stance, policy=policy.text, config=config,
                      progress=progress_bar("rebuild"), cancel=cancel)
    doc = shipped.as_json()
    lines = [f"{s.name}: {s.path} ({human_bytes(s.bytes)}), retention "
             f"{'–' if s.retention is None else format(s.retention, '.3f')}" for s in shipped.stances]
    lines.append(f"Wrote {shipped.folder / 'manifest.json'} for {shipped.model} (policy {shipped.policy})")
    emit(args, doc, "\n".join(lines))
    return 0
