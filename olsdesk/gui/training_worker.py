"""TrainingWorker: a QObject moved to a QThread that iterates ``Trainer.fit()``.

Stop and pause are the trainer's ``threading.Event``s, set directly from the GUI thread
(never queued signals, which would wait behind the running loop). Batch progress is
throttled to about 20 updates a second so the GUI thread is never flooded.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Signal, Slot

from olsdesk.config import ConfigError
from olsdesk.core.data.sources import DataError
from olsdesk.core.models import WeightsError
from olsdesk.core.report import BatchProgress, EpochReport
from olsdesk.core.runs import RunError
from olsdesk.core.trainer import Trainer, TrainingError, describe_device

USER_ERRORS = (ConfigError, DataError, RunError, WeightsError, TrainingError)


class TrainingWorker(QObject):
    """Runs one Trainer in its thread and reports through signals."""

    run_started = Signal(object)  # dict: run path, class names, validation names, device
    batch_progressed = Signal(object)  # BatchProgress
    epoch_finished = Signal(object)  # EpochReport
    failed = Signal(str)  # one sentence for the user
    finished = Signal(str)  # "finished", "stopped" or "failed"

    def __init__(self, trainer: Trainer, progress_interval: float = 0.05) -> None:
        super().__init__()
        self.trainer = trainer
        self.progress_interval = progress_interval

    @Slot()
    def run(self) -> None:
        """Prepare and train; every outcome ends with ``finished``."""
        status = "failed"
        try:
            self.trainer.prepare()
            info = self.trainer.store.info()
            self.run_started.emit({
                "path": self.trainer.store.path, "class_names": info["class_names"],
                "validation_names": info["validation_names"],
                "device": describe_device(self.trainer.device),
                "start_epoch": self.trainer.start_epoch, "epochs": self.trainer.config.epochs,
                "train_images": len(self.trainer.dataset.train),
            })
            last = 0.0
            for item in self.trainer.fit():
                if isinstance(item, EpochReport):
                    self.epoch_finished.emit(item)
                elif isinstance(item, BatchProgress):
                    now = time.monotonic()
                    if now - last >= self.progress_interval or item.batch == item.batches:
                        last = now
                        self.batch_progressed.emit(item)
            status = "stopped" if self.trainer.stopped else "finished"
        except USER_ERRORS as exc:
            self.failed.emit(str(exc))
        except MemoryError:
            self.failed.emit("training ran out of memory; try a smaller batch or image size.")
        except RuntimeError as exc:  # CUDA out of memory and other torch failures
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "out of memory" in text.lower():
                text = "the GPU ran out of memory; try a smaller batch or image size."
            self.failed.emit(f"training stopped: {text}")
        except OSError as exc:
            self.failed.emit(f"training stopped: a file could not be read or written ({exc}).")
        finally:
            self.finished.emit(status)

    def request_stop(self) -> None:
        self.trainer.request_stop()

    def pause(self) -> None:
        self.trainer.pause()

    def resume(self) -> None:
        self.trainer.resume_training()
