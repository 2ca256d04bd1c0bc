"""The experiments window's steering layer sweep: the model-worker job and the plot
of stance rate against depth fraction (the marker score where the stance records no
dataset to build its classifier from), the base model as a dashed line."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt

from stance_studio.core.errors import StanceStudioError
from stance_studio.qt import theme


def sweep_job(session, name: str, every: int, limit: int):
    """The layer sweep of steering stance ``name`` as a job for the model worker:
    every ``every``-th layer, the first ``limit`` probes (0: all)."""
    from stance_studio.core.datasets import load_probes
    from stance_studio.core.layer_sweep import sweep_layers

    if not name:
        raise StanceStudioError("The library holds no steering stance; build one with the training method steer.")
    probes = load_probes()
    probes = probes[:limit] if limit else probes
    base, blender = session.base, session.blend.blender

    def sweep(progress, cancel):
        ckpt = session.catalog.checkpoint(name)
        return sweep_layers(base, ckpt, probes, sorted(ckpt.directions)[::every], blender=blender,
                            progress=progress, cancel=cancel)

    return sweep


def plot_layer_sweep(plot: pg.PlotWidget, scatter: pg.ScatterPlotItem, rows: list[dict]) -> list:
    """Draw ``rows`` of a sweep: a point and a line through the layers, the base as a
    dashed reference. Returns the items added besides ``scatter`` (to remove later)."""
    points = [r for r in rows if r.get("layer") is not None]
    key = "stance_rate" if rows and all(r.get("stance_rate") is not None for r in rows) else "stance_score"
    plot.setLabel("left", layer_axis_label(rows))
    scatter.setData([{"pos": (r["depth"], r[key]),
                      "data": f"layer {r['layer']} (depth {r['depth']:.2f})\n"
                              + (f"stance rate {r['stance_rate']:.2f}, " if r.get("stance_rate") is not None else "")
                              + (f"strict {r['stance_rate_strict']:.2f}, looping {r['looping_fraction']:.0%}, "
                                 if r.get("stance_rate_strict") is not None else "")
                              + f"marker score {r['stance_score']:+.2f}, "
                              f"KL {r['kl_to_base']:.3f}, identical {r['identical_fraction']:.0%}",
                      "brush": pg.mkBrush(theme.series_color(0))} for r in points])
    added = []
    if points:
        line = pg.PlotDataItem([r["depth"] for r in points], [r[key] for r in points],
                               pen=pg.mkPen(theme.series_color(0), width=2))
        plot.addItem(line)
        added.append(line)
    strict = [r for r in points if r.get("stance_rate_strict") is not None]
    if key == "stance_rate" and strict:  # the rate counting no looping answer, dashed
        dashed = pg.PlotDataItem([r["depth"] for r in strict], [r["stance_rate_strict"] for r in strict],
                                 pen=pg.mkPen(theme.series_color(0), width=2, style=Qt.PenStyle.DashLine),
                                 symbol="t", symbolSize=7, symbolBrush=theme.series_color(0), symbolPen=None)
        plot.addItem(dashed)
        added.append(dashed)
    base = next((r for r in rows if r.get("layer") is None), None)
    if base is not None:
        ref = pg.InfiniteLine(pos=base[key], angle=0, label="base",
                              pen=pg.mkPen(theme.colors()["plot_fg"], style=Qt.PenStyle.DashLine))
        plot.addItem(ref)
        added.append(ref)
    return added


def layer_axis_label(rows: list[dict]) -> str:
    """What a layer sweep's vertical axis shows: the stance rate where every row has one."""
    if rows and all(r.get("stance_rate") is not None for r in rows):
        if any(r.get("stance_rate_strict") is not None for r in rows):
            return "stance rate (solid), strict rate (dashed)"
        return "stance rate (its classifier)"
    return "marker score (hedges − boosters per 100 words)"
