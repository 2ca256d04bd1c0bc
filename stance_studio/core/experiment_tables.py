"""How the rows of an experiment read as a table: the same columns and number
formats in the app's window, its Markdown/CSV export and the command line."""

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
        ("trainable_params", "trainable params", _num(",")),
        ("seconds", "seconds", _num(".1f")),
        ("nonfinite_steps", "non-finite steps", _num("d")),
        ("bytes", "delta size", _bytes),
        ("stance_score", "stance score", _num("+.2f")),
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


def cells(kind, row: dict) -> list[str]:
    """One row as display strings; a run that failed (training diverged, a policy that
    does not fit the model) reads 'failed' after its name."""
    columns = _columns(kind)
    if row.get("error"):
        return [str(row.get(columns[0][0], "")), "failed"] + ["–"] * (len(columns) - 2)
    out = [fmt(value_at(row, key)) for key, _, fmt in columns]
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
    """Raw values (not display strings), one column per key, for spreadsheets."""
    keys = [key for key, _, _ in _columns(kind)] + ["error"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if value_at(row, k) is None else value_at(row, k)) for k in keys})
    return out.getvalue()


def to_text(kind, rows: Sequence[dict]) -> str:
    """A plain aligned table for the terminal."""
    table = [headers(kind)] + [cells(kind, r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
        for line in table
    )
