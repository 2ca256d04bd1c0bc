"""Stance rate: the share of a variant's answers that a per-stance classifier
assigns to the stance.

The classifier (scikit-learn: word 1–2-gram TF-IDF + logistic regression) learns the
stance's reference responses against the base model's own greedy answers to the same
prompts, so topic cancels out and only the voice is left to learn. References are cut
to the answers' token budget so that length tells nothing. Its accuracy is
cross-validated with folds grouped by prompt (an answer and its reference never sit on
both sides); below :data:`RELIABLE_ACCURACY` the rate is flagged unreliable.

The base answers need generation, so they are cached on disk (JSON, in the cache
folder), keyed by the model's tensors, the prompts and the decoding settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from stance_studio.core.generation import GenerationSettings, generate_many
from stance_studio.core.intervals import mean_ci
from stance_studio.core.jobs import CancelFlag, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.paths import cache_dir

RELIABLE_ACCURACY = 0.8
CV_FOLDS = 5
# words, contractions and punctuation marks (a question mark is part of a voice)
TOKEN_PATTERN = r"(?u)\b\w[\w']*\b|[?!;:]"


@dataclass
class StanceClassifier:
    """A fitted classifier and how well it tells the stance from base."""

    pipeline: object
    accuracy: Optional[float]  # cross-validated; None when too few examples to check
    examples: int

    @property
    def reliable(self) -> bool:
        return self.accuracy is not None and self.accuracy >= RELIABLE_ACCURACY

    def probability(self, texts: Sequence[str]) -> np.ndarray:
        """The probability that each text reads as the stance (0 to 1)."""
        if not texts:
            return np.zeros(0)
        if hasattr(self.pipeline, "predict_proba"):
            return np.asarray(self.pipeline.predict_proba(list(texts)))[:, 1]
        return self.predict(texts).astype(float)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """1 where a text reads as the stance, 0 where it reads as base."""
        if not texts:
            return np.zeros(0, dtype=int)
        return np.asarray(self.pipeline.predict(list(texts)), dtype=int)


def _pipeline(seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True, token_pattern=TOKEN_PATTERN),
        LogisticRegression(C=10.0, max_iter=5000, random_state=seed),
    )


def fit_classifier(stance_texts: Sequence[str], base_texts: Sequence[str], seed: int = 0) -> StanceClassifier:
    """Fit on paired texts (``stance_texts[i]`` and ``base_texts[i]`` answer the same
    prompt) and cross-validate with folds grouped by prompt."""
    from sklearn.model_selection import GroupKFold, cross_val_score

    if len(stance_texts) != len(base_texts) or not stance_texts:
        raise ValueError("stance and base texts must be paired and non-empty")
    texts = list(stance_texts) + list(base_texts)
    labels = np.array([1] * len(stance_texts) + [0] * len(base_texts))
    groups = np.array(list(range(len(stance_texts))) * 2)
    if not any(t.strip() for t in texts):
        return StanceClassifier(_Constant(0), None, len(stance_texts))
    accuracy = None
    folds = min(CV_FOLDS, len(stance_texts))
    if folds >= 2:
        try:
            scores = cross_val_score(_pipeline(seed), texts, labels, groups=groups, cv=GroupKFold(n_splits=folds))
            accuracy = float(np.mean(scores))
        except ValueError:  # a fold with no words at all
            accuracy = None
    try:
        pipeline = _pipeline(seed).fit(texts, labels)
    except ValueError:  # no words in any text: nothing to learn
        return StanceClassifier(_Constant(0), None, len(stance_texts))
    return StanceClassifier(pipeline, accuracy, len(stance_texts))


class _Constant:
    """Assigns every text to one class (for texts with no words to learn from)."""

    def __init__(self, label: int) -> None:
        self.label = label

    def predict(self, texts):
        return [self.label] * len(texts)


def truncate_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (as a variant's answer would be)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


def _cache_key(base, prompts: Sequence[str], settings: GenerationSettings) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(base.fingerprint(base.tensor_hashes.keys()).encode())
    h.update(json.dumps([list(prompts), settings.max_new_tokens, settings.system_prompt]).encode())
    return h.hexdigest()


def base_answers(base, blender, prompts: Sequence[str], settings: GenerationSettings,
                 progress: ProgressCallback = no_progress, cancel: Optional[CancelFlag] = None) -> list[str]:
    """The base model's greedy answers to ``prompts`` (from the cache when there)."""
    cancel = ensure_flag(cancel)
    path = cache_dir() / "base-answers" / f"{_cache_key(base, prompts, settings)}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cached, list) and len(cached) == len(prompts) and all(isinstance(t, str) for t in cached):
            return cached
    except (OSError, ValueError):
        pass
    with blender.runtime.scoped([]):
        texts = [g.text for g in generate_many(base, prompts, settings, progress=progress, cancel=cancel)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(texts), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a regeneration next time
    return texts


_FITTED: dict[tuple, StanceClassifier] = {}


def stance_classifier(base, blender, reference, settings: GenerationSettings,
                      progress: ProgressCallback = no_progress,
                      cancel: Optional[CancelFlag] = None) -> StanceClassifier:
    """The classifier of ``reference`` (a :class:`StanceReference`) on this base."""
    prompts = [ex.prompt for ex in reference.examples]
    key = (_cache_key(base, prompts, settings), reference.dataset_sha256)
    if key not in _FITTED:
        answers = base_answers(base, blender, prompts, settings, progress=progress, cancel=cancel)
        refs = [truncate_tokens(base.tokenizer, ex.response, settings.max_new_tokens) for ex in reference.examples]
        _FITTED[key] = fit_classifier(refs, answers)
    return _FITTED[key]


@dataclass
class StanceRate:
    rate: Optional[float]
    ci95: Optional[list[float]]
    labels: list[int]  # per answer: 1 = assigned to the stance


def stance_rate(classifier: StanceClassifier, texts: Sequence[str]) -> StanceRate:
    """Share of ``texts`` assigned to the stance, with a bootstrap interval."""
    labels = [int(x) for x in classifier.predict(texts)]
    if not labels:
        return StanceRate(None, None, [])
    return StanceRate(sum(labels) / len(labels), mean_ci(labels), labels)
