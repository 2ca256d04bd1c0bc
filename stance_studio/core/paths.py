"""Per-user folders: the stance library and the model cache.

Environment variables override the defaults so that tests and clusters never touch
a user's own folders: ``STANCE_STUDIO_LIBRARY`` and ``STANCE_STUDIO_CACHE``.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from stance_studio.core.errors import StorageError
from stance_studio.core.storage import os_reason

APP_NAME = "stance-studio"


def library_dir(override: str | os.PathLike | None = None) -> Path:
    """The folder holding stance checkpoints (created on demand)."""
    if override:
        path = Path(override)
    elif os.environ.get("STANCE_STUDIO_LIBRARY"):
        path = Path(os.environ["STANCE_STUDIO_LIBRARY"])
    else:
        path = Path(platformdirs.user_data_dir(APP_NAME)) / "library"
    return _folder(path.expanduser(), "stance library", "--library DIR or STANCE_STUDIO_LIBRARY")


def cache_dir() -> Path:
    """The folder holding dequantized model copies (created on demand)."""
    if os.environ.get("STANCE_STUDIO_CACHE"):
        path = Path(os.environ["STANCE_STUDIO_CACHE"])
    else:
        path = Path(platformdirs.user_cache_dir(APP_NAME))
    return _folder(path.expanduser(), "model cache", "STANCE_STUDIO_CACHE")


def _folder(path: Path, what: str, choose: str) -> Path:
    """``path`` as an existing folder (created if missing), or a StorageError saying why not."""
    if path.exists() and not path.is_dir():
        raise StorageError(f"The {what} {path} is a file, not a folder; choose a folder ({choose}).")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"Cannot create the {what} folder {path}: {os_reason(exc)}; choose another ({choose}).") from exc
    return path
