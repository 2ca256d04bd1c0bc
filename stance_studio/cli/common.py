"""What every sub-command shares: common options, model and library opening,
progress bars on stderr, Ctrl+C as a cancel flag, and --json output."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any, Optional

from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback
from stance_studio.core.units import human_bytes  # noqa: F401  (every command's sizes read alike)


def add_common(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """Add --model, --device, --dtype, --library, --json, --trust-remote-code.

    Sub-command parsers use ``suppress`` so that an option given before the
    sub-command is not overwritten by the sub-parser's default.
    """
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--model", default=default, metavar="MODEL",
                        help="base model: a folder, a .gguf file, a hub id, or 'tiny' (default: bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default=default, metavar="DEVICE",
                        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--dtype", default=default, metavar="DTYPE",
                        help="compute precision: auto (bfloat16 on GPUs that support it, else float32), float32, "
                             "bfloat16 or float16; deltas are always computed and stored in float32 (default: auto)")
    parser.add_argument("--library", default=default, metavar="DIR",
                        help="stance library folder (default: $STANCE_STUDIO_LIBRARY or the per-user data folder)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="print one JSON document on stdout; progress goes to stderr")
    parser.add_argument("--trust-remote-code", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="allow custom model code for this model (off by default)")


def progress_bar(desc: str) -> ProgressCallback:
    """A progress callback drawing a tqdm bar per stage on stderr, or, when stderr is
    not a terminal (a log file), writing plain lines at least every 10 s."""
    from tqdm import tqdm

    if not _is_terminal(sys.stderr):
        from stance_studio.cli.plain_progress import plain_reporter

        return plain_reporter(desc)

    state: dict[str, Any] = {"bar": None, "stage": None}

    def report(p: Progress) -> None:
        if state["stage"] != p.stage or state["bar"] is None:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = tqdm(total=p.total or None, desc=f"{desc}: {p.stage}", file=sys.stderr, leave=False,
                                dynamic_ncols=True, disable=None)
            state["stage"] = p.stage
        bar = state["bar"]
        if p.total and bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        postfix = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in p.info.items() if k in ("loss", "grad_norm")}
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        if p.message:
            bar.set_description_str(f"{desc}: {p.message}", refresh=False)
        bar.refresh()
        if p.total and p.done >= p.total:
            bar.close()
            state["bar"] = None

    return report


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def sigint_cancel() -> CancelFlag:
    """A cancel flag that the first Ctrl+C sets (the job stops cleanly at its next
    step); a second Ctrl+C interrupts at once."""
    flag = CancelFlag()

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        print("\nStopping after the current step (Ctrl+C again to abort)…", file=sys.stderr)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (tests running main() in a thread)
        pass
    return flag


def load_model(args, cancel: Optional[CancelFlag] = None):
    from stance_studio.core.distributed import is_main
    from stance_studio.core.jobs import no_progress
    from stance_studio.core.models import load_base

    return load_base(
        getattr(args, "model", None),
        progress=progress_bar("model") if is_main() else no_progress,
        cancel=cancel,
        trust_remote_code=bool(getattr(args, "trust_remote_code", False)),
        device=getattr(args, "device", None),
        dtype=getattr(args, "dtype", None),
    )


def add_map_layers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map-layers", choices=("depth",), default=None,
                        help="apply checkpoints made on a same-family model with another number of layers: each "
                             "layer takes the delta of the layer at the nearest depth fraction")


def map_layers(args, blends: list, base) -> list:
    """With --map-layers, every checkpoint of ``blends`` re-indexed onto ``base``'s layers;
    each module refused (its shape differs) is named on stderr."""
    if not getattr(args, "map_layers", None):
        return blends
    from stance_studio.core.layer_map import map_by_depth

    done: dict[int, object] = {}
    out = []
    for blend in blends:
        row = []
        for ckpt, alpha in blend:
            if id(ckpt) not in done:
                mapping = map_by_depth(ckpt, base)
                for name, why in sorted(mapping.refused.items()):
                    print(f"stance-studio: --map-layers: {ckpt.name}: refused {name}: {why}", file=sys.stderr)
                done[id(ckpt)] = mapping.checkpoint
            row.append((done[id(ckpt)], alpha))
        out.append(row)
    return out


def open_library(args):
    from stance_studio.core.library import Library

    return Library(getattr(args, "library", None))


def emit(args, document: Any, text: str) -> None:
    """Print ``document`` as JSON with --json, else the human-readable ``text``."""
    if getattr(args, "json", False):
        json.dump(document, sys.stdout, indent=2, sort_keys=False, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def eval_settings(args):
    """The evaluation's generation settings, with ``--max-new-tokens`` when given
    (``evaluate``, ``sweep``, ``sweep-layers``)."""
    from stance_studio.core.errors import StanceStudioError
    from stance_studio.core.generation import GenerationSettings
    from stance_studio.core.metrics import EVAL_SETTINGS

    if args.max_new_tokens is None:
        return EVAL_SETTINGS
    if args.max_new_tokens < 1:
        raise StanceStudioError("--max-new-tokens must be at least 1.")
    return GenerationSettings(max_new_tokens=args.max_new_tokens)
