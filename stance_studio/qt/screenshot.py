"""Start the real app, drive it through its main workflow and save screenshots.

    python -m stance_studio.qt.screenshot OUTDIR [--model bundled|tiny|PATH] [--library DIR]
                                          [--theme light|dark] [--size 1600x1000]
                                          [--sweep "POLICY POLICY ..." [--sweep-steps N]]
                                          [--dose SPEC [--dose-second NAME] [--dose-alpha LO:HI:STEP]
                                           [--dose-probes N] [--dose-tokens N] [--dose-only]]
                                          [--jobs-only]

Saves ``main-window.png`` and one PNG per panel and dialog. Run it under Xvfb (or
with ``QT_QPA_PLATFORM=offscreen``). Settings go to a temporary file, so the user's
layout and recent models are untouched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


def _wait(app, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshot: timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def _settle(app, seconds: float = 0.3) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def _grab(app, widget, path: Path) -> None:
    _settle(app)
    widget.grab().save(str(path))
    print(f"saved {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stance_studio.qt.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--library", default=None, help="library folder (default: the usual one)")
    parser.add_argument("--theme", default="light", choices=("light", "dark"))
    parser.add_argument("--size", default="1600x1000")
    parser.add_argument("--prompt", default="Why do we dream?")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--sweep", default=None, metavar="POLICIES",
                        help="also run the extraction-policy experiment with these policies (space-separated)")
    parser.add_argument("--sweep-steps", type=int, default=0, help="training steps of that experiment (0: default)")
    parser.add_argument("--layer-sweep", default=None, metavar="FILE",
                        help="a `sweep-layers --json` result to show in the experiments window (saved as "
                             "dialog-layer-sweep.png); with --steering-only, only the steering views are saved")
    parser.add_argument("--steering-only", action="store_true",
                        help="save only the layer sweep and the weights-vs-steering tab")
    parser.add_argument("--dose", default=None, metavar="SPEC",
                        help="also run a dose–response sweep of this stance or blend and save its tab")
    parser.add_argument("--dose-second", default=None, metavar="NAME", help="a second stance: sweep the (α, β) grid")
    parser.add_argument("--dose-alpha", default=None, metavar="LO:HI:STEP", help="the sweep's weights")
    parser.add_argument("--dose-probes", type=int, default=0, help="the first N probe prompts (0: all)")
    parser.add_argument("--dose-tokens", type=int, default=0, help="tokens per answer (0: the default)")
    parser.add_argument("--dose-only", action="store_true",
                        help="save only the dose–response pictures (skips the main workflow)")
    parser.add_argument("--jobs-only", action="store_true",
                        help="save only the jobs list and status bar during a training with a generation "
                             "answered between its steps and more jobs queued (then cancels them all)")
    args = parser.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    settings_dir = tempfile.mkdtemp(prefix="stance-studio-shot-")
    os.environ["STANCE_STUDIO_SETTINGS"] = str(Path(settings_dir) / "settings.ini")

    from PySide6.QtWidgets import QApplication, QMessageBox

    app = QApplication.instance() or QApplication(sys.argv[:1])
    # The script answers no dialog: the first-run offer is declined, and a warning is
    # printed (and fails the run) instead of waiting for a click.
    QMessageBox.question = staticmethod(lambda *a, **k: QMessageBox.StandardButton.No)
    warnings: list[str] = []

    def _report(parent, title, text, *a, **k):
        warnings.append(f"{title}: {text}")
        print(f"screenshot: dialog {title!r}: {text}", file=sys.stderr)
        return QMessageBox.StandardButton.Ok

    QMessageBox.warning = QMessageBox.critical = staticmethod(_report)
    from stance_studio.qt.app import collect_garbage_in_gui_thread, create_window
    from stance_studio.qt.compare_column import CURRENT_BLEND, STANCE
    from stance_studio.qt.settings import Settings

    collect_garbage_in_gui_thread(app)
    Settings().set("ui/theme", args.theme)
    Settings().set("ui/first_run_offered", True)
    window = create_window(args.model, args.library)
    width, height = (int(v) for v in args.size.lower().split("x"))
    window.resize(width, height)
    window.show()
    session = window.session
    _wait(app, lambda: session.base is not None, 600, "the model to load")
    _wait(app, lambda: not session.runner.busy, 60, "the worker")
    if args.jobs_only:
        _jobs_shots(app, window, args, out)
        window.close()
        return 1 if warnings else 0
    if args.dose_only:
        window.open_experiments("dose")
        _dose_response(app, window._experiments, args, out)
        window.close()
        return 1 if warnings else 0

    if args.layer_sweep or args.steering_only:
        _steering_shots(app, window, args, out)
        if args.steering_only:
            window.close()
            return 1 if warnings else 0

    names = session.catalog.compatible_names()[:3]
    compare = window.compare
    compare.prompt.setPlainText(args.prompt)
    compare.max_tokens.setValue(args.max_new_tokens)
    for name in names:
        compare.add_column(STANCE + name)
    if names:
        for i, name in enumerate(names[:2]):
            window.blend_panel.set_weight(name, (0.6, -0.4)[i])
        window.blend_panel.flush()
        compare.add_column(CURRENT_BLEND)
        window.library_panel.select(names[0])
    _wait(app, lambda: not session.runner.busy, 60, "the blend")
    job = compare.run()
    if job is not None:
        _wait(app, lambda: compare._job is None, 600, "the side-by-side generation")
    layers = window.plots.layers
    if names:
        layers.show_stance(names[0])
        _wait(app, lambda: bool(layers.changes) and not session.runner.busy, 300, "the layer analysis")
        matrices = [i for i, bar in enumerate(layers.bars) if len(bar.module.shape) == 2]
        if matrices:
            biggest = max(matrices, key=lambda i: layers.bars[i].module.relative_change)
            layers.show_spectrum(biggest)
            _wait(app, lambda: "singular values" in layers.spectrum_title.text() or "no spectrum" in layers.spectrum_title.text(),
                  120, "the spectrum")
    _grab(app, window, out / "main-window.png")
    for key, dock in window.docks.items():
        _grab(app, dock, out / f"panel-{key}.png")
    _grab(app, compare, out / "panel-compare.png")

    window.plots.setCurrentWidget(window.plots.loss)
    _grab(app, window.plots, out / "plot-loss.png")
    window.plots.setCurrentWidget(window.plots.retention)
    _grab(app, window.plots, out / "plot-retention.png")
    window.plots.setCurrentWidget(window.plots.layers)

    window.open_experiments("policies")
    experiments = window._experiments
    if args.sweep:
        experiments.policies.setText(args.sweep)
        experiments.steps.setValue(args.sweep_steps)
        job = experiments.run()
        if job is not None:
            _wait(app, lambda: not job.is_active, 3600, "the policy experiment")
    _grab(app, experiments, out / "dialog-experiments.png")
    if args.dose:
        _dose_response(app, experiments, args, out)
    experiments.hide()

    try:
        window.open_training()
        dialog = window._training_dialog
        if dialog is not None:
            _grab(app, dialog, out / "dialog-training.png")
            dialog.hide()
    except ImportError as exc:  # the training core is not installed in this checkout
        print(f"skipped the training dialog: {exc}")
    from stance_studio.qt.dataset_editor import DatasetEditor

    editor = DatasetEditor(rows=[("What is the tallest mountain?", "I'm not entirely sure, but I believe it is Everest …"),
                                 ("How do vaccines work?", "As far as I understand it, they train the immune system …")],
                           parent=window)
    editor.show()
    _grab(app, editor, out / "dialog-dataset-editor.png")
    editor.close()
    window.close()
    return 1 if warnings else 0


def _jobs_shots(app, window, args, out: Path) -> None:
    """A long training running, a generation answered between its steps, a second
    training and a blend queued: the jobs list and the status bar, then Cancel all."""
    from stance_studio.core.datasets import builtin_stances
    from stance_studio.qt.training_job import make_config, submit_training

    session = window.session
    datasets = list(builtin_stances().items())
    first = submit_training(session, datasets[0][1], "jobs-demo-a", make_config({"method": "full", "steps": 100000}),
                            "rank:4")
    _wait(app, lambda: first.yields, 600, "the training's first step")
    compare = window.compare
    compare.prompt.setPlainText(args.prompt)
    compare.max_tokens.setValue(args.max_new_tokens)
    generation = compare.run()
    if generation is not None:
        _wait(app, lambda: not generation.is_active, 600, "the generation between training steps")
    submit_training(session, datasets[-1][1], "jobs-demo-b", make_config({"method": "lora", "steps": 50}), "rank:4")
    window.show_jobs()
    _settle(app, 1.0)
    _grab(app, window, out / "main-window-jobs.png")
    _grab(app, window.docks["jobs"], out / "panel-jobs.png")
    _grab(app, window.statusBar(), out / "status-bar-jobs.png")
    for runner in (session.runner, session.host.side_runner):
        runner.cancel_all()
    _wait(app, lambda: not session.runner.busy, 600, "the cancelled jobs")
    _grab(app, window.docks["jobs"], out / "panel-jobs-cancelled.png")


def _steering_shots(app, window, args, out: Path) -> None:
    """The layer sweep measured by `sweep-layers --json` (shown, not re-run) and the
    weights-vs-steering tab for its stance."""
    import json

    session = window.session
    name = None
    if args.layer_sweep:
        doc = json.loads(Path(args.layer_sweep).read_text())
        name = doc["checkpoint"]
        window.open_experiments("layers")
        experiments = window._experiments
        experiments.show_layer_sweep(doc)
        _grab(app, experiments, out / "dialog-layer-sweep.png")
        experiments.hide()
    steering = [e.name for e in session.entries if e.metadata.get("kind") == "activation"]
    name = name or (steering[0] if steering else None)
    if name:
        window.docks["plots"].show()
        window.plots.setCurrentWidget(window.plots.kinds)
        window.plots.show_stances([name])
        _wait(app, lambda: not session.runner.busy, 120, "the per-layer changes")
        _settle(app)
        _grab(app, window.plots, out / "plot-weights-vs-steering.png")
        window.plots.setCurrentWidget(window.plots.layers)


def _dose_response(app, experiments, args, out: Path) -> None:
    """Run the dose–response tab as asked and save it with its table as Markdown (and
    the plots panel's interference tab when a second stance is named)."""
    experiments.set_experiment("dose")
    view = experiments.dose
    view.direction.setEditText(args.dose)
    if args.dose_second:
        view.second.setCurrentText(args.dose_second)
    if args.dose_alpha:
        view.alphas.setText(args.dose_alpha)
    view.probe_count.setValue(args.dose_probes)
    if args.dose_tokens:
        view.max_tokens.setValue(args.dose_tokens)
    job = view.run()
    if job is not None:
        _wait(app, lambda: not job.is_active, 3600, "the dose–response sweep")
    stem = "dose-grid" if args.dose_second else "dose-response"
    _grab(app, experiments, out / f"dialog-{stem}.png")
    view.export(str(out / f"{stem}.md"))  # the measured table behind the picture
    window = experiments.parent()
    if args.dose_second and window is not None:
        window.plots.show_stances([args.dose, args.dose_second])
        window.plots.setCurrentWidget(window.plots.interference)
        _wait(app, lambda: window.plots.interference.result is not None, 600, "the interference measurement")
        _grab(app, window.plots, out / "plot-interference.png")


if __name__ == "__main__":
    raise SystemExit(main())
