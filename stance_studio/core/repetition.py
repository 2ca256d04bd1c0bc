"""Answers that loop: the same words over and over ("I can help. I can help. I can
help."), the way a model pushed too far by a stance breaks.

A stance classifier reads the voice of an answer, so a broken answer in the
stance's voice reads as the stance. The stance rate counts it; the **strict stance
rate** does not: it is the share of answers that are in the stance *and* do not
loop. An answer loops when fewer than :data:`MIN_DISTINCT` of its word trigrams are
distinct. Answers of fewer than :data:`MIN_TRIGRAMS` trigrams are never said to
loop (too short to tell).

The threshold was read off the bundled model's answers to 40 probes (base, two
fine-tuned stances, a steering stance at three weights): answers that plainly repeat
a sentence have 0.32–0.67 of their trigrams distinct, the other answers of base and
the fine-tuned stances 0.86–1.00. It is conservative: text broken without repeating
itself is not caught, and a stance's own refrain ("I'd ask for …" twice) is not a loop.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from stance_studio.core.intervals import mean_ci

MIN_DISTINCT = 0.7
MIN_TRIGRAMS = 6
_WORD = re.compile(r"[\w']+")


def distinct_trigrams(text: str) -> Optional[float]:
    """Share of the text's word trigrams (lower-cased) that are distinct; None when it
    has fewer than :data:`MIN_TRIGRAMS`."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if len(grams) < MIN_TRIGRAMS:
        return None
    return len(set(grams)) / len(grams)


def loops(text: str) -> bool:
    """Whether ``text`` repeats itself (see the module docstring)."""
    share = distinct_trigrams(text)
    return share is not None and share < MIN_DISTINCT


def looping_fields(texts: Sequence[str], stance_labels: Optional[Sequence[int]] = None) -> dict:
    """``looping_fraction`` of ``texts`` with its 95 % interval, and, given the stance
    classifier's labels (1 = in the stance, one per text), the strict stance rate with
    its interval (None without labels)."""
    looped = [int(loops(t)) for t in texts]
    out = {"looping_fraction": sum(looped) / len(looped) if looped else None,
           "looping_fraction_ci95": mean_ci(looped) if looped else None,
           "stance_rate_strict": None, "stance_rate_strict_ci95": None}
    if stance_labels is not None and looped:
        strict = [int(s and not lp) for s, lp in zip(stance_labels, looped)]
        out["stance_rate_strict"] = sum(strict) / len(strict)
        out["stance_rate_strict_ci95"] = mean_ci(strict)
    return out
