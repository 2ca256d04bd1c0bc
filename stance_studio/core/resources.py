"""Locate the files shipped in ``resources/``: stance datasets, probe prompts,
lexicons, icons and style sheets.

In an installed wheel they live inside the package (``stance_studio/resources``);
in a source checkout (editable install) they live at the repository root.
"""

from __future__ import annotations

from pathlib import Path

from stance_studio.core.errors import StanceStudioError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    for candidate in (_PACKAGE_DIR / "resources", _PACKAGE_DIR.parent / "resources"):
        if candidate.is_dir():
            return candidate
    raise StanceStudioError(
        "The resources folder is missing from this installation; reinstall stance-studio."
    )


def resource(*parts: str) -> Path:
    """Path of one shipped resource, e.g. ``resource("stances", "curious-uncertainty.jsonl")``."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise StanceStudioError(f"Shipped resource {path} is missing; reinstall stance-studio.")
    return path
