"""Reading and writing files safely: operating-system errors become one clear
:class:`StorageError` naming the path, folders are checked for writing before long
jobs start, and the app's own stale temporary files are cleaned up.

Every file the app writes goes to a hidden temporary named ``.tmp-*.part`` beside
its target and is renamed into place, so a crash never leaves a half file under the
real name; :func:`remove_stale_temporaries` removes what a killed process left.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from pathlib import Path

from stance_studio.core.errors import StorageError

TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".part"
STALE_AFTER_S = 3600.0  # a save takes seconds; an hour-old temporary belongs to a dead process

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOENT: "it does not exist",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file of that name is in the way",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENOTEMPTY: "the folder is not empty",
    errno.ELOOP: "it is a symbolic link that loops or points nowhere",
}


def os_reason(exc: OSError) -> str:
    """A short human reason for an OSError (``the disk is full``, ``permission denied``)."""
    return _REASONS.get(exc.errno, exc.strerror or str(exc))


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def as_os_error(exc: BaseException) -> OSError | None:
    """``exc`` as an OSError: itself, or one rebuilt from an I/O error that a Rust
    library (safetensors, tokenizers) reports as ``... (os error 28)``; else None."""
    if isinstance(exc, OSError):
        return exc
    match = _RUST_OS_ERROR.search(str(exc))
    if match and "I/O error" in str(exc):
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    return None


def storage_error(exc: OSError, action: str, path: str | os.PathLike | None = None) -> StorageError:
    """A StorageError saying what could not be done to which path, and why."""
    where = path if path is not None else (exc.filename or "a file")
    return StorageError(f"Cannot {action} {where}: {os_reason(exc)}.")


def ensure_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Create ``path`` if needed and prove a file can be written in it (a probe
    temporary, removed at once); raise a StorageError naming ``what`` otherwise."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise StorageError(f"The {what} {path} is a file, not a folder; choose a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, f"create the {what}", path) from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path)
    except OSError as exc:
        raise StorageError(f"The {what} {path} is not writable: {os_reason(exc)}.") from exc
    os.close(fd)
    os.unlink(probe)
    return path


def not_a_file(path: Path) -> str:
    """Why ``path``, which is not a regular file, cannot be read as one: "is a folder",
    "is a symbolic link that loops or points nowhere", "is a device, pipe or socket, not
    a file" (reading a pipe would wait forever) or "does not exist"."""
    if path.is_dir():
        return "is a folder, not a file"
    if path.is_symlink() and not path.exists():
        return "is a symbolic link that loops or points nowhere"
    if path.exists():
        return "is a device, pipe or socket, not a file"
    return "does not exist"


def check_export_target(target: str | os.PathLike, library: str | os.PathLike | None, what: str) -> Path:
    """``target`` as a path when an export (``what``: "PEFT adapter", "model", …) may
    be written there: not an empty string (it would mean the current folder), and
    not the stance library or anything inside it (an export named like a stance
    would be listed as a broken one)."""
    text = os.fspath(target)
    if not text.strip():
        raise StorageError(f"The path for the {what} is empty; name a new file or folder.")
    path = Path(text).expanduser()
    if library is not None:
        folder = Path(library).expanduser().resolve()
        resolved = path.resolve()
        if resolved == folder or folder in resolved.parents:
            where = "is the stance library" if resolved == folder else f"is inside the stance library {folder}"
            raise StorageError(f"{path} {where}, which holds stances only; write the {what} to a folder outside it.")
    return path


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named like one of the app's own temporaries."""
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)


def remove_stale_temporaries(folder: Path, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the app's own temporary files in ``folder`` that no write has touched for
    ``older_than_s`` seconds; files of any other name are never touched."""
    removed = []
    cutoff = time.time() - older_than_s
    try:
        candidates = list(folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"))
    except OSError:
        return removed
    for path in candidates:
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # another process removed it, or it is not ours to remove
    return removed
