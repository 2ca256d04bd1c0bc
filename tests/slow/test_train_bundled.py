"""End-to-end on the bundled model: train curious-uncertainty with the defaults,
then the checkpoint visibly shifts the stance on unseen probe prompts."""

import pytest

from stance_studio.core.blend import Blender
from stance_studio.core.datasets import load_probes
from stance_studio.core.library import Library
from stance_studio.core.metrics import evaluate
from stance_studio.core.pipeline import build_stance

pytestmark = pytest.mark.slow


def test_default_training_shifts_the_stance(bundled, library_path):
    library = Library(library_path)
    ckpt = build_stance(bundled, "curious-uncertainty", "curious", library=library)
    assert library.names() == ["curious"]
    assert ckpt.training["nonfinite_steps"] == 0
    finite = [x for x in ckpt.training["loss"] if x is not None]
    assert finite[-1] < finite[0]
    # the default policy keeps the checkpoint small and most of the shift
    assert ckpt.path.stat().st_size <= 0.02 * bundled.parameter_bytes()
    assert ckpt.metrics["retention"] >= 0.8

    probes = load_probes()
    blender = Blender(bundled)
    base = evaluate(bundled, blender, [], probes)
    stance = evaluate(bundled, blender, [(library.load("curious"), 1.0)], probes,
                      base_generations=base.generations)
    assert stance.stance_score > base.stance_score
    assert stance.identical_fraction < 0.5
    assert stance.kl_to_base > base.kl_to_base
    assert blender.is_base
