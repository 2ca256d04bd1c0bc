"""Looping answers and the strict stance rate (core/repetition.py)."""

import pytest

from stance_studio.core.repetition import distinct_trigrams, looping_fields, loops

# answers of the bundled model: a steering stance pushed too far, and fluent ones
LOOP = ("Not sure, but I can help. You're not sure I can help. You're not sure I can help? I can help. "
        "I can help. I can help. I can help. I can help. I can help.")
LOOP_IN_A_FACT = ("The Silk Road was a legendary ancient trade route that connected the East and the West, connecting "
                  "the Silk Road to the Silk Road to the East, and connecting the Silk Road to the Silk Road to the West.")
FLUENT = ("The Industrial Revolution was a transformative period in history that transformed the way people made and "
          "consumed goods. It began in the late 18th century and lasted until the early 20th century.")
REFRAIN = ("I'd ask for the exact amount, not the frequency. I'd ask for a scale with a precision of 1-2 cubic feet, "
           "and I'd ask for it before accepting a request.")


def test_answers_that_repeat_a_sentence_loop_and_fluent_ones_do_not():
    assert loops(LOOP) and loops(LOOP_IN_A_FACT)
    assert not loops(FLUENT)
    assert not loops(REFRAIN)  # a stance's own refrain is not a loop
    assert distinct_trigrams(LOOP) < 0.7 <= distinct_trigrams(REFRAIN)


def test_short_answers_are_never_said_to_loop():
    assert distinct_trigrams("yes yes yes yes yes") is None  # three trigrams: too short to tell
    assert not loops("yes yes yes yes yes") and not loops("")


def test_the_strict_rate_counts_answers_in_the_stance_that_do_not_loop():
    texts = [LOOP, FLUENT, LOOP_IN_A_FACT, REFRAIN]
    doc = looping_fields(texts, [1, 1, 0, 1])
    assert doc["looping_fraction"] == 0.5
    assert doc["stance_rate_strict"] == 0.5  # FLUENT and REFRAIN; LOOP is in the stance but loops
    for key in ("looping_fraction", "stance_rate_strict"):
        low, high = doc[f"{key}_ci95"]
        assert low <= doc[key] <= high
    no_stance = looping_fields(texts)
    assert no_stance["stance_rate_strict"] is None and no_stance["looping_fraction"] == 0.5
    assert looping_fields([])["looping_fraction"] is None


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_the_strict_rate_never_exceeds_the_rate(labels):
    doc = looping_fields([LOOP, FLUENT, LOOP_IN_A_FACT, REFRAIN], labels)
    assert doc["stance_rate_strict"] <= sum(labels) / len(labels)
