"""RunSession: the run the window shows, as a model with signals and no widgets.

A live run (reports arriving from the training worker), a finished run replayed from
disk and a run followed while something else trains it (another process, torchrun, a
cluster job writing to a shared folder) all fill the same session. Panels subscribe
to its signals and only draw; nothing here computes a metric.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from olsdesk.core.records import RunInfo
from olsdesk.core.report import EpochReport, RunStarted, best_report
from olsdesk.core.runs import RunStore
from olsdesk.errors import RunError


class RunSession(QObject):
    """The run being shown: where it is, what run.json says, its reports, the epoch chosen."""

    run_changed = Signal(object)  # RunInfo, or None when cleared
    reports_reset = Signal(list)  # every report so far (on a new or reopened run)
    report_added = Signal(object)  # EpochReport, appended
    epoch_selected = Signal(object)  # EpochReport or None: the epoch the views show
    following_changed = Signal(str)  # the run's status while followed, "" when not

    def __init__(self, poll_ms: int = 2000, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path: Path | None = None
        self.info: RunInfo | None = None
        self.reports: list[EpochReport] = []
        self.position = 0  # 1-based index of the selected epoch; 0 when none
        self.store: RunStore | None = None  # set while following a run on disk
        self._select_pending = False  # the latest epoch is to be selected (add_report)
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    # --- filling it ----------------------------------------------------------------
    def clear(self) -> None:
        self.stop_following()
        self._select_pending = False
        self.path, self.info, self.reports, self.position = None, None, [], 0
        self.run_changed.emit(None)
        self.reports_reset.emit([])
        self.epoch_selected.emit(None)

    def begin(self, started: RunStarted) -> None:
        """A run the app trains now; its reports arrive through ``add_report``."""
        self.stop_following()
        self._select_pending = False
        self.path, self.info, self.reports, self.position = started.path, started.info, [], 0
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
            QTimer.singleShot(0, self, self._select_latest)

    def _select_latest(self) -> None:
        if self._select_pending:  # unless the user chose an epoch meanwhile
            self.select(len(self.reports))

    def open(self, path: str | Path) -> str:
        """Replay a run from disk, and keep following it while its status is 'training'.
        Returns its status; RunError says why the folder cannot be shown."""
        store = RunStore.open(path)
        try:
            reports, info, status = store.load_reports(), store.info(), store.status
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"{Path(path).name} cannot be read ({exc}).") from None
        self.stop_following()
        self.path, self.info, self.reports, self.position = store.path, info, list(reports), 0
        self.run_changed.emit(info)
        self.reports_reset.emit(list(reports))
        self.select(len(reports))
        if status == "training":  # a process holds it: follow what it writes
            self.store = store
            self._timer.start()
            self.following_changed.emit(status)
        return status

    def poll(self) -> None:
        """Read what a followed run has written since the last look."""
        if self.store is None:
            return
        try:
            reports, status = self.store.load_reports(), self.store.status
        except (OSError, ValueError, KeyError, RunError):
            return  # half-written or briefly unreadable: look again next time
        for report in reports[len(self.reports):]:
            self.add_report(report)
        if status != "training":
            self.stop_following()
        self.following_changed.emit(status if status == "training" else "")

    def stop_following(self) -> None:
        self._timer.stop()
        self.store = None

    @property
    def following(self) -> bool:
        return self.store is not None

    # --- the chosen epoch ------------------------------------------------------------
    def select(self, position: int) -> None:
        """Show epoch ``position`` (1-based, clipped to the epochs there are)."""
        self._select_pending = False
        position = max(1, min(position, len(self.reports))) if self.reports else 0
        self.position = position
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
