"""First launch: when the library is empty, offer to train the built-in stances (the
research report's three) in one click, with the default settings."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

from stance_studio.core.errors import StanceStudioError
from stance_studio.qt.session import Session
from stance_studio.qt.training_job import builtin_datasets, default_policy, make_config, submit_training
from stance_studio.qt.workers import Job


def queue_builtin_training(session: Session, names: list[str] | None = None) -> list[Job]:
    """Queue one full fine-tuning run per built-in stance not yet in the library."""
    settings = session.settings
    config = make_config({"method": "full", "steps": settings.get("training/steps")})
    policy = settings.get("training/policy") or default_policy()
    jobs = []
    for name, path in builtin_datasets().items():
        if (names is None or name in names) and session.entry(name) is None:
            jobs.append(submit_training(session, path, name, config, policy))
    for job in jobs:
        job.finished.connect(session.refresh_library)
        job.failed.connect(lambda message, title=job.title: session.error.emit(f"{title} failed", message))
    return jobs


def offer_builtin_training(session: Session, parent: QWidget, ask_even_if_not_empty: bool = False) -> list[Job]:
    """Ask, then queue the built-in stances; returns the queued jobs (possibly none)."""
    if session.base is None:
        QMessageBox.information(parent, "Train the built-in stances", "Load a base model first.")
        return []
    try:
        builtins = builtin_datasets()
    except StanceStudioError as exc:
        QMessageBox.warning(parent, "Train the built-in stances", str(exc))
        return []
    missing = [n for n in builtins if session.entry(n) is None]
    if not missing:
        if ask_even_if_not_empty:
            QMessageBox.information(parent, "Train the built-in stances", "All built-in stances are already in the library.")
        return []
    if session.entries and not ask_even_if_not_empty:
        return []
    steps = session.settings.get("training/steps")
    listing = "\n".join(f"  • {n}" for n in missing)
    answer = QMessageBox.question(
        parent, "Train the built-in stances",
        f"Your stance library has no built-in stances yet. Train them now on {session.base.model_id}?\n\n{listing}\n\n"
        f"Each is full fine-tuning on its example set for {steps} steps, then extraction and a retention "
        "measurement on the probe prompts (a few minutes each on a laptop CPU for the bundled model). Training runs "
        "in the background; you can cancel it from the status bar.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes,
    )
    if answer != QMessageBox.StandardButton.Yes:
        return []
    return queue_builtin_training(session, missing)
