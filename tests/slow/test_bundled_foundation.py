"""End-to-end on the bundled model: load, cache, apply a hand-made delta, reset."""

import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import truncate_rank
from stance_studio.core.generation import GenerationSettings, generate

pytestmark = pytest.mark.slow

PROMPT = "What causes the seasons on Earth?"
SETTINGS = GenerationSettings(max_new_tokens=24)


def test_bundled_model_identity(bundled):
    assert bundled.model_id == "SmolLM2-135M-Instruct"
    assert bundled.num_layers == 30
    assert bundled.architecture == "LlamaForCausalLM"
    assert bundled.tokenizer.chat_template


def test_second_load_comes_from_the_cache_with_same_weights(bundled, bundled_cache, monkeypatch):
    from stance_studio.core.models import load_base

    monkeypatch.setenv("STANCE_STUDIO_CACHE", str(bundled_cache))
    again = load_base(None)
    assert again.from_cache
    names = list(bundled.tensor_hashes)
    assert again.fingerprint(names) == bundled.fingerprint(names)


def test_hand_made_delta_changes_output_and_reset_restores_it(bundled):
    before = generate(bundled, PROMPT, SETTINGS)
    snapshot = {n: p.detach().clone() for n, p in bundled.model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    deltas = {}
    for layer in (0, 1, 2):
        name = f"model.layers.{layer}.mlp.down_proj.weight"
        w = bundled.parameters[name]
        deltas[name] = truncate_rank(torch.randn(w.shape, generator=gen) * float(w.std()) * 2.0, 4)
    ckpt = make_checkpoint("hand-made", deltas, bundled)
    blender = Blender(bundled)
    blender.apply([(ckpt, 1.0)])
    during = generate(bundled, PROMPT, SETTINGS)
    blender.reset()
    after = generate(bundled, PROMPT, SETTINGS)
    assert during.new_ids != before.new_ids
    assert after.new_ids == before.new_ids
    for name, p in bundled.model.named_parameters():
        assert torch.equal(p.detach(), snapshot[name]), name
