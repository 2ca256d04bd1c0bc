import csv
import io
import json

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt

from stance_studio.core import datasets, sweep
from stance_studio.qt.experiments_window import ExperimentsWindow

PROBES = ["why is the sky blue", "how do bees make honey"]


@pytest.fixture
def window(qtbot, loaded, write_stance, monkeypatch):
    monkeypatch.setattr(datasets, "load_probes", lambda *a, **k: list(PROBES))
    write_stance(loaded.library, loaded.base, "curious", seed=1, scale=0.3)
    write_stance(loaded.library, loaded.base, "confident", seed=2, kinds=("v_proj", "o_proj"), rank=2, scale=0.3)
    loaded.refresh_library()
    w = ExperimentsWindow(loaded)
    qtbot.addWidget(w)
    w.set_experiment("dose")
    w.dose.max_tokens.setValue(4)
    return w


def _run_to_end(qtbot, view):
    job = view.run()
    assert job is not None
    with qtbot.waitSignal(job.ended, timeout=120_000):
        pass
    return job


def test_the_tab_lists_the_library_and_is_chosen_by_name(window):
    view = window.dose
    assert window.tabs.currentWidget() is view
    assert sorted(view.direction.itemText(i) for i in range(view.direction.count())) == ["confident", "curious"]
    assert view.second.itemText(0).startswith("none") and view.second.count() == 3
    window.set_experiment("policies")
    assert window.tabs.currentWidget() is window.comparisons


def test_one_direction_fills_lines_and_table_as_measured_and_exports(qtbot, window, loaded, tmp_path):
    view = window.dose
    before = {n: p.detach().clone() for n, p in loaded.base.model.named_parameters()}
    view.direction.setEditText("curious")
    view.alphas.setText("0:2:1")
    job = view.run()
    filled = []
    job.progressed.connect(lambda _: filled.append(len(view.rows)))  # after the view's own slot
    with qtbot.waitSignal(job.ended, timeout=120_000):
        pass
    assert job.state == "finished"
    assert [view.table.item(r, 0).text() for r in range(3)] == ["+0", "+1", "+2"]
    assert filled and filled[-1] == 3  # rows arrive with the progress reports, not only with the result
    # stances with no recorded dataset have no stance rate: the plots fall back to the
    # marker score, labelled as such, beside the capability cost
    assert view.lines.keys == ["stance_score", "capability.change"]
    x, y = view.lines.lines["capability.change"].curve.getData()
    assert list(x) == [0.0, 1.0, 2.0] and y[0] == pytest.approx(0.0, abs=1e-6) and y[1] != 0 and y[2] != 0
    assert len(view.lines.lines["capability.change"].low.getData()[0]) == 3  # its interval band
    titles = [p.titleLabel.text for p in view.lines.plot_items()]
    assert titles[0].startswith("marker score (hedges") and titles[1].startswith("capability cost")
    assert view.lines.plot_items()[0].viewRange()[0][0] < 0 < 2 < view.lines.plot_items()[1].viewRange()[0][1]
    kl = [r["kl_to_base"] for r in view.rows]
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[1] > 0 and kl[2] > 0
    for n, p in loaded.base.model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n

    view.export(str(tmp_path / "dose.csv"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "dose.csv").read_text())))
    assert [float(r["alpha"]) for r in rows] == [0.0, 1.0, 2.0] and float(rows[0]["kl_to_base"]) == pytest.approx(0.0, abs=1e-6)
    view.export(str(tmp_path / "dose.md"))
    md = (tmp_path / "dose.md").read_text()
    assert "| α |" in md and "curious=2" in md and loaded.base.model_id in md
    view.export(str(tmp_path / "dose.json"))
    assert len(json.loads((tmp_path / "dose.json").read_text())["rows"]) == 3


def test_intervals_draw_a_band_and_preferred_metrics_replace_fallbacks(window):
    view = window.dose
    rows = [{"alpha": a, "stance_rate": 0.1 + a / 4, "stance_rate_ci95": [a / 4, 0.2 + a / 4], "stance_score": 0.0,
             "kl_to_base": a, "capability": {"change": 0.01 * a}, "stance_fit_nats": 0.1 * a} for a in (0.0, 1.0, 2.0)]
    view.lines.set_rows(rows)
    assert view.lines.keys == ["stance_rate", "stance_fit_nats", "capability.change"]
    low_x, low_y = view.lines.lines["stance_rate"].low.getData()
    high_x, high_y = view.lines.lines["stance_rate"].high.getData()
    assert list(low_y) == [0.0, 0.25, 0.5] and list(high_y) == [0.2, 0.45, 0.7]
    assert view.lines.lines["stance_fit_nats"].low.getData()[0] is None or \
        len(view.lines.lines["stance_fit_nats"].low.getData()[0]) == 0


def test_the_strict_stance_rate_draws_dashed_on_the_stance_rates_plot(window):
    view = window.dose
    rows = [{"alpha": a, "stance_rate": min(1.0, a / 2), "stance_rate_strict": [0.0, 0.5, 0.25][i], "kl_to_base": a}
            for i, a in enumerate((0.0, 1.0, 2.0))]
    view.lines.set_rows(rows)
    rate, strict = view.lines.lines["stance_rate"], view.lines.lines["stance_rate_strict"]
    assert strict.plot is rate.plot and view.lines.keys == ["stance_rate", "kl_to_base"]
    assert list(strict.curve.getData()[1]) == [0.0, 0.5, 0.25]  # strict falls where answers loop
    assert strict.curve.opts["pen"].style() == Qt.PenStyle.DashLine


def test_grid_draws_a_heat_map_in_alpha_beta_units(qtbot, window):
    view = window.dose
    view.direction.setEditText("curious")
    view.second.setCurrentText("confident")
    assert view.alphas.text() == sweep.DEFAULT_GRID and view.betas.isVisibleTo(view)
    view.alphas.setText("0,1")
    view.betas.setText("-1,0,1")
    _run_to_end(qtbot, view)
    assert view.plots.currentWidget() is view.heat
    assert [(r["alpha"], r["beta"]) for r in view.rows] == [(a, b) for a in (0, 1) for b in (-1, 0, 1)]
    view.metric.setCurrentIndex(view.metric.findData("kl_to_base"))
    heat = view.heat
    assert heat.matrix.shape == (2, 3) and heat.image.image.shape == (2, 3)
    assert heat.value_at(0.0, 0.0) == pytest.approx(0.0, abs=1e-6) and heat.value_at(1.0, 1.0) > 0
    kl = {(r["alpha"], r["beta"]): r["kl_to_base"] for r in view.rows}
    assert np.allclose(heat.matrix, [[kl[(a, b)] for b in (-1, 0, 1)] for a in (0, 1)])
    ticks = heat.plot.getAxis("left")._tickLevels[0]
    assert [t[1] for t in ticks] == ["-1", "0", "1"]
    assert heat.plot.getAxis("bottom").labelText.startswith("α (curious)")
    assert heat.bar.levels() == pytest.approx((float(np.nanmin(heat.matrix)), float(np.nanmax(heat.matrix))))


def test_cancel_keeps_the_points_measured(qtbot, window, monkeypatch):
    view = window.dose
    view.direction.setEditText("curious")
    view.alphas.setText("0:10:1")
    job = view.run()
    job.progressed.connect(lambda reports: job.cancel() if view.rows else None)
    with qtbot.waitSignal(job.ended, timeout=120_000):
        pass
    assert job.state == "cancelled" and 1 <= len(view.rows) < 11
    assert "Cancelled" in view.status.text() and view.run_button.isEnabled()


@pytest.mark.parametrize("direction, alphas, needle", [
    ("curious", "0:1", "'0:1'"), ("base", "0,1", "base"), ("nobody", "0,1", "nobody"),
])
def test_bad_input_is_refused_before_anything_runs(window, boxes, direction, alphas, needle):
    view = window.dose
    view.direction.setEditText(direction)
    view.alphas.setText(alphas)
    assert view.run() is None
    (kind, title, text), = boxes.of("warning")
    assert needle in text and view.run_button.isEnabled()


def test_the_stance_lists_follow_the_library_and_the_model(qtbot, window, loaded, write_stance):
    view = window.dose
    write_stance(loaded.library, loaded.base, "third", seed=3)
    loaded.refresh_library()
    assert view.second.findText("third") > 0 and view.direction.findText("third") >= 0
    loaded.host.model_changed.emit(loaded.base)
    assert view.second.count() == 4
