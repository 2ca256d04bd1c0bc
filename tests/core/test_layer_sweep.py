import re

import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.errors import StanceStudioError
from stance_studio.core.generation import GenerationSettings
from stance_studio.core.layer_sweep import sweep_layers, sweep_table
from stance_studio.core.metrics import evaluate
from stance_studio.core.repetition import loops
from stance_studio.core.steering import at_layer

PROBES = ["Why is the sky blue?", "How do bees make honey?"]
SETTINGS = GenerationSettings(max_new_tokens=6)


def steering(tiny, size=3.0):
    ckpt = make_checkpoint("s", {}, tiny, training={"method": "steer"})
    ckpt.kind = "activation"
    gen = torch.Generator().manual_seed(5)
    ckpt.directions = {n: torch.randn(32, generator=gen) * size for n in range(tiny.num_layers)}
    ckpt.directions[2] = torch.zeros(32)  # a layer whose vector is zero changes nothing
    ckpt.steering = {"apply_layers": [1], "scale": 1.0, "strength": 1.0}
    return ckpt


def test_each_row_measures_that_layer_alone(tiny):
    ckpt = steering(tiny)
    blender = Blender(tiny)
    rows = sweep_layers(tiny, ckpt, PROBES, settings=SETTINGS, blender=blender)
    assert [r["layer"] for r in rows] == [None, 0, 1, 2, 3]
    assert [r["depth"] for r in rows[1:]] == [0.125, 0.375, 0.625, 0.875]
    assert rows[0]["kl_to_base"] == 0 and rows[0]["identical_fraction"] == 1
    assert rows[3]["kl_to_base"] == 0 and rows[3]["identical_fraction"] == 1  # the zero vector
    assert rows[1]["kl_to_base"] > 0
    # the batched sweep agrees with evaluating that layer's vector alone, one variant at a time
    alone = evaluate(tiny, blender, [(at_layer(ckpt, 1, 1.0), 1.0)], PROBES, SETTINGS)
    assert alone.generations[0].text == rows[2]["sample"]
    assert rows[2]["stance_score"] == pytest.approx(alone.stance_score)
    assert rows[2]["identical_fraction"] == pytest.approx(alone.identical_fraction)
    assert rows[2]["kl_to_base"] == pytest.approx(alone.kl_to_base, rel=1e-3, abs=1e-5)
    assert blender.is_base
    assert "base" in sweep_table(rows)


def test_sweep_refuses_weight_stances_and_unknown_layers(tiny, deltas_factory):
    with pytest.raises(StanceStudioError, match="not a steering stance"):
        sweep_layers(tiny, make_checkpoint("w", deltas_factory(tiny, rank=2), tiny), PROBES)
    with pytest.raises(StanceStudioError, match="no vector for layer 7"):
        sweep_layers(tiny, steering(tiny), PROBES, layers=[7])


@pytest.mark.parametrize("strength", [float("nan"), float("inf"), -float("inf"), 1e30])
def test_sweep_refuses_a_strength_that_is_not_a_usable_number(tiny, strength):
    """nan or inf strength used to run and report nan KL for every layer."""
    with pytest.raises(StanceStudioError, match=f"steering strength must be a finite number .*got {re.escape(str(strength))}"):
        sweep_layers(tiny, steering(tiny), PROBES, strength=strength, settings=SETTINGS)


def test_each_row_has_the_stance_rate_of_its_answers_when_the_stance_records_its_dataset(tiny):
    from stance_studio.core.datasets import builtin_stances, load_dataset
    from stance_studio.core.metrics import EVAL_SETTINGS
    from stance_studio.core.stance_classifier import stance_classifier
    from stance_studio.core.stance_reference import reference_from_checkpoint

    ckpt = steering(tiny)
    rows = sweep_layers(tiny, ckpt, PROBES, settings=SETTINGS)
    assert all(r["stance_rate"] is None for r in rows) and "–" in sweep_table(rows)  # no dataset recorded
    data = load_dataset("curious-uncertainty")
    ckpt.stance = {**ckpt.stance, "dataset": "curious-uncertainty", "dataset_name": data.name,
                   "dataset_hash": data.sha256}
    blender = Blender(tiny)
    rows = sweep_layers(tiny, ckpt, PROBES, settings=SETTINGS, blender=blender)
    classifier = stance_classifier(tiny, blender, reference_from_checkpoint(ckpt), EVAL_SETTINGS)
    for layer_row, blend in ((rows[0], []), (rows[2], [(at_layer(ckpt, 1, 1.0), 1.0)])):
        texts = [g.text for g in evaluate(tiny, blender, blend, PROBES, SETTINGS).generations]
        labels = [int(x) for x in classifier.predict(texts)]
        assert layer_row["stance_rate"] == pytest.approx(sum(labels) / len(labels))
        low, high = layer_row["stance_rate_ci95"]
        assert low <= layer_row["stance_rate"] <= high
        assert layer_row["looping_fraction"] == pytest.approx(sum(map(loops, texts)) / len(texts))
        assert layer_row["stance_rate_strict"] == pytest.approx(
            sum(lab and not loops(t) for lab, t in zip(labels, texts)) / len(texts))
    assert rows[3]["stance_rate"] == rows[0]["stance_rate"]  # the zero vector answers as base
    assert rows[0]["classifier_accuracy"] == classifier.accuracy
    assert builtin_stances()["curious-uncertainty"].is_file()
