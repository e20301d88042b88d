"""MainWindow: the experiment panel, the live panels, one epoch slider, the status bar.

The window computes nothing: it starts a TrainingWorker in a QThread and hands every
EpochReport to the panels, or replays a run's reports from disk.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QThread, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from olsdesk import __version__
from olsdesk.config import ConfigError
from olsdesk.core.report import BatchProgress, EpochReport
from olsdesk.core.runs import RunError, RunStore, default_runs_dir
from olsdesk.core.trainer import Trainer, warm_up
from olsdesk.gui.panels.compare import ComparePanel
from olsdesk.gui.panels.curves import CurvesPanel
from olsdesk.gui.panels.embedding import EmbeddingPanel
from olsdesk.gui.panels.experiment import ExperimentPanel
from olsdesk.gui.panels.predict import PredictPanel
from olsdesk.gui.panels.reliability import ReliabilityPanel
from olsdesk.gui.panels.soft_labels import SoftLabelsPanel
from olsdesk.gui.training_worker import TrainingWorker

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def _eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60}:{seconds % 60:02d}"


class MainWindow(QMainWindow):
    PANELS = ("curves", "soft_labels", "reliability", "embedding")

    def __init__(self, settings: QSettings | None = None, runs_dir: str | Path | None = None):
        super().__init__()
        warm_up()  # imports that would otherwise stall the GUI mid-training
        self.settings = settings or QSettings("olsdesk", "olsdesk")
        saved_runs = self.settings.value("runs_dir")
        self.runs_dir = Path(runs_dir or saved_runs or default_runs_dir())
        self.setWindowTitle("olsdesk")
        icon = RESOURCES / "olsdesk.png"
        if icon.exists():
            self.setWindowIcon(QIcon(str(icon)))
        self.reports: list[EpochReport] = []
        self.thread: QThread | None = None
        self.worker: TrainingWorker | None = None
        self.run_path: Path | None = None
        self.replay_store: RunStore | None = None
        self.last_status = ""
        self.last_error = ""

        self.experiment = ExperimentPanel(self.settings)
        self.experiment.train_requested.connect(self.start_training)
        self.experiment.pause_requested.connect(self.toggle_pause)
        self.experiment.stop_requested.connect(self.stop_training)
        self.curves = CurvesPanel()
        self.soft_labels = SoftLabelsPanel()
        self.reliability = ReliabilityPanel()
        self.embedding = EmbeddingPanel()
        self.predict = PredictPanel()
        self.compare = ComparePanel(self.runs_dir)
        self.compare.comparison_requested.connect(self.start_comparison)
        self.queue: list[tuple] = []  # (config, runs folder, run name) still to train
        self.queue_total = 0
        self.queue_paths: list[Path] = []
        self.tabs = QTabWidget()
        self.tabs.addTab(self.curves, "Curves")
        self.tabs.addTab(self.soft_labels, "Soft labels")
        self.tabs.addTab(self.reliability, "Reliability")
        self.tabs.addTab(self.embedding, "Embedding")
        self.tabs.addTab(self.predict, "Predict")
        self.tabs.addTab(self.compare, "Compare")
        self.tabs.currentChanged.connect(self._tab_changed)
        self.setAcceptDrops(True)  # files dropped anywhere go to the Predict panel

        # one epoch slider drives soft labels, reliability and embedding
        self.epoch_slider = QSlider(Qt.Orientation.Horizontal)
        self.epoch_slider.setRange(1, 1)
        self.epoch_slider.setEnabled(False)
        self.epoch_slider.valueChanged.connect(self._epoch_chosen)
        self.play_button = QPushButton("▶ Play")
        self.play_button.setToolTip("Watch the epochs from the first one")
        self.play_button.setEnabled(False)
        self.play_button.clicked.connect(self.toggle_play)
        self.epoch_label = QLabel("no epochs yet")
        self.epoch_label.setMinimumWidth(130)
        self.play_timer = QTimer(self)
        self.play_timer.setInterval(700)
        self.play_timer.timeout.connect(self._play_step)
        scrub = QHBoxLayout()
        scrub.addWidget(QLabel("Epoch"))
        scrub.addWidget(self.epoch_slider, 1)
        scrub.addWidget(self.epoch_label)
        scrub.addWidget(self.play_button)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.tabs, 1)
        right_layout.addLayout(scrub)

        splitter = QSplitter()
        splitter.addWidget(self.experiment)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([380, 1000])
        self.setCentralWidget(splitter)

        # status bar: message, epoch and run progress, ETA, speed, device
        self.message = QLabel("Ready: press Train to train on the demo set.")
        self.epoch_progress = QProgressBar()
        self.epoch_progress.setFormat("epoch %p%")
        self.run_progress = QProgressBar()
        self.run_progress.setFormat("run %p%")
        for bar in (self.epoch_progress, self.run_progress):
            bar.setMaximumWidth(140)
            bar.setRange(0, 1000)
            bar.setValue(0)
        self.eta_label = QLabel("")
        self.speed_label = QLabel("")
        self.device_label = QLabel("")
        bar = self.statusBar()
        bar.addWidget(self.message, 1)
        for widget in (self.epoch_progress, self.run_progress, self.eta_label, self.speed_label,
                       self.device_label):
            bar.addPermanentWidget(widget)

        self.replay_timer = QTimer(self)
        self.replay_timer.setInterval(2000)
        self.replay_timer.timeout.connect(self._poll_replay)
        self._build_menus()
        self.resize(1320, 860)

    # --- menus ------------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        for text, slot, shortcut in (
            ("&Open run…", self.choose_run, QKeySequence.StandardKey.Open),
            ("&Export panels and metrics…", self.choose_export, QKeySequence("Ctrl+E")),
            ("&Load checkpoint for prediction…", self._load_checkpoint, QKeySequence("Ctrl+L")),
            ("Runs &folder…", self.choose_runs_dir, None),
            ("&Quit", self.close, QKeySequence.StandardKey.Quit),
        ):
            action = QAction(text, self)
            if shortcut is not None:
                action.setShortcut(shortcut)
            action.triggered.connect(slot)
            file_menu.addAction(action)
        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("&About olsdesk", self)
        about.triggered.connect(lambda: QMessageBox.about(
            self, "About olsdesk", f"olsdesk {__version__}\nOnline Label Smoothing workbench.\n"
            f"Runs are kept in {self.runs_dir}"))
        help_menu.addAction(about)

    # --- training ---------------------------------------------------------------------
    @property
    def training(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    @Slot()
    def start_training(self) -> None:
        if self.training:
            return
        try:
            config = self.experiment.config()
        except ConfigError as exc:
            self.experiment.show_error(str(exc))
            return
        self.experiment.save()
        self.queue, self.queue_total = [], 0
        self._start(config, self.runs_dir, None)

    @Slot(list, int)
    def start_comparison(self, losses: list[str], seeds: int) -> None:
        """Queue every loss x seed with the experiment panel's settings, one after another."""
        from olsdesk.core import compare

        if self.training:
            self.message.setText("Stop the training before starting a comparison.")
            return
        try:
            runs = compare.plan(self.experiment.config(), losses, seeds)
        except ConfigError as exc:
            self.experiment.show_error(str(exc))
            return
        folder = self.runs_dir / time.strftime("comparison-%Y%m%d-%H%M%S")
        self.queue = [(config, folder, name) for name, config in runs]
        self.queue_total = len(self.queue)
        self.queue_paths = [folder / name for name, _ in runs]
        self._start_next_in_queue()

    def _start_next_in_queue(self) -> None:
        config, folder, name = self.queue.pop(0)
        done = self.queue_total - len(self.queue)
        self._start(config, folder, name)
        self.message.setText(f"Comparison run {done}/{self.queue_total}: {name}")

    def _start(self, config, runs_dir, run_name) -> None:
        self.experiment.show_error("")
        self.last_error = ""
        self._stop_replay()
        dataset = self.experiment.dataset if self.experiment.dataset_key else None
        try:
            trainer = Trainer(config, runs_dir=runs_dir, dataset=dataset, run_name=run_name)
        except ConfigError as exc:
            self.experiment.show_error(str(exc))
            return
        self._clear_panels()
        self.thread = QThread()
        self.worker = TrainingWorker(trainer)
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        self.worker.run_started.connect(self._run_started)
        self.worker.batch_progressed.connect(self._batch_progressed)
        self.worker.epoch_finished.connect(self._epoch_finished)
        self.worker.failed.connect(self._failed)
        self.worker.finished.connect(self._finished)
        # quit() is thread-safe; a direct call lets _finished() join the thread at once
        self.worker.finished.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        self.started_at = time.monotonic()
        self.experiment.set_state("training")
        self.message.setText("Reading the data and building the model…")
        self.thread.start()

    def _tab_changed(self) -> None:
        if self.tabs.currentWidget() is self.compare:
            self.compare.refresh()

    @Slot()
    def toggle_pause(self) -> None:
        if not self.training:
            return
        if self.worker.trainer.paused:
            self.worker.resume()
            self.experiment.set_state("training")
            self.message.setText("Training resumed.")
        else:
            self.worker.pause()
            self.experiment.set_state("paused")
            self.message.setText("Paused; press Resume to go on, or Stop.")

    @Slot()
    def stop_training(self) -> None:
        if self.training:
            self.worker.request_stop()
            self.message.setText("Stopping after this batch…")

    def wait_for_worker(self) -> None:
        """Stop and join the training thread (used on close)."""
        if self.thread is None:
            return
        if self.worker is not None:
            self.worker.request_stop()
        self.thread.quit()
        self.thread.wait()

    @Slot(object)
    def _run_started(self, info: dict) -> None:
        queued = (f"comparison run {self.queue_total - len(self.queue)}/{self.queue_total}: "
                  if self.queue_total else "")
        self.run_path = Path(info["path"])
        self.device_label.setText(info["device"])
        self.embedding.set_sample_names(info["validation_names"])
        self.embedding.set_classes(info["class_names"])
        self.soft_labels.set_classes(info["class_names"])
        store = RunStore(self.run_path)
        self.embedding.set_feature_source(store.embedding_features)
        self.run_epochs = (info["start_epoch"], info["epochs"])
        self.message.setText(f"{queued}training {info['train_images']:,} images → "
                             f"{self.run_path}")
        self.setWindowTitle(f"olsdesk — {self.run_path.name}")

    @Slot(object)
    def _batch_progressed(self, p: BatchProgress) -> None:
        self.epoch_progress.setValue(int(1000 * p.fraction_of_epoch))
        start, total = getattr(self, "run_epochs", (0, p.epochs))
        span = max(total - start, 1)
        done = (p.epoch - 1 - start + p.fraction_of_epoch) / span
        self.run_progress.setValue(int(1000 * done))
        elapsed = time.monotonic() - self.started_at
        eta = elapsed * (1 - done) / done if done > 0.01 else float("nan")
        self.eta_label.setText(f"ETA {_eta(eta)}")
        self.speed_label.setText(f"{p.images_per_second:,.0f} img/s")
        if not self.worker or not self.worker.trainer.paused:
            phase = "training" if p.phase == "train" else "validating"
            loss = "" if p.loss != p.loss else f", loss {p.loss:.4f}"
            queued = (f"[{self.queue_total - len(self.queue)}/{self.queue_total}] "
                      if self.queue_total else "")
            self.message.setText(f"{queued}Epoch {p.epoch}/{p.epochs}: {phase} batch {p.batch}/"
                                 f"{p.batches}{loss}")

    @Slot(object)
    def _epoch_finished(self, report: EpochReport) -> None:
        self.add_report(report)

    @Slot(str)
    def _failed(self, message: str) -> None:
        self.last_error = message
        self.experiment.show_error(message)
        self.message.setText("Training failed: " + message)
        # open(), not exec(): the box never blocks the event loop (or a test)
        self.error_box = QMessageBox(QMessageBox.Icon.Warning, "Training stopped", message,
                                     QMessageBox.StandardButton.Ok, self)
        self.error_box.open()

    @Slot(str)
    def _finished(self, status: str) -> None:
        self.last_status = status
        self.thread.wait()
        self.thread = self.worker = None
        self.experiment.set_state("idle")
        where = f" Run kept in {self.run_path}." if self.run_path else ""
        text = {"finished": "Training finished.", "stopped": "Training stopped; the last "
                "finished epoch's checkpoint is kept.", "failed": "Training failed."}[status]
        if status != "failed" or not self.last_error:
            self.message.setText(text + where)
        if status == "finished":
            self.run_progress.setValue(1000)
        self.eta_label.setText("")
        if self.queue and status == "finished":
            self._start_next_in_queue()
            return
        if self.queue_total:
            if status == "finished":
                self.message.setText(f"Comparison of {self.queue_total} runs finished.")
                self.tabs.setCurrentWidget(self.compare)
                self.compare.refresh()
                self.compare.select_runs(self.queue_paths)
            else:
                self.message.setText(f"Comparison {status} after "
                                     f"{self.queue_total - len(self.queue) - 1} runs; "
                                     "the finished runs are kept.")
            self.queue, self.queue_total = [], 0

    # --- reports and the slider ---------------------------------------------------------
    def _clear_panels(self) -> None:
        self.reports = []
        self.curves.clear()
        for panel in (self.soft_labels, self.reliability, self.embedding):
            panel.show_report(None)
        self.epoch_slider.setRange(1, 1)
        self.epoch_slider.setEnabled(False)
        self.play_button.setEnabled(False)
        self.epoch_label.setText("no epochs yet")
        self.epoch_progress.setValue(0)
        self.run_progress.setValue(0)

    def _use_run_checkpoint(self) -> None:
        """Point the Predict panel at the run's best checkpoint (latest when none is best)."""
        if self.run_path is None:
            return
        store = RunStore(self.run_path)
        for which, label in (("best.pt", "best"), ("latest.pt", "latest")):
            path = store.checkpoint_path(which)
            if path.exists():
                best = max(self.reports, key=lambda r: r.val_top1) if self.reports else None
                detail = (f", epoch {best.epoch}, validation top-1 {best.val_top1:.1%}"
                          if best is not None and which == "best.pt" else "")
                self.predict.set_checkpoint(path, f"{self.run_path.name}, {label} checkpoint"
                                                  f"{detail}")
                return

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

    def add_report(self, report: EpochReport) -> None:
        following = not self.reports or self.epoch_slider.value() == len(self.reports)
        self.reports.append(report)
        self.curves.add_report(report)
        self._use_run_checkpoint()
        self.embedding.set_latest_epoch(report.epoch)
        self.epoch_slider.setEnabled(True)
        self.play_button.setEnabled(len(self.reports) > 1)
        self.epoch_slider.blockSignals(True)
        self.epoch_slider.setRange(1, len(self.reports))
        self.epoch_slider.blockSignals(False)
        if following and not self.play_timer.isActive():
            self.epoch_slider.setValue(len(self.reports))
            self._epoch_chosen(len(self.reports))
        else:
            self._update_epoch_label()

    def set_reports(self, reports: list[EpochReport]) -> None:
        self._clear_panels()
        for report in reports:
            self.add_report(report)

    def _update_epoch_label(self) -> None:
        if self.reports:
            report = self.reports[self.epoch_slider.value() - 1]
            self.epoch_label.setText(f"epoch {report.epoch} of {report.epochs}")

    @Slot(int)
    def _epoch_chosen(self, position: int) -> None:
        if not self.reports:
            return
        report = self.reports[position - 1]
        for panel in (self.soft_labels, self.reliability, self.embedding):
            panel.show_report(report)
        self._update_epoch_label()

    def toggle_play(self) -> None:
        if self.play_timer.isActive():
            self.play_timer.stop()
            self.play_button.setText("▶ Play")
            return
        self.epoch_slider.setValue(1)
        self._epoch_chosen(1)
        self.play_button.setText("■ Stop")
        self.play_timer.start()

    def _play_step(self) -> None:
        value = self.epoch_slider.value()
        if value >= len(self.reports):
            self.toggle_play()
            return
        self.epoch_slider.setValue(value + 1)

    # --- runs: replay and export ------------------------------------------------------
    def choose_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a run", str(self.runs_dir))
        if path:
            self.open_run(path)

    def open_run(self, path: str | Path) -> bool:
        """Replay a finished or still-running run in every panel."""
        if self.training:
            self.message.setText("Stop the training before opening another run.")
            return False
        try:
            store = RunStore.open(path)
            reports = store.load_reports()
            info = store.info()
        except (RunError, OSError, ValueError, KeyError) as exc:
            self.message.setText(f"Cannot open {path}: {exc}")
            return False
        self.run_path = store.path
        self.embedding.set_sample_names(info.get("validation_names", []))
        self.embedding.set_feature_source(store.embedding_features)
        self.set_reports(reports)
        self.setWindowTitle(f"olsdesk — {store.path.name}")
        status = info.get("status", "?")
        self.message.setText(f"Replaying {store.path.name}: {len(reports)} epochs ({status}).")
        self._stop_replay()
        if status == "training":
            self.replay_store = store
            self.replay_timer.start()
        return True

    def _poll_replay(self) -> None:
        store = self.replay_store
        if store is None:
            return
        try:
            reports = store.load_reports()
            status = store.info().get("status")
        except (OSError, ValueError, KeyError):
            return
        for report in reports[len(self.reports):]:
            self.add_report(report)
        if status != "training":
            self._stop_replay()
            self.message.setText(f"{store.path.name}: {len(self.reports)} epochs ({status}).")

    def _stop_replay(self) -> None:
        self.replay_timer.stop()
        self.replay_store = None

    def choose_export(self) -> None:
        if not self.reports:
            self.message.setText("Nothing to export yet: train or open a run first.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Export to folder")
        if folder:
            written = self.export(folder)
            self.message.setText(f"Exported {len(written)} files to {folder}.")

    def export(self, folder: str | Path) -> list[Path]:
        """Each panel as PNG and the metrics as CSV."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name in self.PANELS:
            path = folder / f"{name}.png"
            if self.render_panel(name).save(str(path)):
                written.append(path)
        path = folder / "metrics.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            scalars = [r.scalars() for r in self.reports]
            writer = csv.DictWriter(fh, fieldnames=list(scalars[0]))
            writer.writeheader()
            writer.writerows(scalars)
        written.append(path)
        return written

    def render_panel(self, name: str):
        """A panel rendered to a QPixmap, whether its tab is showing or not."""
        widget = getattr(self, name)
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
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        self.play_timer.stop()
        self._stop_replay()
        if self.training:
            self.message.setText("Stopping the training; the last checkpoint is kept…")
        self.wait_for_worker()
        self.embedding.shutdown()
        self.predict.shutdown()
        self.experiment.shutdown()
        self.experiment.save()
        super().closeEvent(event)
