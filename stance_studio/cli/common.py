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
    """Add --model, --library, --json, --trust-remote-code.

    Sub-command parsers use ``suppress`` so that an option given before the
    sub-command is not overwritten by the sub-parser's default.
    """
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--model", default=default, metavar="MODEL",
                        help="base model: a folder, a .gguf file, a hub id, or 'tiny' (default: bundled SmolLM2-135M-Instruct)")
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
    from stance_studio.core.models import load_base

    return load_base(
        getattr(args, "model", None),
        progress=progress_bar("model"),
        cancel=cancel,
        trust_remote_code=bool(getattr(args, "trust_remote_code", False)),
    )


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
