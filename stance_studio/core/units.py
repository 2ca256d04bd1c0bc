"""How sizes read everywhere: the app, the command line and exported tables."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """``n`` bytes as B, KB, MB or GB (powers of 1024)."""
    for unit in ("B", "KB", "MB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
