"""End-to-end on the bundled model: train curious-uncertainty with the defaults,
then the checkpoint visibly shifts the stance on unseen probe prompts: its stance rate
is clearly above base's (95 % intervals apart), base's is low, and its stance fit on
the held-out references is positive."""

import pytest

from stance_studio.core.blend import Blender
from stance_studio.core.intervals import overlap
from stance_studio.core.library import Library
from stance_studio.core.metrics import evaluate
from stance_studio.core.pipeline import build_stance
from stance_studio.core.probes import retention_probes
from stance_studio.core.stance_reference import reference_from_checkpoint

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

    assert len(ckpt.training["holdout"]["prompts"]) == 6 and ckpt.metrics["stance_fit_nats"] > 0

    probes = retention_probes()  # 40 probes, 8 per category
    blender = Blender(bundled)
    reference = reference_from_checkpoint(library.load("curious"))
    base = evaluate(bundled, blender, [], probes, stance=reference, capability_tokens=512)
    stance = evaluate(bundled, blender, [(library.load("curious"), 1.0)], probes, stance=reference,
                      base_generations=base.generations, capability_tokens=512)
    assert stance.stance.rate_reliable and stance.stance.reference.fit_split == "held-out"
    assert stance.stance.rate.rate > base.stance.rate.rate
    assert not overlap(stance.stance.rate.ci95, base.stance.rate.ci95)
    assert base.stance.rate.rate <= 0.25
    assert stance.stance.fit.nats > 0 and base.stance.fit.nats == pytest.approx(0.0, abs=1e-6)
    assert stance.capability.perplexity_base == base.capability.perplexity
    assert stance.stance_score > base.stance_score
    assert stance.identical_fraction < 0.5
    assert stance.kl_to_base > base.kl_to_base
    assert blender.is_base
