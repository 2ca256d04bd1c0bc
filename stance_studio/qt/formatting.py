"""How numbers, sizes, dates and durations read in the app."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Optional

from stance_studio.core.units import human_bytes  # noqa: F401  (the app's sizes read as the CLI's)


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_seconds(s: Optional[float]) -> str:
    if s is None or s != s or s < 0:
        return "–"
    if s < 60:
        return f"{s:.0f} s"
    minutes, seconds = divmod(int(round(s)), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def short_date(iso: str) -> str:
    """An ISO timestamp as local ``YYYY-MM-DD HH:MM`` (the raw text if unreadable)."""
    try:
        when = _dt.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return iso or "–"
    if when.tzinfo is not None:
        when = when.astimezone()
    return when.strftime("%Y-%m-%d %H:%M")


def timestamp(iso: str) -> float:
    """An ISO timestamp as seconds since the epoch, for sorting (-inf if unreadable)."""
    try:
        return _dt.datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError, OverflowError, OSError):
        return float("-inf")


def short_model(spec: str) -> str:
    """A model id short enough for a table cell: a local path's last part, else the id
    (hub ids like ``org/name`` stay whole)."""
    if spec.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", spec):
        return re.split(r"[\\/]", spec.rstrip("/\\"))[-1] or spec
    return spec


def percent(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"
