"""First launch: when the library is empty, offer the built-in stances (the research
report's three): added at once from the checkpoints shipped for the loaded model
(core/shipped.py) when it is the model they were made on, or trained in one click
with the default settings."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QMessageBox, QWidget

from stance_studio.core.errors import StanceStudioError
from stance_studio.qt.session import Session
from stance_studio.qt.training_job import builtin_datasets, default_policy, make_config, submit_training
from stance_studio.qt.workers import Job


class BuiltinTraining(QObject):
    """Follows the queued built-in runs: a failure becomes a session error, a finished
    run refreshes the library, and the running one feeds the live loss curve
    (``loss_view``: ``start_live`` / ``add_point`` / ``stop_live``) like the training
    dialog does. Deletes itself when the last run has ended."""

    def __init__(self, session: Session, loss_view=None) -> None:
        super().__init__(session)
        self.session = session
        self.loss_view = loss_view
        self.jobs: list[Job] = []
        self._names: dict[int, str] = {}

    def queue(self, names: list[str] | None = None) -> list[Job]:
        settings = self.session.settings
        config = make_config({"method": "full", "steps": settings.get("training/steps")})
        policy = settings.get("training/policy") or default_policy()
        for name, path in builtin_datasets().items():
            if (names is None or name in names) and self.session.entry(name) is None:
                job = submit_training(self.session, path, name, config, policy)
                self._names[job.id] = name
                job.report_to(self)
                self.jobs.append(job)
        if not self.jobs:
            self.deleteLater()
        return list(self.jobs)

    def _stop_live(self, text: str) -> None:
        if self.loss_view is not None:
            self.loss_view.stop_live(text)

    @Slot()
    def _on_started(self) -> None:
        if self.loss_view is not None:
            self.loss_view.start_live(self._names.get(self.sender().id, "stance"))

    @Slot(list)
    def _on_progress(self, reports: list) -> None:
        if self.loss_view is None:
            return
        for report in reports:
            if report.stage == "train" and "loss" in report.info:
                self.loss_view.add_point(report.done, report.info.get("loss"), bool(report.info.get("skipped")))

    @Slot(object)
    def _on_finished(self, ckpt) -> None:
        self.session.refresh_library()
        self._stop_live(f"Saved {self._names.get(self.sender().id, ckpt.name)}.")

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._stop_live("Training failed.")
        self.session.error.emit(f"{self.sender().title} failed", message)

    @Slot()
    def _on_cancelled(self) -> None:
        self._stop_live("Training cancelled.")

    @Slot()
    def _on_ended(self) -> None:
        if all(not job.is_active for job in self.jobs):
            self.deleteLater()


def queue_builtin_training(session: Session, names: list[str] | None = None, loss_view=None) -> list[Job]:
    """Queue one full fine-tuning run per built-in stance not yet in the library."""
    return BuiltinTraining(session, loss_view).queue(names)


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
    ready = _shipped_for(session, missing)
    if ready:
        listing = "\n".join(f"  • {s.name}" for s in ready)
        answer = QMessageBox.question(
            parent, "Add the built-in stances",
            f"Checkpoints of the built-in stances ship ready-made for {session.base.model_id}:\n\n{listing}\n\n"
            "Add them to your library now? It takes a second; each file is verified first.\n\n"
            f"Choose No to train them yourself instead ({steps} steps of full fine-tuning each, a few minutes "
            "each on a laptop CPU).",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Yes,
        )
        if answer == QMessageBox.StandardButton.Yes:
            install_shipped(session, [s.name for s in ready])
            return []
        if answer != QMessageBox.StandardButton.No:
            return []
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
    return queue_builtin_training(session, missing, loss_view=_loss_view(parent))


def _shipped_for(session: Session, names: list[str]) -> list:
    """The shipped stances among ``names`` made on the loaded model (none on any error:
    training stays on offer)."""
    from stance_studio.core import shipped

    try:
        return [s for s in shipped.installable(session.base, session.library) if s.name in names]
    except StanceStudioError:
        return []


def install_shipped(session: Session, names: list[str]) -> Job:
    """Verify and copy the shipped stances ``names`` into the library in the background;
    the library refreshes when they are in, a failure is a session error."""
    from stance_studio.core import shipped

    base, library = session.base, session.library
    job = session.host.run_on_model(
        lambda progress, cancel: shipped.install(base, library, names=names, progress=progress, cancel=cancel),
        "Adding the built-in stances")
    job.report_to(_InstallFollower(session, job))
    return job


class _InstallFollower(QObject):
    """Refreshes the library when the shipped stances are in; reports a failure."""

    def __init__(self, session: Session, job: Job) -> None:
        super().__init__(session)
        self.session = session

    @Slot(object)
    def _on_finished(self, _paths) -> None:
        self.session.refresh_library()

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.session.error.emit("Adding the built-in stances failed", message)

    @Slot()
    def _on_ended(self) -> None:
        self.deleteLater()


def _loss_view(window: QWidget) -> Optional[object]:
    """The main window's live loss curve, if ``window`` has one."""
    return getattr(getattr(window, "plots", None), "loss", None)
