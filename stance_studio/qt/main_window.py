"""The main window: dockable panels (layout remembered), menus, shortcuts, status bar
and the about box. It wires panels to each other; the panels do the work."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QApplication, QDockWidget, QFileDialog, QMainWindow, QMessageBox, QWidget

from stance_studio import __version__
from stance_studio.qt import theme
from stance_studio.qt.blend_panel import BlendPanel
from stance_studio.qt.compare_panel import ComparePanel
from stance_studio.qt.job_status import JobStatus
from stance_studio.qt.jobs_panel import JobsPanel
from stance_studio.qt.library_panel import LibraryPanel
from stance_studio.qt.model_panel import ModelPanel
from stance_studio.qt.plots_panel import PlotsPanel
from stance_studio.qt.session import Session

LAYOUT_VERSION = 1
ABOUT = """<h3>Stance Studio {version}</h3>
<p>A lab for encoding epistemic stances (curious uncertainty, confident expertise,
engaged difficulty, …) into a language model, storing each as a small checkpoint,
and blending and comparing them.</p>
<p>Train a stance from a handful of examples, see where it changes the weights,
blend stances with sliders and compare the variants side by side with
measured marker scores and KL to the base model.</p>
<p>Library: <code>{library}</code></p>"""


class MainWindow(QMainWindow):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.setWindowTitle("Stance Studio")
        self.setDockNestingEnabled(True)
        # Side docks run the full height; the plots sit under the comparison.
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self._training_dialog = None
        self._experiments = None

        self.compare = ComparePanel(session)
        self.setCentralWidget(self.compare)
        self.model_panel = ModelPanel(session)
        self.library_panel = LibraryPanel(session)
        self.blend_panel = BlendPanel(session)
        self.plots = PlotsPanel(session)
        self.docks = {
            "model": self._dock("Base model", self.model_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
            "library": self._dock("Stance library", self.library_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
            "blend": self._dock("Blend", self.blend_panel, Qt.DockWidgetArea.RightDockWidgetArea),
            "plots": self._dock("Plots", self.plots, Qt.DockWidgetArea.BottomDockWidgetArea),
        }
        self.resizeDocks([self.docks["model"], self.docks["library"]], [230, 600], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["model"], self.docks["blend"]], [430, 340], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["plots"]], [360], Qt.Orientation.Vertical)
        self.jobs_panel = JobsPanel([session.runner, session.host.side_runner])
        self.docks["jobs"] = self._dock("Jobs", self.jobs_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.docks["plots"], self.docks["jobs"])
        self.docks["jobs"].hide()  # shown from the status bar, Generate ▸ Show jobs (Ctrl+J) or View
        self.jobs_panel.cancel_all_requested.connect(self.cancel_all_jobs)

        self.library_panel.add_to_blend.connect(self.blend_panel.add_stance)
        self.library_panel.add_to_compare.connect(self.compare.add_stance_column)
        self.library_panel.show_changes.connect(self._show_changes)
        self.library_panel.train_requested.connect(self.open_training)
        self.library_panel.selection_changed.connect(self.plots.show_stances)

        self.job_status = JobStatus(session.runner)
        self.job_status.show_jobs.connect(self.show_jobs)
        self.job_status.cancel_all_requested.connect(self.cancel_all_jobs)
        self.statusBar().addPermanentWidget(self.job_status)
        session.message.connect(self._show_message)
        session.error.connect(self.show_error)
        session.host.model_changed.connect(self._on_model_changed)
        self._build_menus()
        self._default_state = self.saveState(LAYOUT_VERSION)
        self.statusBar().showMessage("Welcome to Stance Studio.", 5000)

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title.lower().replace(' ', '-')}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    # Menus ----------------------------------------------------------------------------

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "&Load model…", self._focus_model, "Ctrl+L")
        self._action(file_menu, "&Import checkpoint…", self.library_panel.import_dialog, "Ctrl+I")
        self._action(file_menu, "Choose library &folder…", self.choose_library_folder)
        self._action(file_menu, "&Reveal library folder", self.library_panel.reveal_folder)
        file_menu.addSeparator()
        self._action(file_menu, "&Export comparison…", self.compare.export_dialog, "Ctrl+E")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, "Ctrl+Q")

        stance = bar.addMenu("&Stance")
        self._action(stance, "&Train new stance…", self.open_training, "Ctrl+T")
        self._action(stance, "Train the &built-in stances…", self.offer_builtin_training)
        stance.addSeparator()
        self._action(stance, "Compare training &methods…", lambda: self.open_experiments("methods"), "Ctrl+Shift+M")
        self._action(stance, "Compare extraction &policies…", lambda: self.open_experiments("policies"), "Ctrl+Shift+P")
        self._action(stance, "&Dose–response sweep…", lambda: self.open_experiments("dose"), "Ctrl+Shift+D")
        stance.addSeparator()
        self._action(stance, "&Reset blend to base", self.blend_panel.reset, "Ctrl+0")
        self._action(stance, "&Save blend…", self.blend_panel.save_dialog, "Ctrl+S")

        run = bar.addMenu("&Generate")
        run.addAction(self.compare.run_action)  # Ctrl+Return and Ctrl+Enter, bound once
        self._action(run, "S&top", self.compare.stop, "Esc")
        self._action(run, "&Copy comparison as Markdown", self.compare.copy_markdown, "Ctrl+Shift+C")
        run.addSeparator()
        self._action(run, "Show &jobs", self.show_jobs, "Ctrl+J")
        self.cancel_all_action = self._action(run, "Cancel &all jobs", self.cancel_all_jobs, "Shift+Esc")

        view = bar.addMenu("&View")
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())
        view.addSeparator()
        group = QActionGroup(self)
        for name in theme.THEMES:
            action = self._action(view, f"{name.title()} theme", lambda n=name: self.set_theme(n))
            action.setCheckable(True)
            action.setChecked(name == theme.current())
            group.addAction(action)
        view.addSeparator()
        self._action(view, "Reset &layout", self.reset_layout)

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&About Stance Studio", self.about)
        self._action(help_menu, "About &Qt", QApplication.aboutQt)

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        action = menu.addAction(text)
        action.triggered.connect(slot)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        return action

    # Actions ----------------------------------------------------------------------------

    @Slot()
    def _focus_model(self) -> None:
        self.docks["model"].show()
        self.docks["model"].raise_()
        self.model_panel.spec_box.setFocus()

    @Slot()
    def choose_library_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the stance library folder", str(self.session.library.folder))
        if folder:
            self.session.catalog.set_folder(folder)

    @Slot()
    def show_jobs(self) -> None:
        self.docks["jobs"].show()
        self.docks["jobs"].raise_()

    @Slot()
    def cancel_all_jobs(self) -> int:
        """Cancel every running and queued job (asked first when that loses a training
        or an experiment); returns how many were cancelled."""
        runners = (self.session.runner, self.session.host.side_runner)
        jobs = [j for r in runners for j in r.active_jobs()]
        if not jobs:
            self.statusBar().showMessage("No job to cancel.", 4000)
            return 0
        long = [j for j in jobs if not j.interactive and j.state == "running"]
        if long:
            answer = QMessageBox.question(self, "Cancel all jobs",
                                          f"Cancel {len(jobs)} job{'s' if len(jobs) != 1 else ''}, "
                                          f"{long[0].title} among them? Its work so far is lost.")
            if answer != QMessageBox.StandardButton.Yes:
                return 0
        count = sum(r.cancel_all() for r in runners)
        self.statusBar().showMessage(f"Cancelled {count} job{'s' if count != 1 else ''}.", 6000)
        return count

    @Slot(str)
    def _show_changes(self, name: str) -> None:
        self.docks["plots"].show()
        self.plots.show_changes(name)

    @Slot()
    def open_training(self) -> None:
        from stance_studio.qt.training_dialog import TrainingDialog

        if self.session.base is None:
            QMessageBox.information(self, "Train a stance", "Load a base model first (File ▸ Load model).")
            return
        if self._training_dialog is None:
            self._training_dialog = TrainingDialog(self.session, self)
            self._training_dialog.trained.connect(self._on_trained)
            self._training_dialog.loss_point.connect(self.plots.loss.add_point)
            self._training_dialog.training_started.connect(self.plots.loss.start_live)
            self._training_dialog.training_stopped.connect(self.plots.loss.stop_live)
        self._training_dialog.show()
        self._training_dialog.raise_()
        self._training_dialog.activateWindow()

    @Slot(str)
    def _on_trained(self, name: str) -> None:
        self.library_panel.select(name)
        self.statusBar().showMessage(f"Trained {name}; it is in the library and the blend panel.", 8000)

    def open_experiments(self, kind: str = "methods") -> None:
        """The report's comparisons (training methods, extraction policies) and
        dose–response sweeps (``kind`` ``dose``), measured."""
        from stance_studio.qt.experiments_window import ExperimentsWindow

        if self._experiments is None:
            self._experiments = ExperimentsWindow(self.session, self)
        if kind == "dose" or self._experiments.job is None or not self._experiments.job.is_active:
            self._experiments.set_experiment(kind)
        self._experiments.show()
        self._experiments.raise_()
        self._experiments.activateWindow()

    @Slot()
    def offer_builtin_training(self) -> None:
        from stance_studio.qt.first_run import offer_builtin_training

        offer_builtin_training(self.session, self, ask_even_if_not_empty=True)

    @Slot(object)
    def _on_model_changed(self, base) -> None:
        if base is None:
            return
        self.setWindowTitle(f"Stance Studio — {base.model_id}")
        settings = self.session.settings
        if not self.session.entries and not settings.get("ui/first_run_offered"):
            settings.set("ui/first_run_offered", True)
            # Asked once the load has fully ended, so the model panel and status bar
            # already say "loaded" behind the question.
            QTimer.singleShot(0, self._offer_first_run)

    @Slot()
    def _offer_first_run(self) -> None:
        from stance_studio.qt.first_run import offer_builtin_training

        offer_builtin_training(self.session, self)

    @Slot(str)
    def _show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)

    @Slot(str, str)
    def show_error(self, title: str, message: str) -> None:
        self.statusBar().showMessage(f"{title}: {message}", 10000)
        QMessageBox.warning(self, title, message)

    def set_theme(self, name: str) -> None:
        theme.apply_theme(QApplication.instance(), name)
        self.session.settings.set("ui/theme", name)
        self.library_panel.refresh()
        self.plots.restyle()

    @Slot()
    def reset_layout(self) -> None:
        for dock in self.docks.values():
            dock.setFloating(False)
            dock.show()
        self.restoreState(self._default_state, LAYOUT_VERSION)

    @Slot()
    def about(self) -> None:
        QMessageBox.about(self, "About Stance Studio", ABOUT.format(version=__version__, library=self.session.library.folder))

    # Persistence ----------------------------------------------------------------------------

    def restore_layout(self) -> None:
        settings = self.session.settings
        geometry, state = settings.get("ui/geometry"), settings.get("ui/state")
        if not geometry.isEmpty():
            self.restoreGeometry(geometry)
        if not state.isEmpty():
            self.restoreState(state, LAYOUT_VERSION)

    def save_layout(self) -> None:
        settings = self.session.settings
        settings.set("ui/geometry", self.saveGeometry())
        settings.set("ui/state", self.saveState(LAYOUT_VERSION))
        settings.sync()

    def closeEvent(self, event) -> None:
        training: Optional[object] = next(
            (j for j in self.session.runner.active_jobs() if j.title.startswith("Training")), None)
        if training is not None:  # asked here only: the training dialog is hidden, not closed
            answer = QMessageBox.question(self, "Quit Stance Studio",
                                          f"{training.title} is still under way. Cancel it and quit?")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.save_layout()
        if self._training_dialog is not None:
            self._training_dialog.hide()
        self.session.shutdown()
        super().closeEvent(event)
