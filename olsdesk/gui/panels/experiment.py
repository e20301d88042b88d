"""Experiment: what to train (data, model, loss and its parameters, schedule, device) and
the Train / Pause / Stop buttons. Choices are remembered between launches."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from olsdesk.config import (
    LOSS_LABELS,
    LOSS_NAMES,
    MODEL_NAMES,
    OPTIMIZERS,
    SCHEDULES,
    ConfigError,
    RunConfig,
    loss_alpha,
)
from olsdesk.core.data.sources import DEMO, Dataset, data_kind, dataset_key, open_dataset
from olsdesk.core.data.transforms import Preprocessing
from olsdesk.core.device import accelerators, device_menu_label
from olsdesk.gui.widgets import DatasetPreview, DialogFolders, read_thumbnails
from olsdesk.gui.workers import Worker, start_worker

DATA_KIND_LABELS = (
    ("demo", "Demo (built-in, 12 classes)"),
    ("folder", "Image folder…"),
    ("radimagenet", "RadImageNet folder with CSV splits…"),
    ("npz", "MedMNIST .npz…"),
)
MODEL_HINTS = {
    "smallcnn": "Small CNN: trains the demo set in seconds a epoch on a laptop CPU.",
    "resnet18": "ResNet-18: a good middle ground; use a GPU for real data.",
    "resnet50": "ResNet-50 (the paper's backbone): slow without a GPU.",
    "mobilenet_v2": "MobileNetV2: light; a fair choice on a CPU.",
    "vgg19": "VGG-19: very slow without a GPU; needs images of at least 32 pixels.",
}


def _open_for_preview(config: RunConfig) -> tuple[Dataset, list]:
    """The dataset and its thumbnails, read in a worker (a large folder takes time)."""
    dataset = open_dataset(config)
    preview = Preprocessing.for_size(config.effective_image_size, dataset.channels)
    return dataset, read_thumbnails(dataset, preview)


def torch_cuda_count() -> int:
    """CUDA devices this PyTorch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class ExperimentPanel(QWidget):
    train_requested = Signal()
    data_checked = Signal(str)  # "" when the data can be trained on, else why not
    pause_requested = Signal()
    stop_requested = Signal()

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.folders = DialogFolders(settings)  # where its file dialogs open
        self.data_path = ""
        self.split_csv = ""
        self.dataset: Dataset | None = None
        self.dataset_key: tuple | None = None
        self._loader: Worker | None = None
        self._pending: RunConfig | None = None  # data chosen while another load runs
        self.demo_per_class = 200
        column = QVBoxLayout()
        column.addWidget(self._build_data_box())
        column.addWidget(self._build_training_box())
        column.addStretch(1)
        inner = QWidget()
        inner.setLayout(column)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b00020;")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.addWidget(scroll, 1)
        outer.addWidget(self.error)
        outer.addLayout(self._build_buttons())

        self._apply_defaults()
        self.restore()
        self._loss_changed()
        self.set_state("idle")
        self.load_dataset()

    def _build_data_box(self) -> QGroupBox:
        self.data_kind = QComboBox()
        for key, label in DATA_KIND_LABELS:
            self.data_kind.addItem(label, key)
        self.data_kind.activated.connect(self._data_kind_chosen)
        self.data_label = QLabel("built-in synthetic CT / MR / ultrasound set")
        self.data_label.setWordWrap(True)
        self.preview = DatasetPreview()
        data_box = QGroupBox("Data")
        data_layout = QVBoxLayout(data_box)
        data_layout.addWidget(self.data_kind)
        data_layout.addWidget(self.data_label)
        data_layout.addWidget(self.preview)
        return data_box

    def _build_training_box(self) -> QGroupBox:
        self.model = QComboBox()
        for name in MODEL_NAMES:
            self.model.addItem(name, name)
        self.model.currentIndexChanged.connect(self._update_enabled)
        self.model_hint = QLabel("")
        self.model_hint.setWordWrap(True)
        self.model_hint.setStyleSheet("color: #555;")
        self.weights = QLineEdit()
        self.weights.setPlaceholderText("none: train from scratch")
        self.weights.setReadOnly(True)
        weights_pick = self.weights_pick = QPushButton("…")
        weights_pick.setFixedWidth(28)
        weights_pick.setToolTip("A local state-dict file (ImageNet or RadImageNet weights)")
        weights_pick.clicked.connect(self._choose_weights)
        weights_clear = self.weights_clear = QPushButton("×")
        weights_clear.setFixedWidth(28)
        weights_clear.clicked.connect(self.weights.clear)
        weights_row = QHBoxLayout()
        weights_row.addWidget(self.weights, 1)
        weights_row.addWidget(weights_pick)
        weights_row.addWidget(weights_clear)

        # --- loss
        self.loss = QComboBox()
        for name in LOSS_NAMES:
            self.loss.addItem(LOSS_LABELS[name], name)
        self.loss.currentIndexChanged.connect(self._loss_changed)
        self.alpha = self._double(0.0, 1.0, 0.05, 3, 0.5)
        self.epsilon = self._double(0.0, 0.99, 0.05, 3, 0.1)
        self.temperature = self._double(0.1, 100.0, 1.0, 1, 6.0)
        self.epochs = self._int(1, 1000, 10)
        self.batch_size = self._int(1, 4096, 64)
        self.lr = self._double(1e-5, 10.0, 0.0005, 5, 0.003)
        self.optimizer = QComboBox()
        for name in OPTIMIZERS:
            self.optimizer.addItem({"sgd": "SGD (momentum 0.9)", "adamw": "AdamW"}[name], name)
        self.schedule = QComboBox()
        for name in SCHEDULES:
            self.schedule.addItem({"cosine": "cosine", "step": "step (×0.1 at 45 %, 80 %)",
                                   "constant": "constant"}[name], name)
        self.image_size = self._int(15, 1024, 15)
        self.image_size.setSpecialValueText("auto")
        self.device = QComboBox()
        self._fill_devices()
        # several GPUs: train one run on them with torchrun (a child process the app follows)
        gpus = self.gpu_count = torch_cuda_count()
        self.gpus = self._int(1, max(gpus, 1), gpus if gpus > 1 else 1)
        self.gpus.setToolTip("GPUs to train this run on: more than one starts torchrun as a "
                             "child process (DistributedDataParallel); the batch size is per "
                             "GPU. The panels follow the run folder; Pause and Stop reach it.")
        self.seed = self._int(0, 2**31 - 1, 0)

        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("", self.model_hint)
        form.addRow("Start from", weights_row)
        form.addRow("Loss", self.loss)
        form.addRow("α", self.alpha)
        form.addRow("ε", self.epsilon)
        form.addRow("T", self.temperature)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Learning rate", self.lr)
        form.addRow("Optimizer", self.optimizer)
        form.addRow("Schedule", self.schedule)
        form.addRow("Image size", self.image_size)
        form.addRow("Device", self.device)
        form.addRow("GPUs", self.gpus)
        form.labelForField(self.gpus).setVisible(gpus > 1)
        self.gpus.setVisible(gpus > 1)
        form.addRow("Seed", self.seed)
        self.form = form
        for name, widget in self.setting_widgets().items():  # RunConfig's own help text
            widget.setToolTip(RunConfig.__dataclass_fields__[name].metadata["help"])
        train_box = QGroupBox("Training")
        train_box.setLayout(form)
        return train_box

    def setting_widgets(self) -> dict[str, QWidget]:
        """RunConfig field -> the widget that sets it."""
        return {name: getattr(self, name) for name in (
            "model", "loss", "alpha", "epsilon", "temperature", "epochs", "batch_size", "lr",
            "optimizer", "schedule", "image_size", "device", "seed")}

    def _build_buttons(self) -> QHBoxLayout:
        self.train_button = QPushButton("Train")
        self.train_button.setDefault(True)
        self.train_button.clicked.connect(self.train_requested)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.pause_requested)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_requested)
        buttons = QHBoxLayout()
        for b in (self.train_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        return buttons

    def _apply_defaults(self) -> None:
        """Start from RunConfig's defaults, so the app and the CLI agree."""
        d = RunConfig()
        for name in ("model", "loss", "optimizer", "schedule", "device"):
            combo = getattr(self, name)
            combo.setCurrentIndex(max(combo.findData(getattr(d, name)), 0))
        self._show_alpha(d)
        for name in ("epsilon", "temperature", "epochs", "batch_size", "lr", "seed"):
            getattr(self, name).setValue(getattr(d, name))

    # --- small builders ----------------------------------------------------------
    @staticmethod
    def _double(lo, hi, step, decimals, value) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(lo, hi)
        box.setDecimals(decimals)
        box.setSingleStep(step)
        box.setValue(value)
        return box

    @staticmethod
    def _int(lo, hi, value) -> QSpinBox:
        box = QSpinBox()
        box.setRange(lo, hi)
        box.setValue(value)
        return box

    @property
    def processes(self) -> int:
        """Processes to train on: the GPUs setting where it is shown, else 1."""
        return self.gpus.value() if self.gpu_count > 1 else 1

    def _fill_devices(self) -> None:
        found = accelerators()
        cuda, mps = found["cuda"], found["mps"]
        self.device.addItem(f"auto ({device_menu_label()})", "auto")
        self.device.addItem("CPU", "cpu")
        self.device.addItem("CUDA" if cuda else "CUDA (no CUDA GPU found)", "cuda")
        self.device.addItem("Apple MPS" if mps else "Apple MPS (not available)", "mps")
        model = self.device.model()
        for row, ok in ((2, cuda), (3, mps)):
            model.item(row).setEnabled(ok)

    # --- data ----------------------------------------------------------------------
    @property
    def data_source(self) -> str:
        return DEMO if self.data_kind.currentData() == "demo" else self.data_path

    def _data_kind_chosen(self) -> None:
        kind = self.data_kind.currentData()
        if kind == "demo":
            self.data_path, self.split_csv = "", ""
        elif kind == "npz":
            path, _ = QFileDialog.getOpenFileName(self, "MedMNIST archive",
                                                  self.folders.start("data"), "NumPy (*.npz)")
            if not path:
                return self._revert_kind()
            self.folders.remember("data", path)
            self.data_path, self.split_csv = path, ""
        else:
            path = QFileDialog.getExistingDirectory(self, "Image folder (one sub-folder a class)",
                                                    self.folders.start("data"))
            if not path:
                return self._revert_kind()
            self.folders.remember("data", path)
            split = ""
            if kind == "radimagenet":
                split = QFileDialog.getExistingDirectory(
                    self, "Folder with the split CSVs (e.g. RadiologyAI_train.csv)", path)
                if not split:
                    return self._revert_kind()
            self.data_path, self.split_csv = path, split
        self.load_dataset()

    def _revert_kind(self) -> None:
        self.data_kind.setCurrentIndex(
            self.data_kind.findData(data_kind(self.data_path, self.split_csv)))

    def set_data(self, path: str, split_csv: str = "") -> None:
        """Point at a dataset without a dialog (menus, tests, remembered settings)."""
        if data_kind(path) == "demo":
            path = split_csv = ""
        self.data_path, self.split_csv = path, split_csv
        self.data_kind.setCurrentIndex(self.data_kind.findData(data_kind(path, split_csv)))
        self.load_dataset()

    def data_config(self) -> RunConfig:
        """The data settings alone (what the dataset preview and the split depend on)."""
        return RunConfig(data=self.data_source, split_csv=self.split_csv or None,
                         demo_per_class=self.demo_per_class)

    def load_dataset(self) -> None:
        """Open the chosen data in a worker and show its summary when ready."""
        config = self.data_config()
        if dataset_key(config) == self.dataset_key:
            return
        self.data_label.setText(self.data_source if self.data_source != DEMO else
                                "built-in synthetic CT / MR / ultrasound set")
        self.preview.show_reading()
        self.dataset = None
        self.dataset_key = None
        self._pending = config
        if self._loader is None:  # else: the running load's result is discarded
            self._start_loader(config)

    def _start_loader(self, config: RunConfig) -> None:
        self._loader = start_worker(
            _open_for_preview, config,
            returned=lambda result: self._dataset_ready(config, result),
            errored=lambda message: self._dataset_failed(config, message),
            finished=self._loader_finished)

    def _loader_finished(self) -> None:
        self._loader = None
        if self._pending is not None:  # the user chose other data meanwhile
            self._start_loader(self._pending)

    def _dataset_ready(self, config: RunConfig, result) -> None:
        if config != self._pending:
            return
        self._pending = None
        self.dataset, self.dataset_key = result[0], dataset_key(config)
        self.preview.show_dataset(*result)
        self._update_enabled()
        self.data_checked.emit("")

    def _dataset_failed(self, config: RunConfig, message: str) -> None:
        if config != self._pending:
            return
        self._pending = None
        self.preview.show_error(message)
        self._update_enabled()
        self.data_checked.emit(message)

    def _choose_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Weights to start from",
                                              self.folders.start("weights"),
                                              "PyTorch weights (*.pt *.pth *.bin);;All files (*)")
        if path:
            self.folders.remember("weights", path)
            self.weights.setText(path)

    def _show_alpha(self, config: RunConfig) -> None:
        alpha = loss_alpha(config.loss, config.alpha)
        self.alpha.setValue(0.5 if alpha is None else alpha)  # disabled for CE and LS

    # --- state ---------------------------------------------------------------------
    def _loss_changed(self) -> None:
        loss = self.loss.currentData()
        default = loss_alpha(loss, None)
        if default is not None and self.sender() is self.loss:
            self.alpha.setValue(default)
        self._update_enabled()

    def _update_enabled(self) -> None:
        loss = self.loss.currentData()
        self.alpha.setEnabled(loss in ("ols", "tfkd"))
        self.epsilon.setEnabled(loss == "ls")
        self.temperature.setEnabled(loss == "tfkd")
        for box, used in ((self.alpha, "OLS and TF-KD"), (self.epsilon, "label smoothing"),
                          (self.temperature, "TF-KD")):
            box.setStatusTip("" if box.isEnabled() else f"used by {used} only")
        self.model_hint.setText(MODEL_HINTS[self.model.currentData()])
        idle = self.state == "idle" if hasattr(self, "state") else True
        self.train_button.setEnabled(idle and self.dataset is not None)
        self.train_button.setToolTip("" if self.dataset is not None else
                                     "waiting for the data to be read")

    def set_state(self, state: str) -> None:
        """idle, training or paused: which buttons and settings are live."""
        self.state = state
        running = state != "idle"
        self.pause_button.setEnabled(running)
        self.pause_button.setText("Resume" if state == "paused" else "Pause")
        self.stop_button.setEnabled(running)
        for widget in (self.data_kind, self.weights, self.weights_pick, self.weights_clear,
                       self.gpus, *self.setting_widgets().values()):
            widget.setEnabled(not running)
        if not running:
            self._update_enabled()  # alpha, epsilon, T only where the loss uses them
        else:
            self.train_button.setEnabled(False)

    def show_error(self, message: str) -> None:
        self.error.setText(message)

    def show_config(self, config: RunConfig) -> None:
        """Show a run's own settings (after File → Open run…): what the panel says is
        what that run was trained with, and Train repeats it."""
        for name in ("model", "loss", "optimizer", "schedule", "device"):
            combo = getattr(self, name)
            index = combo.findData(getattr(config, name))
            if index >= 0 and combo.model().item(index).isEnabled():
                combo.setCurrentIndex(index)
        for name in ("epsilon", "temperature", "epochs", "batch_size", "lr", "seed"):
            getattr(self, name).setValue(getattr(config, name))
        self._show_alpha(config)
        self.image_size.setValue(config.image_size or self.image_size.minimum())
        self.weights.setText(config.weights or "")
        self.demo_per_class = config.demo_per_class
        self.set_data(config.data, config.split_csv or "")

    def config(self) -> RunConfig:
        """The settings as a validated RunConfig (ConfigError says what is wrong)."""
        loss = self.loss.currentData()
        config = RunConfig(
            data=self.data_source, split_csv=self.split_csv or None,
            model=self.model.currentData(), weights=self.weights.text() or None, loss=loss,
            alpha=self.alpha.value() if loss in ("ols", "tfkd") else None,
            epsilon=self.epsilon.value(), temperature=self.temperature.value(),
            epochs=self.epochs.value(), batch_size=self.batch_size.value(), lr=self.lr.value(),
            optimizer=self.optimizer.currentData(), schedule=self.schedule.currentData(),
            image_size=None if self.image_size.value() == self.image_size.minimum()
            else self.image_size.value(),
            device=self.device.currentData(), seed=self.seed.value(),
            demo_per_class=self.demo_per_class,
        )
        if not config.data:
            raise ConfigError("choose a dataset first.")
        return config.validated()

    # --- remembering -----------------------------------------------------------------
    FIELDS = ("model", "loss", "optimizer", "schedule", "device")
    NUMBERS = ("alpha", "epsilon", "temperature", "epochs", "batch_size", "lr", "image_size",
               "seed")

    def save(self) -> None:
        s = self.settings
        for name in self.FIELDS:
            s.setValue(f"experiment/{name}", getattr(self, name).currentData())
        for name in self.NUMBERS:
            box = getattr(self, name)
            auto = box.specialValueText() and box.value() == box.minimum()
            s.setValue(f"experiment/{name}", "auto" if auto else box.value())
        s.setValue("experiment/data", self.data_source)
        s.setValue("experiment/split_csv", self.split_csv)
        s.setValue("experiment/weights", self.weights.text())
        s.sync()

    def restore(self) -> None:
        s = self.settings
        for name in self.FIELDS:
            value = s.value(f"experiment/{name}")
            combo = getattr(self, name)
            index = combo.findData(value) if value is not None else -1
            if index >= 0 and combo.model().item(index).isEnabled():
                combo.setCurrentIndex(index)
        for name in self.NUMBERS:
            value = s.value(f"experiment/{name}")
            if value is not None:
                box = getattr(self, name)
                if value == "auto" and box.specialValueText():
                    box.setValue(box.minimum())
                    continue
                try:
                    box.setValue(type(box.value())(value))
                except (TypeError, ValueError):
                    pass
        self.weights.setText(str(s.value("experiment/weights", "") or ""))
        data = str(s.value("experiment/data", DEMO) or DEMO)
        if data != DEMO and Path(data).exists():
            self.data_path = data
            self.split_csv = str(s.value("experiment/split_csv", "") or "")
            self.data_kind.setCurrentIndex(
                self.data_kind.findData(data_kind(data, self.split_csv)))

    def shutdown(self) -> None:
        """Wait for a dataset still being read."""
        if self._loader is not None:
            self._loader.quit()
            self._loader = None
