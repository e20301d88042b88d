"""TrainingController: starts, pauses and stops the one job that trains, in a worker.

The job is a ``Trainer`` (one run) or a ``Study`` (every loss x seed); both are driven
the same way, and both report through the controller's signals. The controller owns
the job's lifecycle; it draws nothing.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from olsdesk.core.report import BatchProgress, EpochReport, RunStarted
from olsdesk.core.study import Study
from olsdesk.core.trainer import Trainer
from olsdesk.gui.workers import Worker, start_worker


def _drive(job: Trainer | Study):
    """Yield what the job yields (a study's steps unwrapped); a Trainer announces its run
    first, as every run of a study does."""
    if isinstance(job, Study):  # as `olsdesk compare`: train, then score on the test split
        for step in job.run():
            yield step.item
        if not job.stopped and job.dataset is not None and job.dataset.test is not None:
            yield (f"Scoring every run's best checkpoint on {len(job.dataset.test):,} test "
                   "images (1,000 bootstrap resamples)…")
            job.score_on_test()
        if not job.stopped:
            job.load_results()  # here, so the report is written without reading run folders
    else:
        yield job.started()
        yield from job.fit()


def _droppable(item) -> bool:
    """Batch progress may be thinned, except an epoch's last batch."""
    return isinstance(item, BatchProgress) and item.batch != item.batches


def _drawn_first(item) -> bool:
    """A run's start and an epoch's end change every panel: the job waits until the window
    has drawn them (a few tens of milliseconds an epoch) before it goes on."""
    return isinstance(item, RunStarted | EpochReport)


class TrainingController(QObject):
    run_started = Signal(object)  # RunStarted
    batch_progressed = Signal(object)  # BatchProgress
    epoch_finished = Signal(object)  # EpochReport
    failed = Signal(str)  # one sentence for the user
    finished = Signal(str)  # "finished", "stopped" or "failed"
    state_changed = Signal(str)  # "idle", "training" or "paused"
    noted = Signal(str)  # what the job is doing, in words (a study scoring on test)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.job: Trainer | Study | None = None
        self.worker: Worker | None = None
        self.started: RunStarted | None = None  # the run training now
        self.last_status = ""
        self.last_error = ""

    @property
    def running(self) -> bool:
        return self.worker is not None

    @property
    def paused(self) -> bool:
        return self.job is not None and self.job.paused

    @property
    def study(self) -> Study | None:
        return self.job if isinstance(self.job, Study) else None

    def start(self, job: Trainer | Study) -> bool:
        """Start training ``job``; False while another job runs."""
        if self.running:
            return False
        self.job, self.started = job, None
        self.last_status = self.last_error = ""
        self.worker = start_worker(_drive, job, yielded=self._item, errored=self._failed,
                                   finished=self._finished, throttle=_droppable,
                                   hold=_drawn_first, stop=job.request_stop)
        self.state_changed.emit("training")
        return True

    def toggle_pause(self) -> None:
        if not self.running:
            return
        if self.job.paused:
            self.job.unpause()
            self.state_changed.emit("training")
        else:
            self.job.pause()
            self.state_changed.emit("paused")

    def request_stop(self) -> None:
        if self.running:
            self.job.request_stop()

    def _item(self, item) -> None:
        if isinstance(item, RunStarted):
            self.started = item
            self.run_started.emit(item)
        elif isinstance(item, BatchProgress):
            self.batch_progressed.emit(item)
        elif isinstance(item, EpochReport):
            self.epoch_finished.emit(item)
        elif isinstance(item, str) and item != "finished earlier":
            self.noted.emit(item)

    def _failed(self, message: str) -> None:
        self.last_error = message
        self.failed.emit(message)

    def _finished(self) -> None:
        job = self.job
        stopped = job.stopped if job is not None else True
        status = "failed" if self.last_error else "stopped" if stopped else "finished"
        self.worker = None
        self.last_status = status
        self.state_changed.emit("idle")
        self.finished.emit(status)
