"""One job protocol: pause, resume and stop, from any thread, for every kind of job.

A ``Trainer`` (one run), a ``Study`` (every loss x seed) and a ``ProcessRun`` (a run
trained by torchrun's processes) each hold a ``JobControl`` and take their ``pause``,
``unpause``, ``request_stop`` and ``paused`` from ``Controlled``: the app's training
controller, the CLI and tests drive them all the same way. A study hands its control to
each trainer it creates, so a stop that arrives while it sets up the next run is seen by
that run, not lost between two. A job in other processes listens to its control and
passes each request on (the run folder's control file).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class JobControl:
    """Stop and pause as ``threading.Event``s, checked by the work every batch; a
    listener hears every request ("pause", "run" or "stop") as it is made."""

    def __init__(self, listener: Callable[[str], None] | None = None) -> None:
        self.stop_event = threading.Event()
        self.pause_event = threading.Event()
        self.listener = listener

    def _tell(self, what: str) -> None:
        if self.listener is not None:
            self.listener(what)

    def request_stop(self) -> None:
        self.stop_event.set()
        self._tell("stop")

    def pause(self) -> None:
        self.pause_event.set()
        self._tell("pause")

    def unpause(self) -> None:
        self.pause_event.clear()
        self._tell("run")

    @property
    def paused(self) -> bool:
        return self.pause_event.is_set()

    @property
    def stop_requested(self) -> bool:
        return self.stop_event.is_set()


class Controlled:
    """A job's control calls, all made through its ``control`` (a JobControl)."""

    control: JobControl

    def request_stop(self) -> None:
        """Stop within one batch; the last finished epoch's checkpoint is kept."""
        self.control.request_stop()

    def pause(self) -> None:
        self.control.pause()

    def unpause(self) -> None:
        self.control.unpause()

    @property
    def paused(self) -> bool:
        return self.control.paused

    @property
    def stop_event(self) -> threading.Event:
        return self.control.stop_event

    @property
    def pause_event(self) -> threading.Event:
        return self.control.pause_event
