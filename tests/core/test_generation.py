import pytest
import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.errors import Cancelled
from stance_studio.core.generation import GenerationSettings, encode_prompt, generate, generate_many, side_by_side
from stance_studio.core.jobs import CancelFlag

SETTINGS = GenerationSettings(max_new_tokens=10)


def test_chat_template_is_applied(tiny):
    ids = encode_prompt(tiny.tokenizer, "why is the sky blue")
    text = tiny.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>user\nwhy is the sky blue<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_streaming_reports_growing_text_ending_in_the_result(tiny):
    seen = []
    gen = generate(tiny, "hello there", SETTINGS, on_text=seen.append)
    assert len(seen) == len(gen.new_ids)
    assert seen[-1] == gen.text
    assert all(len(a) <= len(b) for a, b in zip(seen, seen[1:])) or len(seen) > 1


def test_batched_greedy_matches_one_at_a_time(tiny):
    prompts = ["hello there", "what causes the seasons on earth", "why"]
    batch = generate_many(tiny, prompts, SETTINGS, batch_size=3)
    single = [generate(tiny, p, SETTINGS) for p in prompts]
    assert [g.new_ids for g in batch] == [g.new_ids for g in single]


def test_seeded_sampling_repeats_and_seeds_differ(tiny):
    s1 = GenerationSettings(max_new_tokens=12, greedy=False, seed=1, temperature=1.0)
    s2 = GenerationSettings(max_new_tokens=12, greedy=False, seed=2, temperature=1.0)
    assert generate(tiny, "hello", s1).new_ids == generate(tiny, "hello", s1).new_ids
    assert generate(tiny, "hello", s1).new_ids != generate(tiny, "hello", s2).new_ids


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-40])
def test_a_vanishing_temperature_samples_the_greedy_answer(tiny, temperature):
    """Any temperature above 0 is accepted, so a tiny one must not overflow the scaled
    logits into inf − inf: it gives its limit, the greedy answer."""
    tiny_t = GenerationSettings(max_new_tokens=8, greedy=False, seed=0, temperature=temperature, top_p=1.0)
    greedy = GenerationSettings(max_new_tokens=8)
    assert generate(tiny, "hello there", tiny_t).new_ids == generate(tiny, "hello there", greedy).new_ids


def test_cancel_stops_generation(tiny):
    flag = CancelFlag()
    seen = []

    def on_text(text):
        seen.append(text)
        flag.set()

    with pytest.raises(Cancelled):
        generate(tiny, "hello", GenerationSettings(max_new_tokens=50), on_text=on_text, cancel=flag)
    assert len(seen) <= 2


def test_side_by_side_columns_differ_and_blend_is_restored(tiny, deltas_factory):
    ckpt = make_checkpoint("s", deltas_factory(tiny, scale=0.5), tiny)
    blender = Blender(tiny)
    streamed = {}
    results = side_by_side(tiny, blender, [[], [(ckpt, 1.0)], []], "hello there", SETTINGS,
                           on_token=lambda i, t: streamed.__setitem__(i, t))
    assert results[0].new_ids == results[2].new_ids
    assert results[0].new_ids != results[1].new_ids
    assert streamed[1] == results[1].text
    assert blender.is_base
    # a blend in force before the run is put back afterwards
    blender.apply([(ckpt, 0.5)])
    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    side_by_side(tiny, blender, [[]], "hi", SETTINGS)
    assert all(torch.equal(p.detach(), before[n]) for n, p in tiny.model.named_parameters())


SAMPLING = GenerationSettings(max_new_tokens=12, greedy=False, seed=3, temperature=1.0, top_p=1.0)


def test_sampled_columns_depend_only_on_their_own_variant(tiny, deltas_factory):
    """With sampling, a stance whose delta is all zeros samples exactly the base
    text, and a column's text does not change when another column is removed."""
    shifted = make_checkpoint("s", deltas_factory(tiny, scale=0.5), tiny)
    zero = make_checkpoint("z", {n: type(d)(torch.zeros_like(d.tensor)) for n, d in shifted.deltas.items()}, tiny)
    other = make_checkpoint("o", deltas_factory(tiny, scale=0.5, seed=1), tiny)
    blender = Blender(tiny)
    full = side_by_side(tiny, blender, [[], [(zero, 1.0)], [(other, 1.0)], [(shifted, 1.0)]], "hello there", SAMPLING)
    assert full[1].new_ids == full[0].new_ids
    assert full[3].new_ids != full[0].new_ids  # a real shift is still seen
    fewer = side_by_side(tiny, blender, [[(shifted, 1.0)], [(zero, 1.0)]], "hello there", SAMPLING)
    assert fewer[0].new_ids == full[3].new_ids and fewer[1].new_ids == full[0].new_ids
    # the batched run samples what each column would sample on its own
    alone = generate(tiny, "hello there", SAMPLING)
    assert alone.new_ids == full[0].new_ids


def test_sampled_batches_match_one_prompt_at_a_time(tiny):
    prompts = ["hello there", "what causes the seasons on earth", "why"]
    batch = generate_many(tiny, prompts, SAMPLING, batch_size=3)
    single = [generate(tiny, p, SAMPLING) for p in prompts]
    assert [g.new_ids for g in batch] == [g.new_ids for g in single]


def test_a_probe_too_long_for_the_context_is_named(tiny):
    """Among many prompts, the one that does not fit is named by its first words."""
    from stance_studio.core.errors import TextError

    probes = ["why is the sky blue", "tell me about " + "bees and honey " * 200, "what is a bridge"]
    with pytest.raises(TextError, match=r"The prompt 'tell me about bees and honey bees and honey.*…' is \d+ tokens"):
        generate_many(tiny, probes, GenerationSettings(max_new_tokens=4))
