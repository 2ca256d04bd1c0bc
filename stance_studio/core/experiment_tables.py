"""How the rows of an experiment read as a table: the same columns and number
formats in the app's window, its Markdown/CSV export and the command line.

A figure repeated over seeds reads ``mean ± spread``; a single run's figure with a
95 % interval over probes reads ``value [low, high]``; a stance rate whose classifier
is below the reliability threshold is marked ``(unreliable)``."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Callable, Optional, Sequence

from stance_studio.core.units import human_bytes


def _bytes(n: Optional[float]) -> str:
    return "–" if n is None else human_bytes(n)


def _num(fmt: str) -> Callable[[Any], str]:
    def show(x: Any) -> str:
        if x is None or (isinstance(x, float) and not math.isfinite(x)):
            return "–"
        return format(x, fmt)

    return show


# (key in the row, header, formatter)
Column = tuple[str, str, Callable[[Any], str]]
COLUMNS: dict[str, list[Column]] = {
    "methods": [
        ("method", "method", str),
        ("trainable_params", "trainable params", _num(",.0f")),
        ("seconds", "seconds", _num(".1f")),
        ("bytes", "delta size", _bytes),
        ("stance_rate", "stance rate", _num(".2f")),
        ("stance_rate_strict", "strict rate", _num(".2f")),
        ("looping_fraction", "looping", _num(".0%")),
        ("stance_fit_nats", "stance fit (nats/token)", _num("+.3f")),
        ("capability_change", "perplexity change %", _num("+.1f")),
        ("kl_to_base", "KL to base", _num(".4f")),
        ("identical_fraction", "identical to base", _num(".0%")),
        ("stance_score", "marker score", _num("+.2f")),
    ],
    "layers": [
        ("layer", "layer", lambda x: "base" if x is None else str(x)),
        ("depth", "depth", _num(".2f")),
        ("norm", "|v|", _num(".3g")),
        ("stance_rate", "stance rate", _num(".2f")),
        ("stance_rate_strict", "strict rate", _num(".2f")),
        ("looping_fraction", "looping", _num(".0%")),
        ("stance_score", "marker score", _num("+.2f")),
        ("hedges_per_100w", "hedges /100w", _num(".2f")),
        ("boosters_per_100w", "boosters /100w", _num(".2f")),
        ("kl_to_base", "KL to base", _num(".4f")),
        ("identical_fraction", "identical to base", _num(".0%")),
    ],
    "policies": [
        ("policy", "policy", str),
        ("modules", "modules", _num("d")),
        ("bytes", "size", _bytes),
        ("fraction_of_base", "% of base", _num(".2%")),
        ("bits_per_weight", "bits/weight", _num(".2f")),
        ("retention", "retention", _num(".3f")),
    ],
}


def _columns(kind) -> list[Column]:
    """The columns of a named table, or ``kind`` itself when it is a column list
    (tables whose columns follow the rows, such as sweeps)."""
    return COLUMNS[kind] if isinstance(kind, str) else list(kind)


def value_at(row: dict, key: str) -> Any:
    """``row[key]``; a dotted key (``capability.change``) reads a nested value."""
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def headers(kind) -> list[str]:
    return [header for _, header, _ in _columns(kind)]


# Figures shown with their uncertainty (the others are settings or sizes).
UNCERTAIN = {"stance_rate", "stance_rate_strict", "looping_fraction", "stance_fit_nats", "capability_change",
             "kl_to_base", "identical_fraction", "stance_score", "retention"}


def _cell(row: dict, key: str, fmt: Callable[[Any], str]) -> str:
    value = value_at(row, key)
    text = fmt(value)
    if value is None or key not in UNCERTAIN:
        return text
    spread, ci = row.get(f"{key}_spread"), row.get(f"{key}_ci95")
    if spread is not None and row.get("seeds", 1) > 1:
        text += f" ± {fmt(spread).lstrip('+')}"
    elif ci is not None:
        text += f" [{fmt(ci[0])}, {fmt(ci[1])}]"
    if key in ("stance_rate", "stance_rate_strict") and row.get("stance_rate_reliable") is False:
        text += " (unreliable)"
    return text


def cells(kind, row: dict) -> list[str]:
    """One row as display strings; a run that failed (training diverged, a policy that
    does not fit the model) reads 'failed' after its name."""
    columns = _columns(kind)
    if row.get("error"):
        return [str(row.get(columns[0][0], "")), "failed"] + ["–"] * (len(columns) - 2)
    out = [_cell(row, key, fmt) for key, _, fmt in columns]
    if row.get("default"):
        out[0] += " (default)"
    return out


def to_markdown(kind, rows: Sequence[dict], title: str = "") -> str:
    head = headers(kind)
    lines = ([f"## {title}", ""] if title else []) + [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(" --- " for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(kind, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(kind, rows: Sequence[dict]) -> str:
    """Raw values (not display strings), one column per key (with its spread over
    seeds and its interval's bounds where rows have them), for spreadsheets."""
    keys = []
    for key, _, _ in _columns(kind):
        keys.append(key)
        if any(r.get(f"{key}_spread") is not None for r in rows):
            keys.append(f"{key}_spread")
        if any(r.get(f"{key}_ci95") is not None for r in rows):
            keys += [f"{key}_ci95_low", f"{key}_ci95_high"]
    keys.append("error")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        item = {k: value_at(row, k) for k in keys}
        for key, _, _ in _columns(kind):
            ci = row.get(f"{key}_ci95")
            if ci is not None:
                item[f"{key}_ci95_low"], item[f"{key}_ci95_high"] = ci
        writer.writerow({k: ("" if v is None else v) for k, v in item.items()})
    return out.getvalue()


def to_text(kind, rows: Sequence[dict]) -> str:
    """A plain aligned table for the terminal."""
    table = [headers(kind)] + [cells(kind, r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
        for line in table
    )
