"""The plots panel's interference tab follows a two-stance selection."""

from __future__ import annotations

import pytest

from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import DenseDelta
from stance_studio.qt.plots_panel import PlotsPanel


@pytest.fixture
def panel(qtbot, loaded, write_stance, deltas_factory):
    write_stance(loaded.library, loaded.base, "curious", seed=1)
    write_stance(loaded.library, loaded.base, "confident", seed=2, kinds=("v_proj",), rank=2)
    deltas = deltas_factory(loaded.base, seed=1)
    loaded.library.save(make_checkpoint("anti-curious", {n: DenseDelta(-d.tensor) for n, d in deltas.items()},
                                        loaded.base))
    loaded.refresh_library()
    p = PlotsPanel(loaded)
    qtbot.addWidget(p)
    return p


def test_two_selected_stances_show_per_layer_cosine_and_sign_conflict(qtbot, panel, loaded):
    view = panel.interference
    panel.show_stances(["curious"])
    assert view.result is None and "Select two stances" in view.title.text()
    panel.show_stances(["curious", "anti-curious"])
    qtbot.waitUntil(lambda: view.result is not None, timeout=20000)
    assert view.result.overall.cosine == pytest.approx(-1.0)
    heights = view.cosine_bars.opts["height"]
    assert len(heights) == loaded.base.num_layers and all(h == pytest.approx(-1.0) for h in heights)
    assert all(h == 1.0 for h in view.conflict_bars.opts["height"])
    assert "cosine -1.000" in view.title.text() and "sign conflict 100.0%" in view.title.text()

    panel.show_stances(["curious", "confident"])
    qtbot.waitUntil(lambda: view.result is not None and view.result.b == "confident", timeout=20000)
    assert -1 < view.result.overall.cosine < 1
    # one stance selected again: the last pair stays on show
    panel.show_stances(["curious"])
    assert view.result.b == "confident"


def test_a_stale_result_never_paints(qtbot, panel, monkeypatch):
    view = panel.interference
    drawn = []
    real = view._draw
    monkeypatch.setattr(view, "_draw", lambda result: (drawn.append(result and result.b), real(result)))
    panel.show_stances(["curious", "anti-curious"])
    first = view.job
    panel.show_stances(["curious", "confident"])
    with qtbot.waitSignal(first.ended, timeout=20000):
        pass
    qtbot.waitUntil(lambda: view.result is not None, timeout=20000)
    assert (view.result.a, view.result.b) == ("curious", "confident")
    assert "anti-curious" not in drawn and drawn[-1] == "confident"
