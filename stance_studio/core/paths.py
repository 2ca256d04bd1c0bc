"""Per-user folders: the stance library and the model cache.

Environment variables override the defaults so that tests and clusters never touch
a user's own folders: ``STANCE_STUDIO_LIBRARY`` and ``STANCE_STUDIO_CACHE``.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "stance-studio"


def library_dir(override: str | os.PathLike | None = None) -> Path:
    """The folder holding stance checkpoints (created on demand)."""
    if override:
        path = Path(override)
    elif os.environ.get("STANCE_STUDIO_LIBRARY"):
        path = Path(os.environ["STANCE_STUDIO_LIBRARY"])
    else:
        path = Path(platformdirs.user_data_dir(APP_NAME)) / "library"
    path = path.expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """The folder holding dequantized model copies (created on demand)."""
    if os.environ.get("STANCE_STUDIO_CACHE"):
        path = Path(os.environ["STANCE_STUDIO_CACHE"])
    else:
        path = Path(platformdirs.user_cache_dir(APP_NAME))
    path = path.expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
