"""Training a stance from the GUI: build the core config from form values and submit
``pipeline.build_stance`` to the model worker (the blend is reset before training and
put back after it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from stance_studio.core.errors import PolicyError
from stance_studio.qt.session import Session
from stance_studio.qt.workers import Job


def make_config(values: dict[str, Any]):
    """A ``TrainConfig`` from form values; keys the config does not have are left out
    (so the form can offer fields a method ignores)."""
    from stance_studio.core.training import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in known and v is not None})


def default_policy() -> str:
    from stance_studio.core.extraction import DEFAULT_POLICY

    return DEFAULT_POLICY


def check_policy(text: str) -> Optional[str]:
    """None if ``text`` is a valid extraction policy, else the reason it is not."""
    from stance_studio.core import extraction

    try:
        extraction.parse_policy(text)
    except PolicyError as exc:
        return str(exc)
    return None


def check_name(name: str) -> Optional[str]:
    """None if ``name`` can name a stance in the library, else the reason it cannot."""
    from stance_studio.core.errors import LibraryError
    from stance_studio.core.library import validate_name

    try:
        validate_name(name)
    except LibraryError as exc:
        return str(exc)
    return None


def builtin_datasets() -> dict[str, Path]:
    from stance_studio.core import datasets

    return dict(datasets.builtin_stances())


def submit_training(session: Session, dataset_path: Path, name: str, config, policy: str) -> Job:
    """Queue one training run; its progress reports carry ``info['loss']`` per step."""
    from stance_studio.core import extraction, pipeline

    # The model, its blender and the library as they are now: a model loaded while
    # this run waits in the queue must not get half of it.
    library, base, blender = session.library, session.base, session.blend.blender
    parsed = extraction.parse_policy(policy) if policy else extraction.DEFAULT_POLICY

    def job(progress, cancel):
        return pipeline.build_stance(base, dataset_path, name, config, policy=parsed, library=library,
                                     blender=blender, progress=progress, cancel=cancel)

    return session.host.run_on_model(job, f"Training {name}")


def submit_steering(session: Session, dataset_path: Path, name: str, seed: int = 0) -> Job:
    """Queue building a steering stance with the default band and strength."""
    from stance_studio.core.steering_build import SteerConfig, build_steering_stance

    library, base, blender = session.library, session.base, session.blend.blender

    def job(progress, cancel):
        return build_steering_stance(base, dataset_path, name, SteerConfig(seed=seed), library=library,
                                     blender=blender, progress=progress, cancel=cancel)

    return session.host.run_on_model(job, f"Building steering vectors for {name}")
