import csv
import io
import json

import pyqtgraph as pg
import pytest
import torch
from PySide6.QtCore import Qt

from stance_studio.core import experiments
from stance_studio.core.experiment_tables import headers
from stance_studio.core.training import TrainConfig
from stance_studio.qt.experiments_window import ExperimentsWindow

PROBES = ["why is the sky blue", "how do bees make honey"]


@pytest.fixture
def window(qtbot, loaded, monkeypatch):
    monkeypatch.setattr(experiments, "load_probes", lambda *a, **k: list(PROBES))
    w = ExperimentsWindow(loaded)
    qtbot.addWidget(w)
    return w


def _run_to_end(qtbot, window):
    job = window.run()
    assert job is not None
    with qtbot.waitSignal(job.ended, timeout=600_000):  # a guard against hanging, not a speed test
        pass
    return job


def test_policy_sweep_fills_table_and_plot_and_leaves_the_base_untouched(qtbot, window, loaded, tmp_path):
    before = {n: p.detach().clone() for n, p in loaded.base.model.named_parameters()}
    window.set_experiment("policies")
    assert window.plot.isVisible() or not window.isVisible()  # the plot belongs to this experiment
    window.policies.setText("all, rank:1")
    window.steps.setValue(3)
    window.lr.setValue(1e-2)
    job = _run_to_end(qtbot, window)
    assert job.state == "finished"
    assert window.table.rowCount() == 2
    assert [window.table.item(r, 0).text() for r in range(2)] == ["all", "rank:1"]
    columns = headers("policies")
    assert float(window.table.item(0, columns.index("retention")).text()) == pytest.approx(1.0, abs=1e-3)
    assert float(window.table.item(0, columns.index("bits/weight")).text()) == pytest.approx(32.0)  # all: float32
    assert len(window.scatter.data) == 2
    assert window.run_button.isEnabled() and not window.cancel_button.isEnabled()
    for name, p in loaded.base.model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name

    window.export(str(tmp_path / "sweep.md"))
    md = (tmp_path / "sweep.md").read_text()
    assert "| policy |" in md and "| rank:1 |" in md and loaded.base.model_id in md
    window.export(str(tmp_path / "sweep.csv"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "sweep.csv").read_text())))
    assert [r["policy"] for r in rows] == ["all", "rank:1"] and int(rows[1]["bytes"]) < int(rows[0]["bytes"])
    window.export(str(tmp_path / "sweep.json"))
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert doc["experiment"] == "policies" and len(doc["rows"]) == 2


def test_method_comparison_rows_arrive_as_measured(qtbot, window, monkeypatch):
    monkeypatch.setattr(experiments, "report_methods", lambda n: [
        ("full", TrainConfig(steps=2, lr=1e-2)), ("lora", TrainConfig(method="lora", steps=2, lr=1e-1))])
    counts = []
    window.table.model().rowsInserted.connect(lambda *a: counts.append(window.table.rowCount()))
    _run_to_end(qtbot, window)
    assert [window.table.item(r, 0).text() for r in range(3)] == ["base", "full", "lora"]
    # rows were added one at a time while the job ran, not all at the end
    assert counts[0] < 3
    from stance_studio.core.experiment_tables import headers

    identical = headers("methods").index("identical to base")
    assert window.table.item(0, identical).text() == "100% [100%, 100%]"  # base: with its interval over probes


def test_methods_over_seeds_read_mean_and_spread(qtbot, window, monkeypatch):
    from stance_studio.core.experiment_tables import headers

    monkeypatch.setattr(experiments, "report_methods", lambda n: [("full", TrainConfig(steps=2, lr=1e-2))])
    window.seeds.setValue(2)
    job = _run_to_end(qtbot, window)
    assert job.state == "finished", job.error
    assert [window.table.item(r, 0).text() for r in range(window.table.rowCount())] == ["base", "full"]
    fit = window.table.item(1, headers("methods").index("stance fit (nats/token)")).text()
    assert " ± " in fit and "2 seeds" in window.status.text()


def test_a_bad_policy_is_refused_before_anything_runs(window, boxes):
    window.set_experiment("policies")
    window.policies.setText("all rank:zero")
    assert window.run() is None
    (kind, title, text), = boxes.of("warning")
    assert "rank:zero" in text and window.run_button.isEnabled()


def test_a_bad_dataset_file_shows_the_reason(qtbot, window, boxes, tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"prompt": "hi"}\n')
    window.dataset_box.insertItem(0, bad.name, str(bad))
    window.dataset_box.setCurrentIndex(0)
    job = _run_to_end(qtbot, window)
    assert job.state == "failed"
    (kind, title, text), = boxes.of("warning")
    assert "broken.jsonl" in text and "Failed" in window.status.text()


def test_cancel_stops_the_run(qtbot, window, monkeypatch):
    monkeypatch.setattr(experiments, "report_methods", lambda n: [("full", TrainConfig(steps=500, lr=1e-3))])
    job = window.run()
    with qtbot.waitSignal(job.progressed, timeout=60_000):
        pass
    window.cancel()
    with qtbot.waitSignal(job.ended, timeout=60_000):
        pass
    assert job.state == "cancelled" and "Cancelled" in window.status.text()
    assert window.run_button.isEnabled()


def test_needs_a_model(qtbot, session, boxes):
    w = ExperimentsWindow(session)
    qtbot.addWidget(w)
    assert w.run() is None
    assert boxes.of("information")


def test_stance_menu_opens_the_chosen_experiment(qtbot, loaded):
    from stance_studio.qt.main_window import MainWindow

    main = MainWindow(loaded)
    qtbot.addWidget(main)
    actions = {a.text().replace("&", ""): a for top in main.menuBar().actions() for a in top.menu().actions()}
    actions["Compare extraction policies…"].trigger()
    assert main._experiments.isVisible() and main._experiments.kind == "policies"
    assert actions["Compare training methods…"].shortcut().toString() == "Ctrl+Shift+M"
    actions["Compare training methods…"].trigger()
    assert main._experiments.kind == "methods" and not main._experiments.policies.isVisible()
    main._experiments.close()


def test_layer_sweep_of_a_steering_stance_plots_score_against_depth(qtbot, window, loaded, monkeypatch):
    import stance_studio.core.datasets as datasets
    from stance_studio.core.checkpoints import make_checkpoint

    monkeypatch.setattr(datasets, "load_probes", lambda *a, **k: list(PROBES))
    base = loaded.base
    ckpt = make_checkpoint("steer", {}, base, training={"method": "steer"})
    ckpt.kind = "activation"
    gen = torch.Generator().manual_seed(2)
    ckpt.directions = {n: torch.randn(32, generator=gen) * 3 for n in range(base.num_layers)}
    ckpt.steering = {"apply_layers": [1], "scale": 1.0, "strength": 1.0}
    loaded.library.save(ckpt)
    loaded.refresh_library()
    window.set_experiment("layers")
    assert window.steering_box.count() == 1 and window.steering_box.currentText() == "steer"
    assert not window.dataset_box.isVisibleTo(window) and window.every.isVisibleTo(window)
    window.every.setValue(2)
    job = _run_to_end(qtbot, window)
    assert job.state == "finished"
    assert [window.table.item(r, 0).text() for r in range(window.table.rowCount())] == ["base", "0", "2"]
    assert [round(float(x), 3) for x in window.scatter.data["x"]] == [0.125, 0.625]
    # depth fractions read as fractions: no "(x0.001)" rescaling of the axis
    assert window.plot.getAxis("bottom").autoSIPrefix is False
    assert loaded.blend.blender.is_base
    assert "steer" in window.title()
    # no dataset recorded: the marker score; with the stance's rate in every row: the rate
    assert window.plot.getAxis("left").labelText.startswith("marker score")
    rated = [dict(r, stance_rate=0.25 * i, stance_rate_ci95=[0.0, 1.0], stance_rate_strict=0.1 * i,
                  looping_fraction=0.0) for i, r in enumerate(window.rows)]
    # a saved sweep shown again sets the form to what it was measured with
    window.every.setValue(1)
    window.set_experiment("methods")
    window.show_layer_sweep({"checkpoint": "steer", "probes": len(PROBES), "rows": rated})
    assert window.kind == "layers" and window.steering_box.currentText() == "steer"
    assert window.every.value() == 2 and window.probes_limit.value() == len(PROBES)
    assert window.plot.getAxis("left").labelText.startswith("stance rate")
    # the strict rate (no looping answer) drawn dashed beside it
    dashed = [item for item in window._labels if isinstance(item, pg.PlotDataItem)
              and item.opts["pen"].style() == Qt.PenStyle.DashLine]
    assert len(dashed) == 1 and [round(float(y), 2) for y in dashed[0].getData()[1]] == [0.1, 0.2]
    assert not window.seeds.isVisibleTo(window)  # seeds do not apply to a layer sweep
    assert [round(float(y), 2) for y in window.scatter.data["y"]] == [0.25, 0.5]
