"""Teacher forcing on the positions that are scored only: the output head on a row's
tail and a shared prefix run once give what a whole forward pass of each row alone
gives, in every model family; a sliding window narrower than the rows is never
shared across the padding."""

import functools

import pytest
import torch

from stance_studio.core import batching
from stance_studio.core.batching import tail_logits
from stance_studio.core.datasets import IGNORE, Example, encode_example
from stance_studio.core.generation import GenerationSettings, generate_many
from stance_studio.core.metrics import continuation_logprobs
from stance_studio.core.stance_fit import response_logliks
from stance_studio.core.tiny import FAMILIES, tiny_base

SYSTEM = "You answer questions about the natural world in plain words."
EXAMPLES = [
    Example("why is the sky blue", "I think it has to do with light.", SYSTEM),
    Example("how do bees make honey", "From nectar, I believe, though I am not sure of every step of it.", SYSTEM),
    Example("what is a bridge", "A way across.", SYSTEM),
]


def alone(base, ids):
    with torch.no_grad():
        return base.model(input_ids=torch.tensor([ids])).logits[0].float()


def reference_logliks(base, examples):
    out = []
    for ex in examples:
        ids, labels = encode_example(base.tokenizer, ex)
        target = torch.tensor(labels[1:])
        nll = torch.nn.functional.cross_entropy(alone(base, ids)[:-1], target, ignore_index=IGNORE, reduction="none")
        out.append((-float(nll[target != IGNORE].sum()), int((target != IGNORE).sum())))
    return out


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize("share", [False, True])
def test_response_logliks_are_each_rows_own(arch, share, monkeypatch):
    base = tiny_base(arch=arch)
    calls = []
    monkeypatch.setattr(base.model, "forward", _counting(base.model.forward, calls))
    got = response_logliks(base, EXAMPLES, batch_size=2, share_prefix=share)
    passes = len(calls)
    want = reference_logliks(base, EXAMPLES)
    assert [n for _, n in got] == [n for _, n in want]
    for (g, _), (w, _) in zip(got, want):
        assert g == pytest.approx(w, abs=1e-3)
    # per batch (two here), sharing runs the system prompt once, then the rows; not where
    # a sliding window (gemma2's is 64 tokens) is narrower than the batch's rows
    lengths = sorted((len(encode_example(base.tokenizer, ex)[0]) for ex in EXAMPLES), reverse=True)
    window = getattr(base.model.config, "sliding_window", None) or 10**9
    shared = sum(1 for batch in (lengths[:2], lengths[2:]) if max(batch) <= window) if share else 0
    assert not share or arch != "gemma2" or shared == 1  # one batch each way
    assert passes == 2 + shared


@pytest.mark.parametrize("share", [False, True])
def test_continuation_logprobs_are_each_rows_own(tiny, share):
    prompts = ["why is the sky blue", "a", "how do bees make honey from the nectar of flowers"]
    gens = generate_many(tiny, prompts, GenerationSettings(max_new_tokens=7), batch_size=3)
    scored = continuation_logprobs(tiny, gens, share_prefix=share)
    for g, logp in zip(gens, scored):
        start = len(g.prompt_ids) - 1
        want = torch.log_softmax(alone(tiny, g.prompt_ids + g.new_ids)[start:start + len(g.new_ids)], -1)
        assert logp.shape == want.shape and torch.allclose(logp, want, atol=1e-4)


def test_the_head_runs_on_the_needed_positions_only(tiny):
    seqs = [[5, 6, 7, 8, 9, 10], [5, 6, 7]]
    logits = tail_logits(tiny.model, seqs, [2, 3], pad=0)
    assert logits.shape[:2] == (2, 3)
    for row, seq in enumerate(seqs):
        assert torch.allclose(logits[row, -2:], alone(tiny, seq)[-2:], atol=1e-4)
    with pytest.raises(ValueError):
        tail_logits(tiny.model, seqs, [2, 4], pad=0)  # a row cannot need more positions than it has


def test_a_prefix_shorter_than_the_threshold_runs_whole(tiny, monkeypatch):
    calls = []
    monkeypatch.setattr(tiny.model, "forward", _counting(tiny.model.forward, calls))
    seqs = [[5, 6, 7, 8], [5, 6, 9, 9, 9]]
    tail_logits(tiny.model, seqs, [1, 1], pad=0, share_prefix=True)
    assert batching._common_prefix(seqs) == 2 < batching.MIN_SHARED_PREFIX and len(calls) == 1


def _counting(forward, calls):
    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        calls.append(kwargs.get("input_ids").shape)
        return forward(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("arch", FAMILIES)
def test_generation_with_a_shared_prefix_gives_the_same_answers_and_scores(arch, monkeypatch):
    base = tiny_base(arch=arch)
    monkeypatch.setattr(batching, "MIN_SHARED_PREFIX", 2)  # the tiny template shares 4 tokens
    settings = GenerationSettings(max_new_tokens=6, system_prompt=SYSTEM)
    prompts = ["why is the sky blue", "a", "how do bees make honey from the nectar of flowers"]
    plain = generate_many(base, prompts, settings, batch_size=3, with_logprobs=True)
    calls = []
    monkeypatch.setattr(base.model, "forward", _counting(base.model.forward, calls))
    shared = generate_many(base, prompts, settings, batch_size=3, with_logprobs=True, share_prefix=True)
    window = getattr(base.model.config, "sliding_window", None) or 10**9
    if max(len(g.prompt_ids) for g in plain) + settings.max_new_tokens > window:  # gemma2: never across its window
        assert arch == "gemma2" and all(rows == 3 for rows, _ in calls)
    else:
        assert calls[0][0] == 1 and calls[1][0] == 3  # the system prompt alone, then the rows
        assert calls[1][1] < max(len(g.prompt_ids) for g in plain)  # the rows' first pass skips the prefix
    for a, b in zip(plain, shared):
        assert a.new_ids == b.new_ids and a.text == b.text and a.prompt_ids == b.prompt_ids
        if a.logprobs is not None:
            assert torch.allclose(a.logprobs, b.logprobs, atol=1e-4)
