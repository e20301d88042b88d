"""A run trained by other processes, driven like a ``Trainer``.

``ProcessRun`` starts ``olsdesk train --gpus N`` (torchrun, one process a GPU) as a child
process and follows what its rank 0 writes to the run folder; pause and stop reach it
through the run's control file (``RunStore.request``), so a paused or stopped run ends
the way an in-process one does: after the batch, with the last finished epoch's
checkpoint kept. It has the Trainer's shape (``started``, ``fit``, ``stopped``) and
takes ``pause``, ``unpause``, ``request_stop`` and ``paused`` from ``core.control``, so
the app's training controller drives it unchanged.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from olsdesk.config import RunConfig
from olsdesk.core.control import Controlled, JobControl
from olsdesk.core.report import EpochReport, RunStarted
from olsdesk.core.runs import RunFollower, RunStore, ensure_runs_dir
from olsdesk.errors import TrainingError


def olsdesk_command() -> list[str]:
    """How to start olsdesk's command line again: the bundle itself, or this Python."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "olsdesk"]


class ProcessRun(Controlled):
    """``config`` trained by ``processes`` processes started with torchrun."""

    POLL_SECONDS = 0.5

    def __init__(self, config: RunConfig, processes: int, runs_dir: str | Path | None = None,
                 run_name: str | None = None) -> None:
        self.config = config.validated()
        self.processes = processes
        self.runs_dir = ensure_runs_dir(runs_dir)
        self.run_name = run_name or time.strftime(
            f"%Y%m%d-%H%M%S-{config.model}-{config.loss}-s{config.seed}-x{processes}")
        self.store: RunStore | None = None
        self.process: subprocess.Popen | None = None
        self.output: deque[str] = deque(maxlen=200)  # the child's last lines, for errors
        self.stopped = False
        # requests go on to the processes through the run folder's control file
        self.control = JobControl(listener=self._pass_on)
        self._detached = False

    @property
    def path(self) -> Path:
        return self.runs_dir / self.run_name

    def started(self) -> RunStarted:
        """Start the processes; return once rank 0 has created the run folder."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            fh.write(self.config.to_json())
            # every rank reads it, some long after rank 0 has created the run folder: it
            # is removed only when the processes have ended
            self._config_file = config_file = fh.name
        command = [*olsdesk_command(), "train", "--gpus", str(self.processes), "--config",
                   config_file, "--runs-dir", str(self.runs_dir), "--name", self.run_name]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env,
                                        errors="backslashreplace")
        self._reader = _LineReader(self.process, self.output)
        while not (self.path / "run.json").exists():
            if self.process.poll() is not None:
                self._reader.join()
                Path(config_file).unlink(missing_ok=True)
                raise TrainingError(self._failure())
            time.sleep(0.1)
        self.store = RunStore(self.path)
        return RunStarted(self.path, self.store.info(names=True), 0, self.config.epochs)

    def fit(self) -> Iterator[EpochReport]:
        """Each epoch's report as rank 0 writes it, until the processes end."""
        if self.store is None:
            self.started()
        follower, shown = RunFollower(self.store), 0
        while True:
            ended = self.process.poll() is not None
            for report in follower.read(with_status=False).reports:  # only the new epochs
                shown += 1
                yield report
            if ended or self._detached:
                break
            time.sleep(self.POLL_SECONDS)
        if self._detached:  # the processes go on without us (and keep their config file)
            self.stopped = True
            return
        self._reader.join()
        Path(self._config_file).unlink(missing_ok=True)
        try:  # a request made as the processes ended (after rank 0 cleared its own) is stale
            self.store.clear_request()
        except OSError:
            pass
        self.stopped = shown < self.config.epochs
        if self.process.returncode != 0 and not self.control.stop_requested:
            raise TrainingError(self._failure())

    def _failure(self) -> str:
        """The child's own sentence (a rank's "olsdesk: …" or the exception it died of),
        not torchrun's summary."""
        ours = [line[len("olsdesk:"):].strip() for line in self.output
                if line.startswith("olsdesk:") and "processes failed" not in line]
        raised = [line.strip() for line in self.output
                  if re.match(r"\s*[\w.]*(Error|Exception)\b.*:", line)
                  and "ChildFailedError" not in line]
        detail = (ours or raised or list(self.output)[-1:] or ["no output"])[-1]
        return (f"training with {self.processes} processes ended with exit code "
                f"{self.process.returncode}: {detail}")

    # --- control: Controlled's calls, passed on to the processes -----------------------
    def _pass_on(self, what: str) -> None:
        if self.store is not None:
            self.store.request(what)
        elif what == "stop" and self.process is not None:
            self.process.terminate()  # before the run folder exists

    def request_stop(self) -> None:
        if not self._detached:  # detached: the processes train on, as the user chose
            self.control.request_stop()

    def detach(self) -> None:
        """Stop following: ``fit`` ends and a later ``request_stop`` does nothing, while
        the processes train on (the app is closing and the user chose to leave them)."""
        self._detached = True


class _LineReader:
    """Keeps the child's last lines without ever letting its pipe fill up."""

    def __init__(self, process: subprocess.Popen, lines: deque) -> None:
        import threading

        self.thread = threading.Thread(target=self._read, args=(process, lines), daemon=True,
                                       name="olsdesk-child-output")
        self.thread.start()

    @staticmethod
    def _read(process, lines) -> None:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    def join(self) -> None:
        self.thread.join(timeout=5)
