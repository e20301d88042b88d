"""Experiment: what to train (data, model, loss and its parameters, schedule, device) and
the Train / Pause / Stop buttons. Choices are remembered between launches."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from olsdesk.config import ConfigError, RunConfig
from olsdesk.core.data.sources import DEMO, Dataset, data_kind, dataset_key, open_dataset
from olsdesk.core.data.transforms import Preprocessing
from olsdesk.core.device import accelerators, device_menu_label
from olsdesk.core.state import AppState
from olsdesk.core.weights import IMAGENET, imagenet_status
from olsdesk.gui.settings_form import SettingsForm, form_fields, narrow
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


def _valid_settings(text: object) -> RunConfig:
    """The remembered settings, each kept only while the whole stays valid: an edited or
    older settings.ini with a value out of range or of the wrong type (an unknown model,
    an image size of 1e11) stopped the app from starting. The rest stay as they were."""
    try:
        stored = json.loads(str(text)) if text else {}
    except ValueError:
        return RunConfig()
    if not isinstance(stored, dict):
        return RunConfig()
    config = RunConfig()
    for _ in range(2):  # twice: a value valid only beside another (a loss's alpha) is kept
        for name, value in stored.items():
            try:
                config = RunConfig.from_dict({**config.to_dict(), name: value}).validated()
            except (ConfigError, ValueError, TypeError):
                continue  # this one falls back to its default
    return config


class ExperimentPanel(QWidget):
    """The settings column: a view of ``state.config`` (the RunConfig being edited), its
    form generated from RunConfig's fields; Train trains exactly that config."""

    train_requested = Signal()
    data_checked = Signal(str)  # "" when the data can be trained on, else why not
    pause_requested = Signal()
    stop_requested = Signal()

    def __init__(self, settings: QSettings, state: AppState | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.state = state or AppState()
        self.folders = DialogFolders(settings)  # where its file dialogs open
        self.dataset: Dataset | None = None
        self.dataset_key: tuple | None = None
        self._loader: Worker | None = None
        self._pending: RunConfig | None = None  # data chosen while another load runs
        self.state_name = "idle"
        self.restore()
        column = QVBoxLayout()
        column.addWidget(self._build_data_box())
        column.addWidget(self._build_training_box())
        column.addWidget(self._build_more_box())
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

        self.state.events.config.connect(self._config_changed)
        self.set_state("idle")
        self.load_dataset()

    def _build_data_box(self) -> QGroupBox:
        self.data_kind = QComboBox()
        for key, label in DATA_KIND_LABELS:
            self.data_kind.addItem(label, key)
        narrow(self.data_kind)
        self.data_kind.activated.connect(self._data_kind_chosen)
        self.data_kind.setCurrentIndex(self.data_kind.findData(
            data_kind(self.data_path, self.split_csv)))
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
        start = lambda: self.folders.start("weights")  # noqa: E731
        self.form = SettingsForm(self.state, form_fields("main"), start, self._edited)
        self._adopt(self.form)
        self.weights.chosen.connect(lambda path: self.folders.remember("weights", path))
        self.model_hint = QLabel("")
        self.model_hint.setWordWrap(True)
        self.model_hint.setStyleSheet("color: #555;")
        self.form.layout.insertRow(self.form.layout.getWidgetPosition(self.model)[0] + 1, "",
                                   self.model_hint)
        # ImageNet weights: whether torchvision's file is cached, and where it belongs
        self.weights_hint = QLabel("")
        self.weights_hint.setWordWrap(True)
        self.weights_hint.setStyleSheet("color: #555;")
        self.weights_hint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.form.layout.insertRow(self.form.layout.getWidgetPosition(self.weights)[0] + 1,
                                   "", self.weights_hint)
        self._label_devices()
        # several GPUs: train one run on them with torchrun (a child process the app follows)
        gpus = self.gpu_count = torch_cuda_count()
        self.gpus = QSpinBox()
        self.gpus.setRange(1, max(gpus, 1))
        self.gpus.setValue(gpus if gpus > 1 else 1)
        self.gpus.setToolTip("GPUs to train this run on: more than one starts torchrun as a "
                             "child process (DistributedDataParallel); the batch size is per "
                             "GPU. The panels follow the run folder; Pause and Stop reach it.")
        self.form.layout.insertRow(self.form.layout.getWidgetPosition(self.device)[0] + 1,
                                   "GPUs", self.gpus)
        self.form.layout.labelForField(self.gpus).setVisible(gpus > 1)
        self.gpus.setVisible(gpus > 1)
        train_box = QGroupBox("Training")
        train_box.setLayout(self.form.layout)
        return train_box

    def _build_more_box(self) -> QWidget:
        """Every other setting of RunConfig (split, regularisation, hardware, analysis),
        folded away; a run opened and trained again keeps them all."""
        self.more = SettingsForm(self.state, form_fields("more"),
                                 lambda: self.folders.start("data"), self._edited)
        self._adopt(self.more)
        self.test_data.chosen.connect(lambda path: self.folders.remember("data", path))
        self.more_button = QToolButton()
        self.more_button.setText("More settings")
        self.more_button.setCheckable(True)
        self.more_button.setArrowType(Qt.ArrowType.RightArrow)
        self.more_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.more_box = QGroupBox()
        self.more_box.setLayout(self.more.layout)
        self.more_box.hide()
        self.more_button.toggled.connect(self._show_more)
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.more_button)
        layout.addWidget(self.more_box)
        return box

    def _show_more(self, on: bool) -> None:
        self.more_box.setVisible(on)
        self.more_button.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def _adopt(self, form: SettingsForm) -> None:
        """The form's widgets as attributes named as their fields (``panel.epochs``)."""
        for name, widget in form.widgets.items():
            if name != "demo_per_class":  # a property of the panel (read by the data box)
                setattr(self, name, widget)

    def setting_widgets(self) -> dict[str, QWidget]:
        """RunConfig field -> the widget that sets it (every field but the data's)."""
        return {**self.form.widgets, **self.more.widgets}

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

    @property
    def processes(self) -> int:
        """Processes to train on: the GPUs setting where it is shown, else 1."""
        return self.gpus.value() if self.gpu_count > 1 else 1

    def _label_devices(self) -> None:
        found = accelerators()
        labels = {"auto": f"auto ({device_menu_label()})", "cpu": "CPU",
                  "cuda": "CUDA" if found["cuda"] else "CUDA (no CUDA GPU found)",
                  "mps": "Apple MPS" if found["mps"] else "Apple MPS (not available)"}
        model = self.device.model()
        for row in range(self.device.count()):
            key = self.device.itemData(row)
            self.device.setItemText(row, labels[key])
            model.item(row).setEnabled(key in ("auto", "cpu") or found[key])

    # --- data ----------------------------------------------------------------------
    @property
    def data_source(self) -> str:
        return self.state.config.data

    @property
    def data_path(self) -> str:
        return "" if self.state.config.data == DEMO else self.state.config.data

    @property
    def split_csv(self) -> str:
        return self.state.config.split_csv or ""

    @property
    def demo_per_class(self) -> int:
        return self.state.config.demo_per_class

    @demo_per_class.setter
    def demo_per_class(self, value: int) -> None:
        self.state.edit_config(demo_per_class=value)

    def _data_kind_chosen(self) -> None:
        kind = self.data_kind.currentData()
        if kind == "demo":
            return self.set_data(DEMO)
        if kind == "npz":
            path, _ = QFileDialog.getOpenFileName(self, "MedMNIST archive",
                                                  self.folders.start("data"), "NumPy (*.npz)")
            if not path:
                return self._revert_kind()
            self.folders.remember("data", path)
            return self.set_data(path)
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
        self.set_data(path, split)

    def _revert_kind(self) -> None:
        self.data_kind.setCurrentIndex(
            self.data_kind.findData(data_kind(self.data_path, self.split_csv)))

    def set_data(self, path: str, split_csv: str = "") -> None:
        """Point at a dataset without a dialog (menus, tests, remembered settings)."""
        if data_kind(path) == "demo":
            path, split_csv = DEMO, ""
        self.state.edit_config(data=path or DEMO, split_csv=split_csv or None)
        self.data_kind.setCurrentIndex(self.data_kind.findData(data_kind(path, split_csv)))
        self.load_dataset()

    def data_config(self) -> RunConfig:
        """The data settings alone (what the dataset preview and the split depend on)."""
        c = self.state.config
        return RunConfig(data=c.data, split_csv=c.split_csv, demo_per_class=c.demo_per_class)

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

    # --- state ---------------------------------------------------------------------
    def _edited(self, name: str) -> None:
        """A setting the user changed: a new loss starts from its own default α."""
        if name == "loss" and self.state.config.alpha is not None:
            self.state.edit_config(alpha=None)
        if name == "demo_per_class":
            self.load_dataset()

    def _config_changed(self, _config: RunConfig) -> None:
        self._update_enabled()

    def _update_enabled(self) -> None:
        idle = self.state_name == "idle"
        for form in (self.form, self.more):
            form.update_enabled(idle)
        self.model_hint.setText(MODEL_HINTS[self.state.config.model])
        self.weights_hint.setText(weights_hint(self.state.config))
        self.weights_hint.setVisible(bool(self.weights_hint.text()))
        self.train_button.setEnabled(idle and self.dataset is not None)
        self.train_button.setToolTip("" if self.dataset is not None else
                                     "waiting for the data to be read")

    def set_state(self, state: str) -> None:
        """idle, training or paused: which buttons and settings are live."""
        self.state_name = state
        running = state != "idle"
        self.pause_button.setEnabled(running)
        self.pause_button.setText("Resume" if state == "paused" else "Pause")
        self.stop_button.setEnabled(running)
        self.data_kind.setEnabled(not running)
        self.gpus.setEnabled(not running)
        self._update_enabled()

    def show_error(self, message: str) -> None:
        self.error.setText(message)

    def show_config(self, config: RunConfig) -> None:
        """Show a run's own settings (after File → Open run…): the form edits a copy of
        that run's RunConfig, so Train repeats it exactly."""
        self.state.set_config(config)
        self.data_kind.setCurrentIndex(self.data_kind.findData(
            data_kind(self.data_path, self.split_csv)))
        self.load_dataset()

    def config(self) -> RunConfig:
        """The settings as a validated RunConfig (ConfigError says what is wrong)."""
        config = self.state.config
        if not config.data:
            raise ConfigError("choose a dataset first.")
        return config.validated()

    # --- remembering -----------------------------------------------------------------
    def save(self) -> None:
        """Remember the settings as the RunConfig's JSON."""
        self.settings.setValue("experiment/config", self.state.config.to_json())
        self.settings.sync()

    def restore(self) -> None:
        """The settings of the last session, where they still make sense here: data and
        files that are gone fall back to the demo set and to no file."""
        config = _valid_settings(self.settings.value("experiment/config"))
        changes = {}
        if config.data != DEMO and not Path(config.data).exists():
            changes.update(data=DEMO, split_csv=None)
        for name in ("weights", "test_data"):
            value = getattr(config, name)
            if value not in (None, IMAGENET) and not Path(value).exists():
                changes[name] = None
        if config.device in ("cuda", "mps") and not accelerators()[config.device]:
            changes["device"] = "auto"
        self.state.set_config(config.replace(**changes))

    def shutdown(self) -> None:
        """Wait for a dataset still being read."""
        if self._loader is not None:
            self._loader.quit()
            self._loader = None


def weights_hint(config: RunConfig) -> str:
    """What "Start from: imagenet" means for the chosen model ("" for anything else)."""
    if config.weights != IMAGENET:
        return ""
    if config.model == "smallcnn":
        return "torchvision has no ImageNet weights for the small CNN: choose ResNet, " \
               "MobileNetV2 or VGG."
    cached, path = imagenet_status(config.model)
    return (f"ImageNet (torchvision): {path.name} cached ✓" if cached else
            f"ImageNet (torchvision): {path.name} missing; downloaded when training starts "
            f"if this machine is online, or put it into {path.parent}")
