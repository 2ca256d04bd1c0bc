"""Which failures are the user's or the machine's (bad input, files, memory) and which
are bugs, with the one-line message each gets. The command line and the GUI both
ask here, so they show the same words for the same failure.
"""

from __future__ import annotations

import os
from typing import Optional

from stance_studio.core.errors import OutOfMemoryError, StanceStudioError, StorageError
from stance_studio.core.storage import as_os_error, os_reason

BUG_REPORT_HINT = (
    "This is a bug in Stance Studio: please report it with the command or steps that led here "
    "(set STANCE_STUDIO_DEBUG=1 to see the full traceback)."
)
_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def as_user_error(exc: BaseException) -> Optional[StanceStudioError]:
    """``exc`` as the app's own error when the user or the machine caused it (a file
    problem, undecodable text, input nested too deeply, memory); None for a bug."""
    if isinstance(exc, StanceStudioError):
        return exc
    os_error = as_os_error(exc)
    if os_error is not None and not isinstance(exc, OSError):
        return StorageError(f"Cannot read or write a file: {os_reason(os_error)}.")
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else "a file"
        if exc.filename2 is not None:
            where = f"{exc.filename} → {exc.filename2}"
        return StorageError(f"Cannot use {where}: {os_reason(exc)}.")
    if isinstance(exc, UnicodeDecodeError):
        return StanceStudioError(f"A file is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.")
    if isinstance(exc, UnicodeEncodeError):
        return StanceStudioError(
            f"A text holds a character that cannot be written as UTF-8 ({exc.reason} at position {exc.start}), "
            "such as a lone surrogate; remove it."
        )
    if isinstance(exc, RecursionError):
        return StanceStudioError("An input is nested too deeply to read (JSON arrays or objects inside each other).")
    text = _first_line(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and any(m in text.lower() for m in _OOM_MARKERS)
    ):
        return OutOfMemoryError(
            "The machine ran out of memory for this job. Close other programs, use a smaller model, "
            "fewer tokens or examples, or the LoRA method." + (f" ({text})" if text else "")
        )
    return None


def describe(exc: BaseException) -> str:
    """The one line shown to the user for ``exc``: its own message for the user's or
    the machine's errors, else a short bug notice naming the exception and where."""
    user = as_user_error(exc)
    if user is not None:
        return str(user) or type(user).__name__
    return f"Unexpected error ({type(exc).__name__}: {_first_line(exc)}{_origin(exc)}). {BUG_REPORT_HINT}"


def debugging() -> bool:
    """Whether full tracebacks were asked for (``STANCE_STUDIO_DEBUG=1``)."""
    return os.environ.get("STANCE_STUDIO_DEBUG", "") not in ("", "0")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def _origin(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    return f", in {os.path.basename(tb.tb_frame.f_code.co_filename)} line {tb.tb_lineno}"
