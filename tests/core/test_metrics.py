import math

import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.generation import GenerationSettings, generate_many
from stance_studio.core.metrics import (
    RETENTION_MIN_GAP,
    continuation_logprobs,
    evaluate,
    kl_per_token,
    marker_counts,
    marker_rates,
    mean_loglik,
    pooled_rates,
    retention,
    retention_probe,
)

SETTINGS = GenerationSettings(max_new_tokens=8)
PROBES = ["why is the sky blue", "how do bees make honey", "what is a black hole"]


def test_marker_counts_by_hand():
    text = "I'm not sure, but perhaps it might work. Certainly it is clearly true, of course."
    # hedges: "i'm not sure", "perhaps", "might"; boosters: "certainly", "clearly", "of course"
    assert marker_counts(text) == (3, 3, 15)
    hedges, boosters = marker_rates(text)
    assert hedges == pytest.approx(100 * 3 / 15) and boosters == pytest.approx(100 * 3 / 15)


def test_longest_marker_wins_and_curly_apostrophes_count():
    assert marker_counts("I\u2019m not sure.")[:2] == (1, 0)  # not also "not sure"
    assert marker_counts("")[2] == 0 and marker_rates("") == (0.0, 0.0)


def test_pooled_rates_weight_by_words():
    # 1 hedge in 2 words + 0 in 8 words = 1 per 10 words
    assert pooled_rates(["perhaps so", "one two three four five six seven eight"]) == (pytest.approx(10.0), 0.0)


def test_kl_by_hand():
    p = torch.tensor([[0.5, 0.5]]).log()
    q = torch.tensor([[0.9, 0.1]]).log()
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert float(kl_per_token(p, q)) == pytest.approx(expected, rel=1e-5)
    assert float(kl_per_token(p, p)) == pytest.approx(0.0, abs=1e-7)


def test_retention_formula():
    assert retention(-2.0, -3.0, -1.0) == pytest.approx(0.5)
    assert retention(-1.0, -3.0, -1.0) == pytest.approx(1.0)
    assert retention(-3.0, -3.0, -1.0) == pytest.approx(0.0)


def test_retention_is_undefined_without_a_clear_shift():
    """No shift (LL_tuned ≈ LL_base) or a tuned model less likely than base: nothing to retain."""
    assert retention(-1.0, -1.0, -1.0) is None
    assert retention(-2.0, -1.0, -1.5) is None  # tuned below base
    assert retention(-1.0, -1.0, -1.0 + RETENTION_MIN_GAP / 2) is None
    assert retention(-1.0, -1.0, -1.0 + 2 * RETENTION_MIN_GAP) == pytest.approx(0.0)
    assert retention(-1.0, -1.0, float("nan")) is None


def test_a_zero_tuned_delta_has_undefined_retention(tiny, deltas_factory):
    deltas = deltas_factory(tiny, scale=0.5)
    zero = {n: type(d)(torch.zeros_like(d.tensor)) for n, d in deltas.items()}
    blender = Blender(tiny)
    probe = retention_probe(tiny, blender, zero, PROBES, SETTINGS)
    assert probe.ll_tuned == pytest.approx(probe.ll_base, abs=1e-6)
    assert probe.measure(tiny, blender, deltas) is None and probe.measure(tiny, blender, zero) is None


def test_mean_loglik_matches_a_manual_forward(tiny):
    gens = generate_many(tiny, PROBES[:2], SETTINGS)
    total, count = 0.0, 0
    for g in gens:
        ids = torch.tensor([g.prompt_ids + g.new_ids])
        logp = torch.log_softmax(tiny.model(ids).logits[0].float(), -1)
        for i, tok in enumerate(g.new_ids):
            total += float(logp[len(g.prompt_ids) - 1 + i, tok])
            count += 1
    assert mean_loglik(tiny, gens) == pytest.approx(total / count, rel=1e-4)


def test_base_variant_is_identical_with_zero_kl(tiny):
    m = evaluate(tiny, Blender(tiny), [], PROBES, SETTINGS)
    assert m.identical_fraction == 1.0 and m.kl_to_base == pytest.approx(0.0, abs=1e-6)


def test_shifted_variant_has_kl_and_differs(tiny, deltas_factory):
    deltas = deltas_factory(tiny, scale=0.5)
    blender = Blender(tiny)
    m = evaluate(tiny, blender, [(deltas, 1.0)], PROBES, SETTINGS)
    assert m.identical_fraction < 1.0 and m.kl_to_base > 0.01
    assert blender.is_base  # the blend in force before (none) is back
    # the KL is the mean over the variant's own continuation tokens
    blender.apply([(deltas, 1.0)])
    logp_v = continuation_logprobs(tiny, m.generations)
    blender.reset()
    logp_b = continuation_logprobs(tiny, m.generations)
    manual = torch.cat([kl_per_token(v, b) for v, b in zip(logp_v, logp_b)]).mean()
    assert m.kl_to_base == pytest.approx(float(manual), rel=1e-4)


def test_retention_is_one_for_the_full_delta_and_zero_for_nothing(tiny, deltas_factory):
    deltas = deltas_factory(tiny, scale=0.5)
    blender = Blender(tiny)
    probe = retention_probe(tiny, blender, deltas, PROBES, SETTINGS)
    assert probe.ll_tuned > probe.ll_base
    assert probe.measure(tiny, blender, deltas) == pytest.approx(1.0, abs=1e-5)
    zero = {n: type(d)(torch.zeros_like(d.tensor)) for n, d in deltas.items()}
    assert probe.measure(tiny, blender, zero) == pytest.approx(0.0, abs=1e-5)


def test_evaluate_reports_progress_while_it_generates(tiny, deltas_factory):
    """A long evaluation is never silent: each generated batch moves the bar, and the
    bar never goes backwards."""
    reports = []
    probes = PROBES * 3
    evaluate(tiny, Blender(tiny), [(deltas_factory(tiny, scale=0.5), 1.0)], probes, SETTINGS, batch_size=2,
             progress=reports.append)
    generating = [r for r in reports if r.message.startswith("Generating")]
    assert any("base answers" in r.message for r in generating) and any("variant answers" in r.message for r in generating)
    assert len(generating) >= 2 * -(-len(probes) // 2)  # one report per batch of each
    done = [r.done for r in reports]
    assert done == sorted(done) and reports[-1].total == 3 * len(probes)
