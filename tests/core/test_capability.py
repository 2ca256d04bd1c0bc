import math

import pytest
import torch

from stance_studio.core import capability as cap
from stance_studio.core.blend import Blender


def test_capability_text_is_long_and_its_licence_noted():
    text = cap.capability_text_path().read_text(encoding="utf-8")
    assert len(text.split()) >= 20000
    source = (cap.capability_text_path().parent / "SOURCE.md").read_text(encoding="utf-8")
    assert "public domain" in source.lower()


def test_chunks_follow_the_budget(tiny):
    chunks = cap.text_chunks(tiny.tokenizer, 300, chunk=128)
    assert [len(c) for c in chunks] == [128, 128, 44]


@torch.no_grad()
def test_perplexity_by_hand(tiny):
    chunks = cap.text_chunks(tiny.tokenizer, 40, chunk=20)
    nlls = cap.chunk_nlls(tiny, chunks)
    ids = torch.tensor([chunks[0]])
    logp = torch.log_softmax(tiny.model(input_ids=ids).logits[0].float(), -1)
    expected = -sum(float(logp[t - 1, chunks[0][t]]) for t in range(1, 20))
    assert nlls[0][1] == 19 and nlls[0][0] == pytest.approx(expected, rel=1e-4)
    result = cap.compare_nlls(nlls, nlls)
    assert result.change == pytest.approx(0.0) and result.perplexity == pytest.approx(
        math.exp(sum(x for x, _ in nlls) / sum(n for _, n in nlls)))


def test_capability_moves_both_ways(tiny):
    """The random tiny model is near-uniform on English: training on English text
    lowers the text's perplexity, and the negated delta raises it."""
    from stance_studio.core.datasets import load_dataset
    from stance_studio.core.training import TrainConfig, train

    blender = Blender(tiny)
    deltas = train(tiny, load_dataset("confident-expertise", tiny.tokenizer), TrainConfig(steps=4, lr=3e-3)).deltas
    base = cap.capability_cost(tiny, blender, [], tokens=512)
    better = cap.capability_cost(tiny, blender, [(deltas, 1.0)], tokens=512)
    worse = cap.capability_cost(tiny, blender, [(deltas, -1.0)], tokens=512)
    assert base.change == 0.0 and base.perplexity == base.perplexity_base
    assert better.change < 0 and better.change_ci95[1] < 0 and better.perplexity_base == base.perplexity_base
    assert worse.change > 0 and worse.change_ci95[0] > 0
    assert blender.is_base
