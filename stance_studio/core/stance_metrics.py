"""The stance-agnostic metrics of one variant against one stance: stance rate (on its
probe answers) and stance fit (on the stance's held-out and training references).

:func:`measure_stance` is called by :func:`stance_studio.core.metrics.evaluate`
with the answers it already generated, so no text is generated twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from stance_studio.core.generation import GenerationSettings
from stance_studio.core.jobs import CancelFlag, ProgressCallback, no_progress
from stance_studio.core.loglik_cache import base_logliks
from stance_studio.core.stance_classifier import RELIABLE_ACCURACY, StanceRate, stance_classifier, stance_rate
from stance_studio.core.stance_fit import StanceFit, stance_fit
from stance_studio.core.stance_reference import StanceReference


@dataclass
class StanceMetrics:
    reference: StanceReference
    rate: StanceRate
    classifier_accuracy: Optional[float]
    fit: StanceFit
    fit_train: Optional[StanceFit] = None

    @property
    def rate_reliable(self) -> bool:
        return self.classifier_accuracy is not None and self.classifier_accuracy >= RELIABLE_ACCURACY

    def as_json(self) -> dict:
        return {
            "stance": self.reference.name,
            "stance_source": self.reference.source,
            "stance_rate": self.rate.rate,
            "stance_rate_ci95": self.rate.ci95,
            "stance_rate_reliable": self.rate_reliable,
            "classifier_accuracy": self.classifier_accuracy,
            "stance_fit_nats": self.fit.nats,
            "stance_fit_ci95": self.fit.ci95,
            "stance_fit_split": self.reference.fit_split,
            "stance_fit_examples": self.fit.examples,
            "stance_fit_train_nats": None if self.fit_train is None else self.fit_train.nats,
            "stance_fit_train_ci95": None if self.fit_train is None else self.fit_train.ci95,
        }


def measure_stance(base, blender, blend, answers: Sequence[str], reference: StanceReference,
                   settings: GenerationSettings, allow_mismatch: bool = False,
                   progress: ProgressCallback = no_progress, cancel: Optional[CancelFlag] = None) -> StanceMetrics:
    """Stance rate of ``answers`` (the variant's probe answers) and stance fit of
    ``blend`` on the reference's held-out (and, when recorded, training) examples."""
    classifier = stance_classifier(base, blender, reference, settings, progress=progress, cancel=cancel)
    rate = stance_rate(classifier, answers)
    # the base's half of stance fit is computed once per model and example (cached)
    fit = stance_fit(base, blender, blend, reference.held_out, allow_mismatch=allow_mismatch, cancel=cancel,
                     base_logliks=base_logliks(base, blender, reference.held_out, cancel=cancel))
    fit_train = None
    if reference.trained_on:
        fit_train = stance_fit(base, blender, blend, reference.trained_on, allow_mismatch=allow_mismatch,
                               cancel=cancel, base_logliks=base_logliks(base, blender, reference.trained_on,
                                                                        cancel=cancel))
    return StanceMetrics(reference, rate, classifier.accuracy, fit, fit_train)
