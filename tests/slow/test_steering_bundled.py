"""End-to-end on the bundled model: a steering stance of curious-uncertainty, built
with the defaults, shifts the stance metrics on unseen probe prompts (its stance rate
above base's, scored by the stance's own classifier); its vectors export as a
llama.cpp control vector that reads back exactly."""

import numpy as np
import pytest

from stance_studio.core.blend import Blender
from stance_studio.core.datasets import load_dataset, load_probes
from stance_studio.core.metrics import evaluate
from stance_studio.core.stance_reference import reference_from_dataset
from stance_studio.core.steering import applied_vectors
from stance_studio.core.steering_build import build_steering

pytestmark = pytest.mark.slow

PROBES = 16  # the first probes: enough to see the shift, small enough for CI


def test_default_steering_shifts_the_stance(bundled, tmp_path):
    from gguf import GGUFReader

    from stance_studio.core.gguf_export import export_control_vector

    data = load_dataset("curious-uncertainty")
    ckpt = build_steering(bundled, data, "curious-steer")
    assert sorted(ckpt.directions) == list(range(bundled.num_layers))
    probes = load_probes()[:PROBES]
    blender = Blender(bundled)
    stance = reference_from_dataset(data)
    base = evaluate(bundled, blender, [], probes, stance=stance, capability_tokens=0)
    steered = evaluate(bundled, blender, [(ckpt, 1.0)], probes, base_generations=base.generations, stance=stance,
                       capability_tokens=0)
    assert steered.stance.rate_reliable
    assert steered.stance.rate.rate > base.stance.rate.rate
    assert steered.stance_score > base.stance_score
    assert steered.kl_to_base > base.kl_to_base
    assert steered.identical_fraction < 0.5
    assert blender.is_base

    path = export_control_vector(ckpt, tmp_path / "curious.gguf")
    reader = GGUFReader(str(path))
    got = {t.name: np.array(t.data) for t in reader.tensors}
    assert got.keys() == {f"direction.{n}" for n in applied_vectors(ckpt)}
    for n, v in applied_vectors(ckpt).items():
        assert np.array_equal(got[f"direction.{n}"], v.numpy())
