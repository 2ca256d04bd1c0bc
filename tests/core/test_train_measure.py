"""Measuring a training run computes each thing once and gives what the separate
measurements give: generation scores are teacher-forcing's, the trained copy is the
base with the tuned delta, and the base's stance-fit half comes from a cache."""

import json

import pytest
import torch

from stance_studio.core import loglik_cache
from stance_studio.core.blend import Blender
from stance_studio.core.datasets import load_dataset
from stance_studio.core.generation import GenerationSettings, generate_many
from stance_studio.core.metrics import continuation_logprobs, retention_probe
from stance_studio.core.stance_fit import response_logliks
from stance_studio.core.training import TrainConfig, train

PROBES = ["why is the sky blue", "how do bees make honey", "what is a bridge"]


def flat(pairs):
    return [float(v) for pair in pairs for v in pair]


def test_generation_scores_are_teacher_forcings(tiny):
    gens = generate_many(tiny, PROBES, GenerationSettings(max_new_tokens=6), batch_size=3, with_logprobs=True)
    forced = continuation_logprobs(tiny, [g for g in gens if g.new_ids])
    scored = [g for g in gens if g.new_ids]
    assert scored and all(g.logprobs is not None for g in scored)
    for g, f in zip(scored, forced):
        assert g.logprobs.shape == f.shape == (len(g.new_ids), f.shape[1])
        assert torch.allclose(g.logprobs, f, atol=1e-4)
    plain = generate_many(tiny, PROBES, GenerationSettings(max_new_tokens=6), batch_size=3)
    assert [g.new_ids for g in plain] == [g.new_ids for g in gens] and all(g.logprobs is None for g in plain)


def test_the_trained_copy_measures_as_the_runtime_delta(tiny):
    data = load_dataset("curious-uncertainty", tiny.tokenizer)
    result = train(tiny, data, TrainConfig(steps=3, lr=3e-3, holdout=0), keep_model=True)
    assert result.model is not None and not any(p.requires_grad for p in result.model.parameters())
    blender = Blender(tiny)
    before = {n: p.clone() for n, p in tiny.model.named_parameters()}
    with_copy = retention_probe(tiny, blender, result.deltas, PROBES, tuned_model=result.model)
    at_runtime = retention_probe(tiny, blender, result.deltas, PROBES)
    assert [g.new_ids for g in with_copy.generations] == [g.new_ids for g in at_runtime.generations]
    assert with_copy.ll_tuned == pytest.approx(at_runtime.ll_tuned, abs=1e-4)
    assert with_copy.ll_base == pytest.approx(at_runtime.ll_base, abs=1e-5)
    assert with_copy.kl_tuned_to_base == pytest.approx(at_runtime.kl_tuned_to_base, abs=1e-4)
    assert with_copy.ll_tuned > with_copy.ll_base
    assert all(g.logprobs is None for g in with_copy.generations)  # not kept past the measurement
    assert all(torch.equal(p, before[n]) for n, p in tiny.model.named_parameters())
    assert train(tiny, data, TrainConfig(steps=1, holdout=0)).model is None  # only when asked


def test_the_kept_checkpoint_written_into_the_copy_measures_as_at_runtime(tiny):
    from stance_studio.core.extraction import extract
    from stance_studio.core.holdout import split_dataset
    from stance_studio.core.train_measure import measure_training

    data = load_dataset("curious-uncertainty", tiny.tokenizer)
    split = split_dataset(data, 0.25, 0)
    config = TrainConfig(steps=3, lr=3e-3)
    blender = Blender(tiny)
    before = {n: p.clone() for n, p in tiny.model.named_parameters()}
    runs = []
    for keep_model in (True, False):
        result = train(tiny, split.train, config, keep_model=keep_model)
        kept, _ = extract(result.deltas, tiny, "rank:2")  # lossy: retention is neither 0 nor 1
        runs.append(measure_training(tiny, blender, result.deltas, kept, PROBES, split.held_out,
                                     split.train.examples, tuned_model=result.model))
    with_copy, at_runtime = runs
    assert 0.05 < at_runtime.retention < 0.999
    assert with_copy.retention == pytest.approx(at_runtime.retention, abs=2e-3)
    assert with_copy.fit.nats == pytest.approx(at_runtime.fit.nats, abs=1e-4)
    assert with_copy.fit_train.nats == pytest.approx(at_runtime.fit_train.nats, abs=1e-4)
    assert all(torch.equal(p, before[n]) for n, p in tiny.model.named_parameters())


def test_base_logliks_are_computed_once_per_model_and_example(tiny, monkeypatch):
    data = load_dataset("curious-uncertainty", tiny.tokenizer)
    blender = Blender(tiny)
    examples = data.examples[:5]
    calls = []
    real = response_logliks

    def counting(base, items, **kwargs):
        calls.append(len(items))
        return real(base, items, **kwargs)

    monkeypatch.setattr(loglik_cache, "response_logliks", counting)
    loglik_cache.clear_memory()
    first = loglik_cache.base_logliks(tiny, blender, examples[:3])
    assert flat(first) == pytest.approx(flat(real(tiny, examples[:3])), rel=1e-5)
    assert loglik_cache.base_logliks(tiny, blender, examples) [:3] == first
    assert calls == [3, 2]  # only the two new examples were computed
    loglik_cache.clear_memory()  # a new process: the disk cache answers
    assert loglik_cache.base_logliks(tiny, blender, examples) == loglik_cache.base_logliks(tiny, blender, examples)
    assert calls == [3, 2]
    files = list((loglik_cache.cache_dir() / "base-logliks").glob("*.json"))
    assert len(files) == 1 and len(json.loads(files[0].read_text())) == 5


def test_base_logliks_key_on_the_model_and_the_tokens(tiny):
    from stance_studio.core.datasets import Example
    from stance_studio.core.tiny import tiny_base

    other = tiny_base(seed=1)
    a, b = Example("why?", "Perhaps."), Example("why?", "Perhaps!")
    assert loglik_cache.model_key(tiny) != loglik_cache.model_key(other)
    assert loglik_cache.example_key(tiny.tokenizer, a) != loglik_cache.example_key(tiny.tokenizer, b)
    mine = loglik_cache.base_logliks(tiny, Blender(tiny), [a])
    theirs = loglik_cache.base_logliks(other, Blender(other), [a])
    assert flat(mine) == pytest.approx(flat(response_logliks(tiny, [a])), rel=1e-5)
    assert flat(theirs) == pytest.approx(flat(response_logliks(other, [a])), rel=1e-5)
    assert mine != theirs


def test_a_corrupt_cache_file_is_recomputed(tiny):
    blender = Blender(tiny)
    data = load_dataset("curious-uncertainty", tiny.tokenizer)
    folder = loglik_cache.cache_dir() / "base-logliks"
    folder.mkdir(parents=True, exist_ok=True)
    key = loglik_cache.example_key(tiny.tokenizer, data.examples[0])
    (folder / f"{loglik_cache.model_key(tiny)}.json").write_text(json.dumps({key: ["x", 3]}))
    loglik_cache.clear_memory()
    assert flat(loglik_cache.base_logliks(tiny, blender, data.examples[:1])) == pytest.approx(
        flat(response_logliks(tiny, data.examples[:1])), rel=1e-5)


def test_one_trained_copy_measures_policy_after_policy_as_at_runtime(tiny):
    """compare-policies rewrites the same copy for each candidate: every retention is
    the runtime one, whatever candidate came before."""
    from stance_studio.core.experiments import measure_policies

    data = load_dataset("curious-uncertainty", tiny.tokenizer)
    result = train(tiny, data, TrainConfig(steps=3, lr=3e-3, holdout=0), keep_model=True)
    blender = Blender(tiny)
    before = {n: p.clone() for n, p in tiny.model.named_parameters()}
    policies = ["rank:2", "all", "top:3", "rank:1"]
    with_copy = measure_policies(tiny, result.deltas, policies, PROBES, blender=blender, tuned_model=result.model)
    at_runtime = measure_policies(tiny, result.deltas, policies, PROBES, blender=blender)
    pairs = [(a["retention"], b["retention"]) for a, b in zip(with_copy["rows"], at_runtime["rows"])]
    assert all(a == pytest.approx(b, abs=2e-3) for a, b in pairs), pairs
    assert pairs[1][0] == pytest.approx(1.0, abs=2e-3)  # "all" keeps the whole delta
    assert 0.05 < pairs[0][1] < 0.999  # lossy candidates measured, not trivially 0 or 1
    assert all(torch.equal(p, before[n]) for n, p in tiny.model.named_parameters())
