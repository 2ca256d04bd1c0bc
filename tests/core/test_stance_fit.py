import math

import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.datasets import Example, encode_example, load_dataset
from stance_studio.core.stance_fit import fit_from_logliks, response_logliks, stance_fit
from stance_studio.core.training import TrainConfig, train

EXAMPLES = [Example("Why is the sky blue?", "Certainly, it is scattering."),
            Example("What is a black hole?", "I think it might be a collapsed star.")]


@torch.no_grad()
def test_response_loglik_by_hand(tiny):
    (ll, n), _ = response_logliks(tiny, EXAMPLES)
    ids, labels = encode_example(tiny.tokenizer, EXAMPLES[0])
    logp = torch.log_softmax(tiny.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    expected = sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)) if labels[t] != -100)
    assert n == sum(1 for x in labels if x != -100) and ll == pytest.approx(expected, rel=1e-4)


def test_fit_by_hand():
    fit = fit_from_logliks([(-10.0, 5), (-4.0, 3)], [(-12.0, 5), (-7.0, 3)])
    assert fit.nats == pytest.approx((2.0 + 3.0) / 8) and fit.examples == 2 and fit.tokens == 8
    lo, hi = fit.ci95
    assert 2.0 / 5 <= lo <= fit.nats <= hi <= 3.0 / 3


def test_stance_fit_moves_with_the_stance(tiny):
    """Training on a stance raises its fit; the negated delta lowers it; base is 0."""
    data = load_dataset("confident-expertise", tiny.tokenizer)
    blender = Blender(tiny)
    examples = data.examples[:4]
    assert stance_fit(tiny, blender, [], examples).nats == pytest.approx(0.0, abs=1e-6)
    deltas = train(tiny, data, TrainConfig(steps=4, lr=3e-3, batch_size=4)).deltas
    up = stance_fit(tiny, blender, [(deltas, 1.0)], examples)
    down = stance_fit(tiny, blender, [(deltas, -1.0)], examples)
    assert up.nats > 0.05 and up.ci95[0] > 0 and down.nats < 0
    assert blender.is_base  # the blend in force (none) is put back
    assert math.isfinite(up.nats) and up.examples == 4
