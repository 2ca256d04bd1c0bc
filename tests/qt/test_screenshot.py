"""The screenshot script starts the real app (a separate process, its own event loop),
drives the main workflow on a tiny model with a trained stance and saves PNGs.

It runs under Xvfb when ``xvfb-run`` is installed, offscreen otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from PySide6.QtGui import QImage

from stance_studio.core.library import Library
from stance_studio.core.pipeline import build_stance
from stance_studio.core.training import TrainConfig


def _distinct_colours(image: QImage, step: int = 16) -> int:
    return len({image.pixel(x, y) for x in range(0, image.width(), step) for y in range(0, image.height(), step)})


def test_screenshot_script_saves_the_main_window(tiny, tmp_path):
    library = tmp_path / "library"
    build_stance(tiny, "curious-uncertainty", "curious", TrainConfig(steps=2, lr=3e-3), policy="all",
                 library=Library(library), probes=["why is the sky blue"])
    out = tmp_path / "shots"
    command = [sys.executable, "-m", "stance_studio.qt.screenshot", str(out), "--model", "tiny",
               "--library", str(library), "--size", "1280x800", "--max-new-tokens", "6",
               "--sweep", "all rank:1", "--sweep-steps", "2",
               "--dose", "curious", "--dose-alpha=-1,0,1", "--dose-probes", "1", "--dose-tokens", "2"]
    env = dict(os.environ, STANCE_STUDIO_CACHE=str(tmp_path / "cache"))
    if shutil.which("xvfb-run"):
        command = ["xvfb-run", "-a", *command]
        env.pop("QT_QPA_PLATFORM", None)
    else:
        env["QT_QPA_PLATFORM"] = "offscreen"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    shot = QImage(str(out / "main-window.png"))
    assert (shot.width(), shot.height()) == (1280, 800)
    assert _distinct_colours(shot) > 20, "the main window screenshot is blank"
    for name in ("panel-library.png", "panel-blend.png", "panel-compare.png", "dialog-training.png",
                 "dialog-experiments.png", "dialog-dose-response.png"):
        assert not QImage(str(out / name)).isNull(), f"{name} was not saved"


def test_screenshot_script_saves_the_steering_views(tiny, tmp_path):
    import json

    import torch

    from stance_studio.core.checkpoints import make_checkpoint
    from stance_studio.core.generation import GenerationSettings
    from stance_studio.core.layer_sweep import sweep_layers

    library = Library(tmp_path / "library")
    steer = make_checkpoint("steer", {}, tiny, stance={"dataset_hash": "h"}, training={"method": "steer"})
    steer.kind = "activation"
    steer.directions = {n: torch.randn(32) for n in range(tiny.num_layers)}
    steer.steering = {"apply_layers": [1], "scale": 1.0, "strength": 2.0, "norms": [1.0] * 4,
                      "residual_norms": [2.0] * 4}
    library.save(steer)
    rows = sweep_layers(tiny, steer, ["why is the sky blue"], settings=GenerationSettings(max_new_tokens=4))
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"checkpoint": "steer", "probes": 1, "rows": rows}))
    out = tmp_path / "shots"
    command = [sys.executable, "-m", "stance_studio.qt.screenshot", str(out), "--model", "tiny",
               "--library", str(library.folder), "--size", "1280x800", "--layer-sweep", str(sweep), "--steering-only"]
    env = dict(os.environ, STANCE_STUDIO_CACHE=str(tmp_path / "cache"))
    if shutil.which("xvfb-run"):
        command = ["xvfb-run", "-a", *command]
        env.pop("QT_QPA_PLATFORM", None)
    else:
        env["QT_QPA_PLATFORM"] = "offscreen"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dialog-layer-sweep.png", "plot-weights-vs-steering.png"]
    for name in ("dialog-layer-sweep.png", "plot-weights-vs-steering.png"):
        assert _distinct_colours(QImage(str(out / name))) > 4
