"""The one result shape of the report's comparisons (``compare_methods``,
``compare_policies``, and both repeated over seeds): the command line prints and
exports it, the experiments window shows it, and Markdown/CSV come from the same
rows (:mod:`~stance_studio.core.experiment_tables`).

``as_json`` is the ``--json`` document's body: ``experiment``, ``seeds``, ``rows``,
``runs`` (one ``{"seed", "rows", …}`` per seed), and for policies ``training`` and
``base_model_bytes`` (the keys the README documents). Reading ``result["rows"]``
works as it did when the results were dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from stance_studio.core import experiment_tables as tables

KINDS = ("methods", "policies")


@dataclass
class ExperimentResult:
    kind: str  # "methods" (one row per training method) or "policies" (one per extraction policy)
    rows: list[dict]  # one seed: as measured; several: mean ± spread per row
    runs: list[dict] = field(default_factory=list)  # per seed: {"seed", "rows", …}
    training: Optional[dict] = None  # policies: the training run they all extract from (the first seed's)
    base_model_bytes: Optional[int] = None  # policies: what fraction_of_base divides by

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown experiment kind {self.kind!r}")

    @property
    def seeds(self) -> int:
        return max(1, len(self.runs))

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"experiment": self.kind, "seeds": self.seeds, "rows": self.rows, "runs": self.runs}
        if self.training is not None:
            out["training"] = self.training
        if self.base_model_bytes is not None:
            out["base_model_bytes"] = self.base_model_bytes
        return out

    def __getitem__(self, key: str) -> Any:
        return self.as_json()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.as_json()

    def errors(self) -> list[str]:
        """One line per row that failed (training diverged, a policy that does not fit)."""
        label = "method" if self.kind == "methods" else "policy"
        return [f"{r[label]}: {r['error']}" for r in self.rows if r.get("error")]

    def summary(self) -> str:
        """One line saying what was measured."""
        over = f" over {self.seeds} seeds (mean ± spread)" if self.seeds > 1 else ""
        if self.kind == "policies" and self.training:
            t = self.training
            return (f"{t['dataset']}: {t['method']} training, {t['steps']} steps in {t['seconds']:.0f} s; "
                    f"{len(self.rows)} policies measured{over}.")
        return f"{max(len(self.rows) - 1, 0)} methods measured against the base model{over}."

    def uncertainty_note(self, first_seed: int = 0) -> str:
        if self.seeds > 1:
            return f"mean ± spread (standard deviation) over seeds {first_seed}…{first_seed + self.seeds - 1}"
        return "[low, high]: 95 % bootstrap interval over probes (stance fit: over held-out examples)"

    def text(self) -> str:
        return tables.to_text(self.kind, self.rows)

    def markdown(self, title: str = "") -> str:
        return tables.to_markdown(self.kind, self.rows, title)

    def csv(self) -> str:
        return tables.to_csv(self.kind, self.rows)
