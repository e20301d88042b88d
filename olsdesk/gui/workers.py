"""The one way olsdesk runs work off the GUI thread.

``start_worker(fn, *args, yielded=…, returned=…, errored=…, finished=…)`` calls ``fn``
in a new ``QThread``. A plain function's result
arrives through ``returned``; a generator's items through ``yielded`` (optionally
thinned to a few a second, so a fast loop never floods the GUI thread), then
``returned`` with None. Items that ``hold`` selects are handed over and the job waits
(at most ``hold_timeout`` seconds) until the GUI thread has taken them in and drawn what
they changed: an epoch's end is then drawn without the job's next epoch competing for
the CPU and the GIL. A user error (``OlsdeskError``) arrives through ``errored`` as one
sentence; programming errors are not swallowed but logged with their traceback.
Every worker ends with ``finished``, after which its thread is joined and dropped.

Stop and pause live in the work itself (``threading.Event``s checked every batch,
never queued signals). ``shutdown_workers()`` asks every live worker to stop and joins
its thread: the window calls it once when it closes.
"""

from __future__ import annotations

import gc
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, QTimer, Signal, Slot

from olsdesk.errors import OlsdeskError, first_line

log = logging.getLogger(__name__)
_LIVE: set[Worker] = set()


def user_message(exc: BaseException) -> str:
    """One sentence for an exception a long job can end with."""
    if isinstance(exc, OlsdeskError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "the job ran out of memory; try a smaller batch or image size."
    if isinstance(exc, OSError):
        return f"a file could not be read or written ({exc})."
    text = first_line(exc)
    if "out of memory" in text.lower():  # CUDA's RuntimeError
        return "the GPU ran out of memory; try a smaller batch or image size."
    return f"{type(exc).__name__}: {text}"


class _Runner(QObject):
    """Lives in the worker thread and runs the job there."""

    yielded = Signal(object)
    returned = Signal(object)
    errored = Signal(str)
    finished = Signal()

    def __init__(self, fn: Callable, args: tuple, throttle, interval: float, hold,
                 hold_timeout: float) -> None:
        super().__init__()
        self.fn, self.args, self.throttle, self.interval = fn, args, throttle, interval
        self.hold, self.hold_timeout = hold, hold_timeout
        self.taken = threading.Event()  # set by the GUI thread once a held item is drawn

    @Slot()
    def run(self) -> None:
        try:
            result = self.fn(*self.args)
            if inspect.isgenerator(result):
                last = 0.0
                for item in result:
                    if self.throttle is not None and self.throttle(item):
                        now = time.monotonic()
                        if now - last < self.interval:
                            continue
                        last = now
                    held = self.hold is not None and self.hold(item)
                    self.taken.clear()
                    self.yielded.emit(item)
                    if held:
                        self.taken.wait(self.hold_timeout)
                result = None
            self.returned.emit(result)
        except (OlsdeskError, MemoryError, OSError, RuntimeError) as exc:
            if not isinstance(exc, OlsdeskError):
                log.warning("background job failed", exc_info=exc)
            self.errored.emit(user_message(exc))
        except Exception as exc:  # a bug: keep the app alive, show it, log the traceback
            log.exception("background job failed")
            self.errored.emit(user_message(exc))
        finally:
            self.finished.emit()


class Worker(QObject):
    """Lives in the GUI thread and re-emits there what the job reports, so any slot,
    lambdas included, runs on the GUI thread."""

    yielded = Signal(object)
    returned = Signal(object)
    errored = Signal(str)  # one sentence for the user
    finished = Signal()

    def __init__(self, fn: Callable, *args, throttle: Callable[[object], bool] | None = None,
                 interval: float = 0.05, stop: Callable[[], None] | None = None,
                 hold: Callable[[object], bool] | None = None,
                 hold_timeout: float = 0.5) -> None:
        super().__init__()
        self.stop = stop
        self.thread = QThread()
        self._runner = _Runner(fn, args, throttle, interval, hold, hold_timeout)
        self._runner.moveToThread(self.thread)
        self.thread.started.connect(self._runner.run)
        # quit() is thread-safe; a direct call lets the GUI thread join the thread at once
        self._runner.finished.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        self.finished.connect(self.thread.wait)  # first: joined before any other slot runs
        for mine, theirs in ((self.yielded, self._runner.yielded),
                             (self.returned, self._runner.returned),
                             (self.errored, self._runner.errored),
                             (self.finished, self._runner.finished)):
            theirs.connect(mine)  # queued: the runner lives in the other thread
        if hold is not None:  # after the slots above: released once they have drawn
            self._runner.yielded.connect(self._release_when_drawn)

    def _release_when_drawn(self, item) -> None:
        """The slots have taken ``item`` in. What they scheduled (a selection in the next
        turn of the event loop, then the repaints that follow it) runs before the job is
        released, two turns later, the repaints still waiting then done first: painted
        while the job goes on, the first drawing of a 165-class run shared the GIL with
        the loader's start and froze the window for 60-70 ms."""
        if self._runner.hold(item):
            QTimer.singleShot(0, self, lambda: QTimer.singleShot(0, self, self._release))

    def _release(self) -> None:
        QCoreApplication.sendPostedEvents()
        self._runner.taken.set()

    @property
    def running(self) -> bool:
        return self.thread.isRunning()

    def _forget(self) -> None:
        _LIVE.discard(self)

    def quit(self) -> None:
        """Ask the work to stop (if it can), then join the thread."""
        if self.stop is not None:
            self.stop()
        self._runner.taken.set()  # not held for a drawing nobody waits for
        self.thread.quit()
        self.thread.wait()
        _LIVE.discard(self)


def start_worker(fn: Callable, *args, yielded: Callable | None = None,
                 returned: Callable | None = None, errored: Callable | None = None,
                 finished: Callable | None = None, **options) -> Worker:
    """A Worker running ``fn(*args)``, its signals connected to the given slots before it
    starts (so not even the fastest job's result is missed)."""
    worker = Worker(fn, *args, **options)
    for signal, slot in ((worker.yielded, yielded), (worker.returned, returned),
                         (worker.errored, errored), (worker.finished, finished)):
        if slot is not None:
            signal.connect(slot)
    worker.finished.connect(worker._forget)  # last: the live set keeps it until then
    _LIVE.add(worker)
    worker.thread.start()
    return worker


def in_chunks(items: Iterable, size: int) -> Iterator[list]:
    """Lists of up to ``size`` consecutive items, each as soon as it is full: what a
    job yields so the GUI thread gets a few signals a second, not one an item."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def live_workers() -> list[Worker]:
    return [w for w in _LIVE if w.running]


def shutdown_workers() -> None:
    """Stop and join every worker still running (the window's close)."""
    for worker in list(_LIVE):
        worker.quit()


class MainThreadGarbageCollector(QObject):
    """Python's cyclic garbage collector, run on the GUI thread only.

    Left automatic, a collection can start in whichever thread allocates at that moment;
    a worker thread that collects a dead Qt widget (pyqtgraph items live in reference
    cycles) destroys it off the GUI thread, which can deadlock against the GUI thread
    or crash. While started, automatic collection is off and a timer collects here, a
    generation at a time, as the thresholds would have (pyqtgraph recommends the same).
    """

    def __init__(self, interval_ms: int = 1000, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.collect)
        self.was_enabled = gc.isenabled()

    def start(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()
        self.timer.start()

    def freeze_startup(self) -> None:
        """Collect once, then leave everything alive now (PyTorch, SciPy, the window:
        about 450,000 objects) out of all later collections. A full collection walked
        them all, 245 ms on the GUI thread, the worst stall while training; after this it
        walks only what was made since."""
        gc.collect()
        gc.freeze()

    def stop(self) -> None:
        self.timer.stop()
        gc.collect()  # what is dead now dies here, on the GUI thread
        if self.was_enabled:
            gc.enable()

    def collect(self) -> None:
        counts, thresholds = gc.get_count(), gc.get_threshold()
        for generation in (2, 1, 0):
            if counts[generation] > thresholds[generation]:
                gc.collect(generation)
                return


def next_turn_timer(owner: QObject, slot: Callable[[], None]) -> QTimer:
    """A single-shot zero timer calling ``slot``: it fires once the events waiting are
    handled (a paint they caused among them), where a queued call would run straight after
    them as one stall of the window. ``start()`` it to ask; asking twice calls once."""
    timer = QTimer(owner)
    timer.setSingleShot(True)
    timer.setInterval(0)
    timer.timeout.connect(slot)
    return timer
