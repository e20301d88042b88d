"""RunSession: the run the window shows, as a model with signals and no widgets.

A live run (reports arriving from the training worker), a finished run replayed from
disk and a run followed while something else trains it (another process, torchrun, a
cluster job writing to a shared folder) all fill the same session. Panels subscribe
to its signals and only draw; nothing here computes a metric.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from olsdesk.core.records import RunInfo
from olsdesk.core.report import EpochReport, RunStarted, best_report
from olsdesk.core.runs import RunFollower, RunStore, RunUpdate
from olsdesk.core.state import AppState, ShownRun
from olsdesk.errors import RunError
from olsdesk.gui.workers import Worker, next_turn_timer, start_worker


def follow_run(follower: RunFollower, stop: threading.Event, poll_s: float):
    """Off the GUI thread: the run as it stands, then what it gains every ``poll_s``
    seconds while it is training (as long as nobody sets ``stop``)."""
    update = follower.read()
    yield update
    while update.status == "training" and not stop.wait(poll_s):
        try:
            update = follower.read()
        except (OSError, ValueError, KeyError, RunError):
            continue  # briefly unreadable (a file being replaced): look again next time
        if update.reports or update.reset or update.status != "training":
            yield update


class RunSession(QObject):
    """The run being shown: where it is, what run.json says, its reports, the epoch chosen."""

    run_changed = Signal(object)  # RunInfo, or None when cleared
    reports_reset = Signal(list)  # every report so far (on a new or reopened run)
    report_added = Signal(object)  # EpochReport, appended
    epoch_selected = Signal(object)  # EpochReport or None: the epoch the views show
    following_changed = Signal(str)  # the run's status while followed, "" when not
    run_planned = Signal(int)  # the epochs a run the app starts will train, before any

    loaded = Signal(int)  # a run opened from disk has been read (its epoch count)
    follow_failed = Signal(str)  # the run folder could not be read, in one sentence

    def __init__(self, state: AppState | None = None, poll_ms: int = 2000,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state or AppState()  # the run on show, and the epoch chosen
        self.poll_ms = poll_ms
        self._stop = threading.Event()
        self._follower: Worker | None = None
        self.loading = False  # a run opened from disk is still being read
        self.opened_status = ""  # its status when it was opened
        self.path: Path | None = None
        self.info: RunInfo | None = None
        self.reports: list[EpochReport] = []
        self.position = 0  # 1-based index of the selected epoch; 0 when none
        self.store: RunStore | None = None  # set while reading or following a run on disk
        self._select_pending = False  # the latest epoch is to be selected (add_report)
        # after the events waiting (the curves' paint among them): never back to back
        self._select_timer = next_turn_timer(self, self._select_latest)

    # --- filling it ----------------------------------------------------------------
    def clear(self) -> None:
        self.stop_following()
        self._select_pending = False
        self.path, self.info, self.reports, self.position = None, None, [], 0
        self.state.set_run(None)
        self.run_changed.emit(None)
        self.reports_reset.emit([])
        self.epoch_selected.emit(None)

    def begin(self, started: RunStarted) -> None:
        """A run the app trains now; its reports arrive through ``add_report``."""
        self.stop_following()
        self._select_pending = False
        self.path, self.info, self.reports, self.position = started.path, started.info, [], 0
        self.state.set_run(ShownRun(started.path, started.info))
        self.run_planned.emit(started.epochs)
        self.run_changed.emit(self.info)
        self.reports_reset.emit([])
        self.epoch_selected.emit(None)

    def add_report(self, report: EpochReport) -> None:
        """Append an epoch; the selection follows it when it was on the latest epoch, in
        the next turn of the event loop: the views of every epoch (curves) and those of
        the chosen one (heatmap, reliability, embedding) then redraw in two events, not
        in one that stalls the window at an epoch's end."""
        following = self.position == len(self.reports) or self._select_pending
        self.reports.append(report)
        self.report_added.emit(report)
        if following:
            self._select_pending = True
            self._select_timer.start()

    def _select_latest(self) -> None:
        if self._select_pending:  # unless the user chose an epoch meanwhile
            self.select(len(self.reports))

    def open(self, path: str | Path) -> str:
        """Replay a run from disk, and keep following it while its status is 'training'.
        Returns its status; RunError says why the folder cannot be shown. run.json is
        read here; the epochs arrive from a worker (``RunFollower``: each epoch read
        once), so a long run never blocks the window while it is read or followed."""
        store = RunStore.open(path)
        try:
            info, status = store.info(names=True), store.status
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"{Path(path).name} cannot be read ({exc}).") from None
        self.stop_following()
        self._select_pending = False
        self.path, self.info, self.reports, self.position = store.path, info, [], 0
        self.state.set_run(ShownRun(store.path, info))
        self.run_changed.emit(info)
        self.reports_reset.emit([])
        self.epoch_selected.emit(None)
        self.store, self.opened_status = store, status
        self._stop.clear()
        self.loading = True
        self._follower = start_worker(
            follow_run, RunFollower(store), self._stop, self.poll_ms / 1000,
            yielded=lambda update, store=store: self._arrived(store, update),
            errored=lambda message, store=store: self._follow_failed(store, message),
            finished=lambda store=store: self._follow_ended(store), stop=self._stop.set)
        if status == "training":
            self.following_changed.emit(status)
        return status

    def _arrived(self, store: RunStore, update: RunUpdate) -> None:
        if store is not self.store:
            return  # a run no longer shown
        first, self.loading = self.loading, False
        if first or update.reset:  # the whole run (again): one reset, the last epoch shown
            self.reports = self.reports if not update.reset else []
            self.reports.extend(update.reports)
            self.reports_reset.emit(list(self.reports))
            self.select(len(self.reports))
            self.loaded.emit(len(self.reports))
        else:
            for report in update.reports:
                self.add_report(report)
        if update.status != "training" and self.opened_status == "training":
            self.following_changed.emit("")  # followed while training, now ended

    def _follow_failed(self, store: RunStore, message: str) -> None:
        if store is self.store:
            self.loading = False
            self.follow_failed.emit(message)

    def _follow_ended(self, store: RunStore) -> None:
        if store is self.store:
            self.store = None
            self._follower = None

    def stop_following(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.quit()  # joined: a run replaced mid-read delivers nothing more
            self._follower = None
        self.store = None
        self.loading = False

    @property
    def following(self) -> bool:
        return self.store is not None

    # --- the chosen epoch ------------------------------------------------------------
    def select(self, position: int) -> None:
        """Show epoch ``position`` (1-based, clipped to the epochs there are)."""
        self._select_pending = False
        position = max(1, min(position, len(self.reports))) if self.reports else 0
        self.position = position
        self.state.select_epoch(position)
        self.epoch_selected.emit(self.selected)

    @property
    def selected(self) -> EpochReport | None:
        return self.reports[self.position - 1] if self.position else None

    @property
    def best(self) -> EpochReport | None:
        return best_report(self.reports)

    @property
    def run_store(self) -> RunStore | None:
        return RunStore(self.path) if self.path is not None else None
