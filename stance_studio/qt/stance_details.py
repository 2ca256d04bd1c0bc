"""What the library panel says about one stance: how it was made (dataset, method,
steps, extraction) and what training measured (retention, stance fit on the held-out
examples, the tuned model's marker score and KL to base), read from its metadata."""

from __future__ import annotations

import html
from typing import Optional

from stance_studio.core.datasets import builtin_stances
from stance_studio.qt.formatting import human_bytes, human_seconds, percent, short_date


def details_html(session, name: str) -> str:
    """The details of library entry ``name`` as an HTML table ('' when it is gone)."""
    entry = session.entry(name)
    if entry is None:
        return ""
    meta = entry.metadata
    training, extraction, metrics, stance = (meta.get(k, {}) for k in ("training", "extraction", "metrics", "stance"))
    ok, reason = session.catalog.compatibility(name)
    rows = [
        ("Description", stance.get("description")),
        ("Dataset", _dataset_label(stance.get("dataset") or stance.get("dataset_path"))),
        ("Method", training.get("method")),
        ("Steps", training.get("steps")),
        ("Learning rate", training.get("lr")),
        ("Training time", human_seconds(training.get("seconds")) if training.get("seconds") is not None else None),
        ("Non-finite steps", training.get("nonfinite_steps")),
        ("Extraction", extraction.get("policy")),
        ("Kept modules", len(extraction.get("kept_modules", extraction.get("kept", extraction.get("modules", [])))) or None),
        ("Stored", human_bytes(entry.bytes)),
        ("Bits per weight", f"{entry.bits_per_weight:.2f}" if entry.bits_per_weight is not None else None),
        ("Retention", percent(metrics.get("retention")) if metrics.get("retention") is not None else None),
        ("Stance fit, held-out", _nats(metrics.get("stance_fit_nats"), metrics.get("stance_fit_ci95"))),
        ("Stance fit, training split", _nats(metrics.get("stance_fit_train_nats"), None)),
        # train records the tuned model's figures as tuned_*; older files without the prefix
        ("Marker score", _fmt(_first(metrics, "tuned_stance_score", "stance_score"))),
        ("KL to base", _fmt(_first(metrics, "tuned_kl_to_base", "kl_to_base"))),
        ("Base model", entry.base_model),
        ("Created", short_date(entry.created)),
        ("Fits loaded model", "yes" if ok else ("no — " + reason if ok is False else "no model loaded")),
    ]
    body = "".join(f"<tr><td><b>{html.escape(k)}</b>&nbsp;&nbsp;</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows if v not in (None, "", []))
    return f"<h3>{html.escape(name)}</h3><table>{body}</table>"


def _first(metrics: dict, *keys: str):
    return next((metrics[k] for k in keys if metrics.get(k) is not None), None)


def _fmt(x) -> Optional[str]:
    return None if x is None else f"{x:.3g}" if isinstance(x, (int, float)) else str(x)


def _nats(x, ci) -> Optional[str]:
    """Stance fit in nats per token, with its 95 % interval where recorded."""
    if not isinstance(x, (int, float)):
        return None
    interval = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if isinstance(ci, list) and len(ci) == 2 else ""
    return f"{x:+.2f}{interval} nats/token"


def _dataset_label(recorded):
    """A built-in stance's name says so; a path is shown as recorded."""
    if recorded and recorded in builtin_stances():
        return f"{recorded} (built-in)"
    return recorded
