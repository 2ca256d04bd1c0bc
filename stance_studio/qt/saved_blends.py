"""Saved blends (named variants), kept in the settings as ``{label, spec}`` pairs."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from stance_studio.core.errors import LibraryError, StanceStudioError
from stance_studio.core.variants import Variant, parse_variant
from stance_studio.qt.settings import Settings


class SavedBlends(QObject):
    changed = Signal()

    def __init__(self, settings: Settings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings

    def all(self) -> list[Variant]:
        """Every saved blend that still parses, in the order saved."""
        out = []
        for item in self.settings.get_json("blend/variants"):
            try:
                out.append(Variant(str(item["label"]), parse_variant(str(item["spec"])).weights))
            except (KeyError, TypeError, StanceStudioError):
                continue
        return out

    def save(self, label: str, weights: dict[str, float]) -> Variant:
        """Save ``weights`` as ``label`` (replacing a blend of that name)."""
        label = label.strip()
        if not label:
            raise LibraryError("A saved blend needs a name.")
        variant = Variant(label, tuple(sorted((n, a) for n, a in weights.items() if a != 0)))
        self._store([v for v in self.all() if v.label != label] + [variant])
        return variant

    def delete(self, label: str) -> None:
        self._store([v for v in self.all() if v.label != label])

    def _store(self, variants: list[Variant]) -> None:
        self.settings.set_json("blend/variants", [{"label": v.label, "spec": v.spec} for v in variants])
        self.changed.emit()
