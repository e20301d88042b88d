"""MainWindow: layout, menus and wiring; it computes nothing and trains nothing itself.

The ``TrainingController`` runs the one training job (a run, or a study of every loss x
seed) in a worker; the ``RunSession`` holds the run being shown (live, replayed or
followed on disk) and every panel subscribes to it. Work off the GUI thread goes
through ``gui.workers``; closing the window shuts every worker down there.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSettings, Slot
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from olsdesk import __version__
from olsdesk.core.data.sources import ArraySamples, dataset_key
from olsdesk.core.launch import ProcessRun
from olsdesk.core.report import (
    BatchProgress,
    EpochReport,
    RunStarted,
    write_matrix_csv,
    write_metrics_csv,
    write_run_report_md,
    write_validation_predictions_csv,
)
from olsdesk.core.runs import BEST, LATEST, default_runs_dir
from olsdesk.core.state import AppState, CheckpointRef
from olsdesk.core.study import Study
from olsdesk.core.trainer import Trainer
from olsdesk.errors import OlsdeskError
from olsdesk.gui.panels.common import RedrawWhenShown, plural
from olsdesk.gui.panels.compare import ComparePanel
from olsdesk.gui.panels.curves import CurvesPanel
from olsdesk.gui.panels.embedding import EmbeddingPanel
from olsdesk.gui.panels.evaluation import EvaluationPanel
from olsdesk.gui.panels.experiment import ExperimentPanel
from olsdesk.gui.panels.predict import PredictPanel
from olsdesk.gui.panels.reliability import ReliabilityPanel
from olsdesk.gui.panels.soft_labels import SoftLabelsPanel
from olsdesk.gui.resources import resource
from olsdesk.gui.session import RunSession
from olsdesk.gui.training import TrainingController
from olsdesk.gui.widgets import DialogFolders, EpochScrubber, TrainingStatus, WheelGuard
from olsdesk.gui.workers import (
    MainThreadGarbageCollector,
    Worker,
    shutdown_workers,
    start_worker,
)

log = logging.getLogger(__name__)

STATUS_TEXT = {"finished": "Training finished.",
               "stopped": "Training stopped; the last finished epoch's checkpoint is kept.",
               "failed": "Training failed."}


def warm_up() -> None:
    """Import now what training would otherwise import lazily, mid-run, on its thread.

    An import holds the GIL for tens of milliseconds at a time; done on the training
    thread it freezes the GUI thread that long (torch's optimisers pull in torch._dynamo,
    the epoch-end analysis scikit-learn and SciPy). The window calls this before showing.
    """
    import sklearn.decomposition  # noqa: F401 - t-SNE's PCA
    import sklearn.manifold  # noqa: F401 - t-SNE
    import sklearn.metrics  # noqa: F401 - t-SNE's pairwise distances
    import torch
    import torchvision.models  # noqa: F401

    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(layer.parameters())
    layer(torch.zeros(1, 2)).sum().backward()
    optimizer.step()


class MainWindow(QMainWindow):
    PANELS = ("curves", "soft_labels", "reliability", "embedding")  # the per-epoch plots
    TABS = (*PANELS, "predict", "evaluation", "compare")

    def __init__(self, settings: QSettings | None = None, runs_dir: str | Path | None = None):
        super().__init__()
        warm_up()
        self.settings = settings or QSettings("olsdesk", "olsdesk")
        self.runs_dir = Path(runs_dir or self.settings.value("runs_dir") or default_runs_dir())
        self.setWindowTitle("olsdesk")
        icon = resource("olsdesk.png")
        if icon.exists():
            self.setWindowIcon(QIcon(str(icon)))

        self.garbage = MainThreadGarbageCollector(parent=self)  # never in a worker thread
        self.garbage.start()
        self.wheel_guard = WheelGuard(self)  # boxes take the wheel only when focused
        QApplication.instance().installEventFilter(self.wheel_guard)
        self.state = AppState()  # what the window shows: the panels are views of it
        self.session = RunSession(self.state, parent=self)
        self.controller = TrainingController(self)
        self.experiment = ExperimentPanel(self.settings, self.state)
        self.curves = CurvesPanel()
        self.soft_labels = SoftLabelsPanel()
        self.reliability = ReliabilityPanel()
        self.embedding = EmbeddingPanel()
        self.predict = PredictPanel(self.state)
        self.evaluation = EvaluationPanel(self.state)
        self.compare = ComparePanel(self.runs_dir)
        self.scrubber = EpochScrubber(self.session)
        self.status = TrainingStatus()
        # every file dialog opens where that kind of file was last chosen, else in the runs
        # folder (checkpoints, exports) or the home folder (data, weights)
        self.folders = DialogFolders(self.settings, lambda: self.runs_dir)
        self._held_images: tempfile.TemporaryDirectory | None = None  # see _held_image_file
        self._exporting: Worker | None = None  # File → Export, writing in a worker
        for panel in (self.experiment, self.predict, self.evaluation):
            panel.folders = self.folders
        self.setStatusBar(self.status)
        self.message = self.status.message

        self.tabs = QTabWidget()
        for widget, title in ((self.curves, "Curves"), (self.soft_labels, "Soft labels"),
                              (self.reliability, "Reliability"), (self.embedding, "Embedding"),
                              (self.predict, "Predict"), (self.evaluation, "Evaluate"),
                              (self.compare, "Compare")):
            self.tabs.addTab(widget, title)
        self.tabs.currentChanged.connect(self._tab_changed)
        self.setAcceptDrops(True)  # files dropped anywhere go to the Predict panel
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.tabs, 1)
        right_layout.addWidget(self.scrubber)
        splitter = QSplitter()
        splitter.addWidget(self.experiment)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([380, 1000])
        self.setCentralWidget(splitter)
        self._wire()
        self._build_menus()
        self.resize(1320, 860)
        self._restore_view()
        self.garbage.freeze_startup()  # later collections skip what lives for the session

    def _restore_view(self) -> None:
        """The window as the user left it: its size and place, the tab shown and the run
        open (reopened without touching the settings column, which keeps its own)."""
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        tab = self.settings.value("window/tab")
        if tab in self.TABS:
            self.tabs.setCurrentWidget(getattr(self, tab))
        run = self.settings.value("window/run")
        if run and (Path(run) / "run.json").is_file():
            self.open_run(run, show_settings=False)

    def _save_view(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        current = next((name for name in self.TABS
                        if getattr(self, name) is self.tabs.currentWidget()), "")
        self.settings.setValue("window/tab", current)
        self.settings.setValue("window/run", str(self.session.path or ""))

    def _wire(self) -> None:
        session, controller = self.session, self.controller
        for panel in (self.curves, self.soft_labels, self.reliability, self.embedding):
            panel.follow(session)
        session.report_added.connect(self._use_run_checkpoint)
        session.report_added.connect(self._show_run_progress)
        session.loaded.connect(self._run_loaded)
        session.follow_failed.connect(lambda message: self.message.setText(message))
        session.following_changed.connect(self._following_changed)
        self.soft_labels.cell_clicked.connect(self._heatmap_cell_clicked)
        self.embedding.point_clicked.connect(self._embedding_point_clicked)
        self.reliability.bin_clicked.connect(self._reliability_bin_clicked)
        self.experiment.train_requested.connect(self.start_training)
        self.experiment.data_checked.connect(self._data_checked)
        self.experiment.pause_requested.connect(self.toggle_pause)
        self.experiment.stop_requested.connect(self.stop_training)
        self.compare.comparison_requested.connect(self.start_comparison)
        controller.run_started.connect(self._run_started)
        controller.batch_progressed.connect(self._batch_progressed)
        controller.epoch_finished.connect(session.add_report)
        controller.noted.connect(self.message.setText)
        controller.failed.connect(self._failed)
        controller.finished.connect(self._finished)
        controller.state_changed.connect(self.experiment.set_state)

    # --- menus ------------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        for text, slot, shortcut in (
            ("&Open run…", self.choose_run, QKeySequence.StandardKey.Open),
            ("&Export figures, tables and report…", self.choose_export, QKeySequence("Ctrl+E")),
            ("&Load checkpoint for prediction…", self._load_checkpoint, QKeySequence("Ctrl+L")),
            ("Runs &folder…", self.choose_runs_dir, None),
            ("&Quit", self.close, QKeySequence.StandardKey.Quit),
        ):
            action = QAction(text, self)
            if shortcut is not None:
                action.setShortcut(shortcut)
            action.triggered.connect(slot)
            file_menu.addAction(action)
        run_menu = self.menuBar().addMenu("&Run")
        for text, slot, shortcut in (
            ("&Train", self.start_training, "Ctrl+Return"),
            ("&Pause / Resume", self.toggle_pause, "Ctrl+P"),
            ("&Stop", self.stop_training, "Ctrl+."),
            ("P&revious epoch", lambda: self.session.select(self.session.position - 1),
             "Alt+Left"),
            ("&Next epoch", lambda: self.session.select(self.session.position + 1),
             "Alt+Right"),
        ):
            action = QAction(text, self)
            action.setShortcut(QKeySequence(shortcut))
            action.triggered.connect(slot)
            run_menu.addAction(action)
        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("&About olsdesk", self)
        about.triggered.connect(lambda: QMessageBox.about(
            self, "About olsdesk", f"olsdesk {__version__}\nOnline Label Smoothing workbench.\n"
            f"Runs are kept in {self.runs_dir}"))
        help_menu.addAction(about)

    # --- what the rest of the app (and its tests) reads -------------------------------
    @property
    def reports(self) -> list[EpochReport]:
        return self.session.reports

    @property
    def run_path(self) -> Path | None:
        return self.session.path

    @property
    def training(self) -> bool:
        return self.controller.running

    @property
    def last_status(self) -> str:
        return self.controller.last_status

    @property
    def last_error(self) -> str:
        return self.controller.last_error

    # --- training ---------------------------------------------------------------------
    def _settings_or_message(self):
        try:
            return self.experiment.config()
        except OlsdeskError as exc:
            self.experiment.show_error(str(exc))
            return None

    def _dataset_for(self, config):
        """The dataset the experiment panel already read, when it is the one ``config``
        describes (so training does not scan the folder again)."""
        from olsdesk.core.data.sources import dataset_key

        exp = self.experiment
        return exp.dataset if exp.dataset_key == dataset_key(config) else None

    @Slot()
    def start_training(self) -> None:
        if self.training:
            return
        config = self._settings_or_message()
        if config is None:
            return
        self.experiment.save()
        processes = self.experiment.processes
        if processes > 1:  # torchrun in a child process; the panels follow its run folder
            self._start(ProcessRun(config, processes, runs_dir=self.runs_dir))
            return
        self._start(Trainer(config, runs_dir=self.runs_dir, dataset=self._dataset_for(config)))

    @Slot(list, int)
    def start_comparison(self, losses: list[str], seeds: int) -> None:
        """Every loss x seed with the experiment panel's settings: the study engine."""
        if self.training:
            self.message.setText("Stop the training before starting a comparison.")
            return
        config = self._settings_or_message()
        if config is None:
            return
        try:
            study = Study(config, losses, seeds,
                          self.runs_dir / time.strftime("comparison-%Y%m%d-%H%M%S"),
                          dataset=self._dataset_for(config))
        except OlsdeskError as exc:
            self.experiment.show_error(str(exc))
            return
        self._start(study)

    def _start(self, job) -> None:
        self.experiment.show_error("")
        self.session.clear()
        self.status.reset()
        self.controller.start(job)
        self.message.setText("Reading the data and building the model…")

    @property
    def _study_prefix(self) -> str:
        study, started = self.controller.study, self.controller.started
        if study is None or started is None:
            return ""
        index = [p.name for p in study.run_paths].index(started.path.name)
        return f"[{index + 1}/{len(study.runs)}] "

    def _write_study_report(self, study: Study) -> str:
        """What `olsdesk compare` writes, into the study's folder (the figures are the
        panels' own, so drawn here, on the GUI thread); says where, in words."""
        from olsdesk.gui.figures import write_comparison_figures

        try:
            written = study.write_report(write_comparison_figures)
        except (OlsdeskError, OSError) as exc:
            return f"its report could not be written ({exc})."
        scored = "scored on the test split, " if study.test is not None else ""
        return (f"{scored}report.md and {len(written) - 1} more files in {study.out}.")

    @Slot()
    def toggle_pause(self) -> None:
        if not self.training:
            return
        self.controller.toggle_pause()
        self.message.setText("Paused; press Resume to go on, or Stop." if self.controller.paused
                             else "Training resumed.")

    @Slot()
    def stop_training(self) -> None:
        if self.training:
            self.controller.request_stop()
            self.message.setText("Stopping after this batch…")

    @Slot(object)
    def _run_started(self, started: RunStarted) -> None:
        self.session.begin(started)
        self.status.run_started(started)
        self.embedding.set_feature_source(self.session.run_store.embedding_features)
        self.message.setText(f"{self._study_prefix}training {started.info.dataset.train_images:,}"
                             f" images → {started.path}")
        self.setWindowTitle(f"olsdesk — {started.path.name}")

    @Slot(object)
    def _batch_progressed(self, p: BatchProgress) -> None:
        self.status.progressed(p, self._study_prefix, paused=self.controller.paused)

    @Slot(str)
    def _failed(self, message: str) -> None:
        self.experiment.show_error(message)
        self.message.setText("Training failed: " + message)
        # open(), not exec(): the box never blocks the event loop (or a test)
        self.error_box = QMessageBox(QMessageBox.Icon.Warning, "Training stopped", message,
                                     QMessageBox.StandardButton.Ok, self)
        self.error_box.open()

    @Slot(str)
    def _finished(self, status: str) -> None:
        self.status.ended(status == "finished")
        study = self.controller.study
        if study is not None:
            done = len(study.stores)
            if status == "finished":
                self.message.setText(f"Comparison of {len(study.runs)} runs finished; "
                                     f"{self._write_study_report(study)}")
                self.evaluation.show_comparison(study.test)
                self.tabs.setCurrentWidget(self.compare)
                self.compare.refresh(select=study.run_paths)
            elif not self.last_error:
                self.message.setText(f"Comparison {status} after {done} runs; the finished "
                                     "runs are kept.")
            return
        where = f" Run kept in {self.run_path}." if self.run_path else ""
        if status == "stopped" and not self.reports:  # no epoch finished: nothing was kept
            self.message.setText("Training stopped before its first epoch ended; no "
                                 "checkpoint was written." + where)
        elif status != "failed" or not self.last_error:
            self.message.setText(STATUS_TEXT[status] + where)

    # --- the run shown ----------------------------------------------------------------
    def _use_run_checkpoint(self, *_) -> None:
        """Use the run's best checkpoint (latest when none is best) for Predict, Evaluate
        and Grad-CAM; its epoch is part of it (best.pt keeps its name while training writes
        a better epoch into it, and the evaluation of the old one is then dropped)."""
        store = self.session.run_store
        if store is None:
            return
        best, reports = self.session.best, self.session.reports
        for which, label in ((BEST, "best"), (LATEST, "latest")):
            path = store.checkpoint_path(which)
            if path.exists():
                epoch = best.epoch if which == BEST and best is not None else (
                    reports[-1].epoch if reports else None)
                detail = (f", epoch {best.epoch}, validation top-1 {best.val_top1:.1%}"
                          if best is not None and which == BEST else "")
                note = f"{store.path.name}, {label} checkpoint{detail}"
                self.state.set_checkpoint(CheckpointRef(str(path), epoch, note))
                return

    def _tab_changed(self) -> None:
        if self.tabs.currentWidget() is self.compare:
            self.compare.refresh()

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if not paths:
            return
        event.acceptProposedAction()
        self.tabs.setCurrentWidget(self.predict)
        self.predict.predict_paths(paths)

    # --- runs: replay and export ------------------------------------------------------
    def choose_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a run", str(self.runs_dir))
        if path:
            self.open_run(path)

    def open_run(self, path: str | Path, show_settings: bool = True) -> bool:
        """Replay a finished run in every panel, or follow one still training; with
        ``show_settings`` the settings column shows the run's (Train repeats it)."""
        if self.training:
            self.message.setText("Stop the training before opening another run.")
            return False
        try:
            self.session.open(path)
        except OlsdeskError as exc:
            self.message.setText(f"Cannot open {path}: {exc}")
            return False
        self.embedding.set_feature_source(self.session.run_store.embedding_features)
        self.status.reset()  # no speed or ETA left from the run trained before
        try:
            if show_settings:
                self.experiment.show_config(self.session.run_store.config())
        except (OlsdeskError, OSError, ValueError):
            pass  # a run without a readable config.json still replays
        name = self.session.path.name
        self.setWindowTitle(f"olsdesk — {name}")
        self.message.setText(f"Reading {name}…")
        return True

    def _run_loaded(self, epochs: int) -> None:
        """A run opened from disk has been read: its checkpoint is the one in use now."""
        self._use_run_checkpoint()
        if self.session.path is not None:
            status = self.session.opened_status
            if not (self.session.following and status == "training"):
                self.message.setText(f"Replaying {self.session.path.name}: "
                                     f"{plural(epochs, 'epoch')} ({status}).")
            self._show_run_progress()  # and, while it trains, says so

    def _show_run_progress(self, *_) -> None:
        """A run opened from disk: the run bar says how many of its epochs are done (the
        epoch bar has no batches to count)."""
        if self.training or self.session.path is None or self.session.info is None:
            return
        epochs = self.reports[-1].epochs if self.reports else 0
        self.status.show_epochs(len(self.reports), epochs)
        if self.session.following and self.session.opened_status == "training":
            done = (f"epoch {self.reports[-1].epoch} of {epochs} done" if self.reports
                    else "no epoch done yet")
            self.message.setText(f"Following {self.session.path.name}, still training: "
                                 f"{done}.")

    def _following_changed(self, status: str) -> None:
        if not status and self.session.path is not None:
            self.message.setText(f"{self.session.path.name}: "
                                 f"{plural(len(self.reports), 'epoch')} "
                                 f"({self.session.run_store.status}).")

    def _evaluated(self, what: str):
        """The evaluation of the checkpoint on show (and the Evaluate tab shown, where
        its test images are browsed); else None, and the status says how to see ``what``."""
        ev = self.state.evaluation  # always of the checkpoint in use
        names = self.session.info.class_names if self.session.info else ()
        if ev is None or tuple(ev.class_names) != tuple(names):
            self.message.setText(
                f"To see {what}, evaluate the checkpoint in the Evaluate tab first (its test "
                "images are what a click here opens).")
            return None
        self.tabs.setCurrentWidget(self.evaluation)
        return ev

    def _heatmap_cell_clicked(self, true: int, column: int) -> None:
        """A heatmap cell picks its test images (true class, predicted as the column's
        class), shown in the Evaluate tab, once this model has been evaluated."""
        names = self.session.info.class_names
        if self._evaluated(f"the images behind {names[true]} → {names[column]}"):
            self.state.select_images(cell=(true, column))

    def _reliability_bin_clicked(self, b: int, bins: int) -> None:
        """A bin of the reliability diagram or the confidence histogram picks the test
        images whose top-class confidence falls in it, once this model is evaluated."""
        ev = self._evaluated(f"the images of confidence {b / bins:.2f}–{(b + 1) / bins:.2f}")
        if ev is not None:
            n = ev.n_bins  # the run's bins, unless the setting differs
            self.state.select_images(confidence_bin=min(int((b + 0.5) / bins * n), n - 1))

    def _embedding_point_clicked(self, index: int) -> None:
        """Validation image ``index`` of the shown run, predicted in Predict (with
        Grad-CAM): its file, or, for an image held in memory (the demo, MedMNIST), a PNG
        of it written for that."""
        info = self.session.info
        names = info.validation_names if info is not None else ()
        if not 0 <= index < len(names):
            return
        path = names[index] if Path(names[index]).is_file() else self._held_image_file(index)
        if path is not None:
            self.tabs.setCurrentWidget(self.predict)
            self.predict.predict_paths([path], select=True)

    def _held_image_file(self, index: int) -> str | None:
        """Validation image ``index`` of the data loaded now, as a PNG in this window's
        temporary folder; None, and a sentence, unless that data is the run's."""
        data, store = self.experiment.dataset, self.session.run_store
        val = data.val if data is not None else None
        name = self.session.info.validation_names[index]
        if not (isinstance(val, ArraySamples) and store is not None and index < len(val)
                and self.experiment.dataset_key == dataset_key(store.config())
                and val.describe(index) == name):
            self.message.setText(f"{name} is held in memory by the run's data, which is not "
                                 "the data loaded now: its class, prediction and confidence "
                                 "are in the point's hover text.")
            return None
        if self._held_images is None:
            self._held_images = tempfile.TemporaryDirectory(prefix="olsdesk-images-")
        path = Path(self._held_images.name) / (re.sub(r"[^\w.-]+", "_", name) + ".png")
        return str(val.write_png(index, path))

    def choose_export(self) -> None:
        if not self.reports:
            self.message.setText("Nothing to export yet: train or open a run first.")
            return
        if self._exporting is not None:
            self.message.setText("Still exporting; wait for it to finish.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Export to folder",
                                                  self.folders.start("export"))
        if folder:
            self.folders.remember("export", folder)
            self.start_export(folder)

    def start_export(self, folder: str | Path) -> Worker | None:
        """File → Export: the figures drawn here (Qt), the tables and the report written
        in a worker, so a big evaluation's predictions.csv never freezes the window."""
        try:
            staged, write = self._staged_export(folder)
        except OlsdeskError as exc:  # a folder that cannot be written
            self.message.setText(str(exc))
            return None
        except OSError as exc:
            self.message.setText(f"the figures could not be drawn ({exc}).")
            return None
        self.message.setText(f"Exporting to {folder}…")
        self._exporting = start_worker(
            staged.finish, write,
            returned=lambda written: self.message.setText(
                f"Exported {len(written)} files to {folder}."),
            errored=self.message.setText, finished=self._export_finished)
        return self._exporting

    def _export_finished(self) -> None:
        self._exporting = None

    def export(self, folder: str | Path) -> list[Path]:
        """For a paper: each panel's plots alone as SVG and PNG, the shown epoch's
        soft-label and mean-prediction matrices and validation predictions as CSV, every
        epoch's metrics as CSV, the Evaluate tab's test evaluation when there is one, and
        report.md tying them together; here and now (``start_export`` is the app's way).
        Written whole or not at all: OutputError says why not, and the folder is then as
        it was."""
        staged, write = self._staged_export(folder)
        return staged.finish(write)

    def _staged_export(self, folder: str | Path):
        """The export's figures drawn into a staging folder beside ``folder`` (Qt: on the
        GUI thread), and the rest as a function of that folder for a worker, given what
        it writes (the reports, the run's names) now: (StagedFolder, write)."""
        from olsdesk.core.evaluation import write_evaluation
        from olsdesk.core.outputs import StagedFolder
        from olsdesk.gui.figures import export_plot, write_evaluation_figures

        report = self.session.selected or self.reports[-1]
        reports = list(self.reports)
        names = report.class_names
        info, config = self.session.info, None
        store = self.session.run_store
        if store is not None:
            try:
                config = store.config()
            except (OSError, ValueError, OlsdeskError) as exc:
                log.warning("export: the run's config.json cannot be read (%s)", exc)
        evaluation = self.run_evaluation()
        run_name = self.session.path.name if self.session.path is not None else "run"
        staged = StagedFolder(folder)
        drawn, figures = [], []
        try:
            for name in self.PANELS:
                panel = getattr(self, name)
                panel.flush()  # a tab not shown since the last epoch draws it now
                drawn += export_plot(panel.graphics, staged.staging / name,
                                     hidden=getattr(panel, "hover_labels", ()))
                figures.append(f"{name}.png")
            if evaluation is not None:
                test = staged.staging / "test"
                test.mkdir()
                drawn += [test / n for n in write_evaluation_figures(evaluation, test)]
                figures += [f"test/{p.name}" for p in drawn if p.parent == test]
        except BaseException:
            staged.discard()
            raise

        def write(out: Path) -> list[Path]:
            tables = [write_metrics_csv(reports, out / "metrics.csv"),
                      write_matrix_csv(report.soft_labels, names, out / "soft_labels.csv"),
                      write_matrix_csv(report.mean_prediction, names,
                                       out / "mean_prediction.csv"),
                      write_validation_predictions_csv(
                          report, info.validation_names if info is not None else (), names,
                          out / "validation_predictions.csv")]
            if evaluation is not None:
                tables += write_evaluation(evaluation, out / "test")
            return drawn + tables + [write_run_report_md(
                out / "report.md", run_name, config, info, reports, report, figures,
                [str(p.relative_to(out)) for p in tables],
                evaluation.summary_lines() if evaluation is not None else ())]

        return staged, write

    def run_evaluation(self):
        """The test evaluation of the shown run's own checkpoint, or None: an export names
        the run, so it never carries the evaluation of a checkpoint loaded from elsewhere."""
        ref, run = self.state.checkpoint, self.state.run
        if self.state.evaluation is None or ref is None or run is None:
            return None
        return self.state.evaluation if Path(ref.path).parent.parent == run.path else None

    def render_panel(self, name: str):
        """A panel rendered to a QPixmap, whether its tab is showing or not."""
        widget = getattr(self, name)
        if isinstance(widget, RedrawWhenShown):
            widget.flush()  # not shown since the last epoch: draw it now
        if widget.size().width() < 100:
            widget.resize(self.tabs.currentWidget().size())
        return widget.grab()

    def _load_checkpoint(self) -> None:
        self.tabs.setCurrentWidget(self.predict)
        self.predict.choose_checkpoint()

    def choose_runs_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for runs", str(self.runs_dir))
        if path:
            self.runs_dir = Path(path)
            self.settings.setValue("runs_dir", path)
            self.compare.set_runs_dir(self.runs_dir)
            self.message.setText(f"New runs go to {path}.")

    # --- closing ----------------------------------------------------------------------
    def _data_checked(self, problem: str) -> None:
        """The status line says whether Train can start on the data chosen."""
        if self.training:
            return
        if problem:
            self.status.say(f"Train is unavailable until the data can be read: {problem}")
        elif self.session.path is None:  # a run's own message stays while it is shown
            source = self.experiment.data_source
            self.status.say("Ready: press Train to train on "
                            + ("the demo set." if source == "demo" else f"{Path(source).name}."))

    def _yes(self, title: str, text: str, default_yes: bool) -> bool:
        """A Yes/No question; True for Yes."""
        buttons = QMessageBox.StandardButton
        answer = QMessageBox.question(self, title, text, buttons.Yes | buttons.No,
                                      buttons.Yes if default_yes else buttons.No)
        return answer == buttons.Yes

    def ask_leave_running(self, job: ProcessRun) -> bool:
        """Whether a run training in other processes should go on after the app closes."""
        return self._yes(
            "Leave the run training?",
            f"{job.path.name} is training in {job.processes} processes. Leave it training "
            "after olsdesk closes? (Open it again with File → Open run… to follow it.) "
            "No stops it after the current batch, keeping the last checkpoint.", True)

    def confirm_stop_training(self) -> bool:
        """Whether to stop the training running in the app and close (Ctrl+Q, the close
        button): nothing stops without a word."""
        return self._yes(
            "Stop the training?",
            f"{self.run_path.name if self.run_path else 'A run'} is training. Stop it and "
            "close olsdesk? Its last checkpoint is kept: olsdesk train --resume with its "
            "folder continues it.", False)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        job = self.controller.job
        if (self.training and not isinstance(job, ProcessRun)
                and not self.confirm_stop_training()):
            event.ignore()
            return
        self._save_view()
        self.scrubber.stop_play()
        self.session.stop_following()
        if self.training and isinstance(job, ProcessRun) and self.ask_leave_running(job):
            job.detach()  # its processes train on; File → Open run… follows it again
        elif self.training:
            self.message.setText("Stopping the training; the last checkpoint is kept…")
        shutdown_workers()  # training stops within a batch, prediction at its next file
        self.garbage.stop()
        QApplication.instance().removeEventFilter(self.wheel_guard)
        self.experiment.save()
        if self._held_images is not None:
            self._held_images.cleanup()
        super().closeEvent(event)
