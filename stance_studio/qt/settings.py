"""Persistent user settings through one typed defaults table.

Every key the app stores is listed in :data:`DEFAULTS` with its default value; the
value's type is the type QSettings converts to. ``STANCE_STUDIO_SETTINGS`` points the
store at an INI file (tests set it to a temporary path so they never touch a user's
settings).
"""

from __future__ import annotations

import json
import os
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from stance_studio.core.training import TrainConfig

ORGANISATION = "stance-studio"
APPLICATION = "Stance Studio"
MAX_RECENT_MODELS = 8

DEFAULTS: dict[str, Any] = {
    "model/last": "bundled",
    "model/recent": "[]",  # JSON list of model specs, newest first
    "model/load_on_start": True,
    "model/placements": "{}",  # JSON {spec: {"device": str, "dtype": str}}: each model's device and precision
    "library/folder": "",  # empty: the per-user default (or STANCE_STUDIO_LIBRARY)
    "blend/variants": "[]",  # JSON list of {"label": str, "spec": str}
    "compare/prompt": "Why do leaves change colour in autumn?",
    "compare/columns": '["base"]',  # JSON list of column specs ("base", "@blend", "NAME", spec)
    "compare/max_new_tokens": 64,
    "compare/greedy": True,
    "compare/temperature": 0.7,
    "compare/top_p": 0.95,
    "compare/seed": 0,
    "training/steps": TrainConfig.steps,
    "training/method": "full",
    "training/policy": "",
    "ui/theme": "light",
    "ui/geometry": QByteArray(),
    "ui/state": QByteArray(),
    "ui/first_run_offered": False,
    "worker/threads": 0,  # 0: let torch choose
}


def _store() -> QSettings:
    path = os.environ.get("STANCE_STUDIO_SETTINGS")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(ORGANISATION, APPLICATION)


class Settings:
    """Typed access to the settings store; unknown keys are a programming error."""

    def __init__(self) -> None:
        self._qs = _store()

    def get(self, key: str) -> Any:
        default = DEFAULTS[key]
        if isinstance(default, QByteArray):
            value = self._qs.value(key, default)
            return value if isinstance(value, QByteArray) else QByteArray()
        try:
            return self._qs.value(key, default, type=type(default))
        except (TypeError, ValueError):
            return default

    def set(self, key: str, value: Any) -> None:
        if key not in DEFAULTS:
            raise KeyError(key)
        self._qs.setValue(key, value)

    def get_json(self, key: str) -> Any:
        try:
            return json.loads(self.get(key))
        except (TypeError, ValueError):
            return json.loads(DEFAULTS[key])

    def set_json(self, key: str, value: Any) -> None:
        self.set(key, json.dumps(value))

    def sync(self) -> None:
        self._qs.sync()

    # Recent models -----------------------------------------------------------------

    def recent_models(self) -> list[str]:
        items = self.get_json("model/recent")
        return [str(s) for s in items if isinstance(s, str)] if isinstance(items, list) else []

    def placement(self, spec: str) -> tuple[str, str]:
        """The device and dtype last chosen for model ``spec`` (``auto`` for both if none)."""
        chosen = self.get_json("model/placements")
        entry = chosen.get(spec) if isinstance(chosen, dict) else None
        entry = entry if isinstance(entry, dict) else {}
        return str(entry.get("device") or "auto"), str(entry.get("dtype") or "auto")

    def remember_placement(self, spec: str, device: str, dtype: str) -> None:
        chosen = self.get_json("model/placements")
        chosen = chosen if isinstance(chosen, dict) else {}
        chosen[spec] = {"device": device, "dtype": dtype}
        self.set_json("model/placements", chosen)

    def remember_model(self, spec: str) -> None:
        recent = [s for s in self.recent_models() if s != spec]
        self.set_json("model/recent", [spec, *recent][:MAX_RECENT_MODELS])
        self.set("model/last", spec)
