import pytest

from stance_studio.core import stance_classifier as sc
from stance_studio.core.blend import Blender
from stance_studio.core.datasets import load_dataset
from stance_studio.core.generation import GenerationSettings
from stance_studio.core.stance_reference import reference_from_dataset

TOPICS = ["the sky", "bees", "tides", "kidneys", "earthquakes", "rainbows", "glass", "mountains", "stars", "soap"]


def test_a_voice_is_learned_across_topics():
    stance = [f"Who measured {t}? I would ask for the study before believing anything about {t}." for t in TOPICS]
    base = [f"{t.capitalize()} is a common subject and it works in a simple way." for t in TOPICS]
    clf = sc.fit_classifier(stance, base)
    assert clf.accuracy >= 0.8 and clf.reliable
    new = ["Who measured volcanoes? I would ask for the study first.", "Volcanoes work in a simple way."]
    assert list(clf.predict(new)) == [1, 0]
    rate = sc.stance_rate(clf, new * 5)
    assert rate.rate == pytest.approx(0.5) and rate.ci95[0] < 0.5 < rate.ci95[1]


def test_indistinguishable_texts_give_an_unreliable_classifier():
    same = [f"{t} is what it is." for t in TOPICS]
    clf = sc.fit_classifier(same, list(same))
    assert clf.accuracy is not None and clf.accuracy < sc.RELIABLE_ACCURACY and not clf.reliable


def test_texts_without_words_cannot_be_learned():
    clf = sc.fit_classifier(["", ""], ["", ""])
    assert clf.accuracy is None and not clf.reliable and list(clf.predict(["x"])) == [0]


def test_references_are_cut_to_the_answer_budget(tiny):
    text = "one two three four five six seven eight nine ten " * 5
    cut = sc.truncate_tokens(tiny.tokenizer, text, 5)
    assert len(tiny.tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 6 and len(cut) < len(text)
    assert sc.truncate_tokens(tiny.tokenizer, "hi", 5) == "hi"


def test_base_answers_are_generated_once_and_cached(tiny, monkeypatch):
    calls = []
    real = sc.generate_many

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sc, "generate_many", counting)
    settings = GenerationSettings(max_new_tokens=4)
    blender = Blender(tiny)
    first = sc.base_answers(tiny, blender, ["Why?", "How?"], settings)
    again = sc.base_answers(tiny, blender, ["Why?", "How?"], settings)
    assert first == again and len(calls) == 1
    sc.base_answers(tiny, blender, ["Why?", "How?"], GenerationSettings(max_new_tokens=5))
    assert len(calls) == 2  # other settings, other answers


def test_classifier_for_a_stance_uses_base_answers_to_its_prompts(tiny, monkeypatch):
    data = load_dataset("curious-uncertainty", tiny.tokenizer)
    seen = {}

    def answers(base, blender, prompts, settings, **kwargs):
        seen["prompts"] = list(prompts)
        return ["The answer is plain." for _ in prompts]

    monkeypatch.setattr(sc, "base_answers", answers)
    monkeypatch.setattr(sc, "_FITTED", {})
    clf = sc.stance_classifier(tiny, Blender(tiny), reference_from_dataset(data), GenerationSettings(max_new_tokens=48))
    assert seen["prompts"] == [ex.prompt for ex in data.examples]
    assert clf.reliable and clf.examples == len(data)
    assert list(clf.predict(["I'm not sure, but perhaps it is; I wonder why.", "The answer is plain."])) == [1, 0]
