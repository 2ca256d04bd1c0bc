"""The extraction-policy comparison's plot: each policy's stored size (log scale, %
of the base model) against its retention, the default policy in the second colour,
every point labelled with its policy."""

from __future__ import annotations

import math

import pyqtgraph as pg

from stance_studio.qt import theme


def plot_policies(plot: pg.PlotWidget, scatter: pg.ScatterPlotItem, rows: list[dict]) -> list:
    """Draw the measured ``rows`` (rows without a finite retention or a size are left
    out). Returns the labels added besides ``scatter`` (to remove later)."""
    points = [r for r in rows if r.get("retention") is not None and math.isfinite(r["retention"])
              and r.get("fraction_of_base", 0) > 0]
    scatter.setData([{"pos": (math.log10(100 * r["fraction_of_base"]), r["retention"]),
                      "data": f"{r['policy']}\n{100 * r['fraction_of_base']:.2f} % of base, "
                              f"retention {r['retention']:.3f}",
                      "brush": pg.mkBrush(theme.series_color(1 if r.get("default") else 0))}
                     for r in points])
    labels = []
    for r in points:
        label = pg.TextItem(r["policy"], anchor=(0, 1), color=theme.colors()["plot_fg"])
        label.setPos(math.log10(100 * r["fraction_of_base"]), r["retention"])
        plot.addItem(label)
        labels.append(label)
    return labels
