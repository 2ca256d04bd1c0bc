"""The weights-vs-steering tab: one stance's weight changes next to its steering vectors."""

from __future__ import annotations

import pytest
import torch

from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.qt.plots_panel import PlotsPanel


def _save_pair(loaded, deltas_factory):
    base = loaded.base
    same = {"dataset_hash": "h1"}
    deltas = deltas_factory(base, kinds=("q_proj",), scale=0.1)
    deltas = {n: d for n, d in deltas.items() if ".layers.2." in n}  # only layer 2 changes
    loaded.library.save(make_checkpoint("curious", deltas, base, stance=same, training={"method": "full"}))
    steer = make_checkpoint("curious-steer", {}, base, stance=same, training={"method": "steer"})
    steer.kind = "activation"
    steer.directions = {n: torch.ones(32) * (n + 1) for n in range(base.num_layers)}
    steer.steering = {"apply_layers": [1], "scale": 1.0, "norms": [float((n + 1) * 32 ** 0.5) for n in range(4)],
                      "residual_norms": [2.0, 4.0, 8.0, 16.0]}
    loaded.library.save(steer)
    loaded.refresh_library()
    return deltas


@pytest.mark.parametrize("selected", ["curious", "curious-steer"])
def test_either_kind_selected_shows_both_side_by_side(qtbot, loaded, deltas_factory, selected):
    deltas = _save_pair(loaded, deltas_factory)
    panel = PlotsPanel(loaded)
    qtbot.addWidget(panel)
    view = panel.kinds
    panel.show_stances([selected])
    assert (view.weights_name, view.steering_name) == ("curious", "curious-steer")
    qtbot.waitUntil(lambda: bool(view.weight_values), timeout=10000)
    delta = next(iter(deltas.values())).tensor
    assert view.weight_values == pytest.approx([0.0, 0.0, float(delta.norm()), 0.0], rel=1e-5)
    assert view.steering_values == pytest.approx([(n + 1) * 32 ** 0.5 / h for n, h in enumerate([2, 4, 8, 16])])
    heights = list(view.weight_bars.opts["height"])
    assert heights[2] > 0 and heights[0] == heights[1] == heights[3] == 0
    assert list(view.steering_bars.opts["height"]) == pytest.approx(view.steering_values)
    assert "same dataset" in view.note.text()
    # the bars read in their own units: no "(x0.001)" rescaling of the value axis
    assert view.weights_plot.getAxis("left").autoSIPrefix is False
    assert view.steering_plot.getAxis("left").autoSIPrefix is False


def test_a_stance_without_a_pair_says_how_to_get_one(qtbot, loaded, write_stance):
    write_stance(loaded.library, loaded.base, "alone")
    loaded.refresh_library()
    panel = PlotsPanel(loaded)
    qtbot.addWidget(panel)
    panel.show_stances(["alone"])
    assert panel.kinds.steering_name is None and panel.kinds.steering_values == []
    assert "--method steer" in panel.kinds.note.text()
    qtbot.waitUntil(lambda: bool(panel.kinds.weight_values), timeout=10000)
