"""The ``stance-studio`` command: the GUI with no sub-command, headless jobs with one.

Bad input and environment problems (files, disk, memory) end with exit code 2 and one
clear line on stderr, never a traceback; an unexpected internal error (a bug) ends with
exit code 1 and one line saying so (``STANCE_STUDIO_DEBUG=1`` shows its traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from stance_studio import __version__
from stance_studio.cli.common import add_common
from stance_studio.core.errors import Cancelled, StanceStudioError
from stance_studio.core.failures import as_user_error, debugging, describe

# Each module defines register(subparsers); a sub-command stores its handler in
# ``func`` through set_defaults.
_COMMAND_MODULES = (
    "stance_studio.cli.library_cmds",
    "stance_studio.cli.generate_cmd",
    "stance_studio.cli.training_cmds",
    "stance_studio.cli.sweep_cmds",
    "stance_studio.cli.bench_cmd",
    "stance_studio.cli.interop_cmds",
    "stance_studio.cli.steering_cmds",
    "stance_studio.cli.shipped_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stance-studio",
        description="Encode epistemic stances into language models, store them as small checkpoints, "
        "blend and compare them. With no sub-command, opens the desktop app.",
    )
    parser.add_argument("--version", action="version", version=f"stance-studio {__version__}")
    add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from stance_studio.core.models import check_model_spec

        check_model_spec(getattr(args, "model", None))  # a spec that can never load fails every command
        if args.command is None:
            return _run_gui(args)
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"stance-studio: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("stance-studio: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line, never a traceback
        return _report(exc)
    finally:
        from stance_studio.cli.plain_progress import close_plain_progress

        close_plain_progress()


def _report(exc: BaseException) -> int:
    """One line on stderr: exit code 2 for the user's or the machine's errors, 1 for bugs."""
    if isinstance(exc, BrokenPipeError):  # stdout closed early (`stance-studio list | head -1`)
        return 0
    user = as_user_error(exc)
    if user is None and debugging():
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print(f"stance-studio: {'error' if user is not None else 'internal error'}: {describe(exc)}", file=sys.stderr)
    return 2 if user is not None else 1


def _run_gui(args) -> int:
    try:
        from stance_studio.qt.app import run
    except ImportError as exc:
        raise StanceStudioError(
            f"The desktop app needs the GUI extras ({exc.name or exc}); install them with "
            "`pip install 'stance-studio[gui]'`, or use a sub-command (see --help)."
        ) from exc
    return run(model_spec=args.model, library=args.library)


if __name__ == "__main__":
    raise SystemExit(main())
