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


def headers(kind: str) -> list[str]:
    return [header for _, header, _ in COLUMNS[kind]]


def cells(kind: str, row: dict) -> list[str]:
    """One row as display strings; a run that failed (training diverged, a policy that
    does not fit the model) reads 'failed' after its name."""
    if row.get("error"):
        return [str(row.get(COLUMNS[kind][0][0], "")), "failed"] + ["–"] * (len(COLUMNS[kind]) - 2)
    out = [fmt(row.get(key)) for key, _, fmt in COLUMNS[kind]]
    if row.get("default"):
        out[0] += " (default)"
    return out


def to_markdown(kind: str, rows: Sequence[dict], title: str = "") -> str:
    head = headers(kind)
    lines = ([f"## {title}", ""] if title else []) + [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(" --- " for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(kind, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(kind: str, rows: Sequence[dict]) -> str:
    """Raw values (not display strings), one column per key, for spreadsheets."""
    keys = [key for key, _, _ in COLUMNS[kind]] + ["error"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})
    return out.getvalue()


def to_text(kind: str, rows: Sequence[dict]) -> str:
    """A plain aligned table for the terminal."""
    table = [headers(kind)] + [cells(kind, r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
        for line in table
    )
