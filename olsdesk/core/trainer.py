"""``Trainer.fit()``: a generator that trains and yields ``BatchProgress`` and ``EpochReport``.

The same trainer serves the app (from a worker thread), the CLI, the benchmarks and the
tests. Stop and pause are ``threading.Event``s checked at every batch. Every epoch
ends with the analysis the panels show (metrics, calibration, soft labels, a PCA of
the validation embedding), a line in the run directory and an atomic checkpoint, so a
resumed run continues exactly where the last finished epoch left it.

On a GPU that epoch end runs on a thread of its own beside the next epoch's training
(seconds at RadImageNet's validation size, while the GPU would wait): it works on a host
copy of the weights and optimiser state taken when validation ended, writes the epoch's
line and checkpoint, and its report is yielded at the first batch after it is done. One
epoch end runs at a time; the last one is waited for before ``fit()`` ends, stopped or
not. On the CPU, whose cores training already keeps busy, it runs in line.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from olsdesk.config import RunConfig
from olsdesk.core import metrics
from olsdesk.core.bootstrap import smooth_reliability_band
from olsdesk.core.calibration import (
    Recalibration,
    cross_fitted_confidence,
    fit_histogram_binning,
    fit_vector_scaling,
    temperature_fit,
)
from olsdesk.core.conformal import calibrate
from olsdesk.core.control import Controlled, JobControl
from olsdesk.core.data.loader import (
    BalancedSampler,
    EpochKeys,
    TorchSamples,
    collate,
    default_workers,
    inverse_frequency,
)
from olsdesk.core.data.sources import Dataset, open_dataset, sample_names
from olsdesk.core.data.transforms import Preprocessing
from olsdesk.core.device import (
    amp_dtype,
    choose_device,
    describe_device,
    forward_precision,
    memory_format,
)
from olsdesk.core.distributed import Context, ShardSampler
from olsdesk.core.losses import build_loss
from olsdesk.core.models import build_model
from olsdesk.core.ood import SampleGram, familiarity_parts
from olsdesk.core.projection import pca_2d
from olsdesk.core.records import Checkpoint, DatasetSummary, RunInfo, map_tensors
from olsdesk.core.report import SMOOTH_POINTS, BatchProgress, EpochReport, RunStarted
from olsdesk.core.runs import LATEST, RunStore, check_run_name, ensure_runs_dir, load_checkpoint
from olsdesk.errors import RunError, TrainingError, first_line, os_reason, printable

SMOOTH_BAND_RESAMPLES = 100  # resamples behind an epoch's smoothed reliability band
SOFTMAX_ROWS = 8192  # validation logits a block: 5.4 MB at 165 classes
EPOCH_END_NICE = 10  # the epoch-end thread's priority below training's (Linux)
STAGED_DEVICES = ("cuda", "mps")  # where device_preprocessing finishes the batches
ANALYSIS_THREADS = min(8, os.cpu_count() or 1)  # the epoch end's fits, side by side


def _lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch``: cosine to zero, or x0.1 at 45 % and
    80 % of training (the published recipe's 45 and 80 of 100 epochs)."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return 0.1 ** sum(epoch >= round(epochs * m) for m in (0.45, 0.8))
    return 1.0


class _ReadOnlyStore:
    """A run store for the processes other than rank 0 under torchrun: they read the run
    (its checkpoint, to resume) but never write it."""

    WRITES = {"log", "set_status", "write_epoch", "save_checkpoint", "save_embedding_features",
              "truncate_to", "remove_stale_temp_files", "write_config", "clear_request",
              "request"}

    def __init__(self, store: RunStore) -> None:
        self._store = store

    def __getattr__(self, name: str):
        if name in self.WRITES:
            return lambda *args, **kwargs: None
        return getattr(self._store, name)


class Trainer(Controlled):
    """Trains one run. Create (or reopen with ``from_run``), optionally ``prepare()`` to
    surface data errors early, then iterate ``fit()``. ``request_stop()``, ``pause()``
    and ``unpause()`` may be called from any thread.

    Started by torchrun (``Context.from_env``), each process trains on its shard with
    DistributedDataParallel and validates its shard; the shards are gathered so every
    process builds the same report, and only rank 0 writes the run."""

    def __init__(self, config: RunConfig, runs_dir: str | Path | None = None,
                 store: RunStore | None = None, dataset: Dataset | None = None,
                 run_name: str | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 control: JobControl | None = None) -> None:
        self.config = config.validated()
        self.control = control or JobControl()  # a study's, when it runs this trainer
        self.clock = clock  # seconds, for epoch times, speed and ETA (tests inject one)
        self.runs_dir = runs_dir
        self.store = store
        self.dataset = dataset
        self.run_name = run_name
        self.prepared = False
        self.start_epoch = 0  # epochs already done (non-zero when resuming)
        self.best_top1 = -1.0
        self.skipped: dict[str, str] = {}
        self.stopped = False
        self.lock = None  # the run's write lock, held from prepare() to the end of fit()
        self.temperature = 1.0  # fitted on the validation set at every epoch end
        self.conformal: dict = {}  # conformal.Calibration's arrays, at every epoch end too
        self.ood: dict = {}  # ood.Familiarity's arrays, likewise
        self.recalibration: dict = {}  # calibration.Recalibration's arrays, likewise
        self.new_total = False  # a resumed run given more epochs: config.json says so
        # each epoch end beside the next epoch's training; None: on a GPU, not on the CPU
        self.epoch_end_beside: bool | None = None
        self._pending: Future | None = None  # the last epoch's end, while it runs
        self._last_probabilities: np.ndarray | None = None  # the last validation pass's

    @classmethod
    def from_run(cls, run: str | Path, runs_dir: str | Path | None = None,
                 epochs: int | None = None, dataset: Dataset | None = None,
                 control: JobControl | None = None) -> Trainer:
        """A trainer that continues the stored run at ``run`` (a path or a name in
        runs_dir) from its last checkpoint; ``epochs`` sets a new total."""
        store = RunStore.find(str(run), runs_dir)
        if int(os.environ.get("RANK", "0")) > 0:  # torchrun: rank 0 holds the lock
            return cls(store.config() if epochs is None else
                       store.config().replace(epochs=epochs).validated(),
                       store=_ReadOnlyStore(store), dataset=dataset, control=control)
        lock = store.lock()  # before anything is written: one run, one writer
        try:
            config = store.config()
            done = len(store.metrics())  # a damaged run is refused before anything is written
            if not store.checkpoint_path(LATEST).exists():
                raise RunError(f"{store.path.name} has no checkpoint yet; start it again "
                               "instead.")
            if epochs is not None and epochs < done:
                raise RunError(f"{store.path.name} has trained {done} epochs already; "
                               "--epochs sets the new total, so give more than that.")
            if epochs is not None and epochs != config.epochs:
                config = config.replace(epochs=epochs).validated()
            trainer = cls(config, store=store, dataset=dataset, control=control)
            # the new total is written once the checkpoint has been restored
            trainer.new_total = config.epochs != store.config().epochs
        except BaseException:
            lock.release()
            raise
        trainer.lock = lock
        return trainer

    # --- set-up -----------------------------------------------------------------
    def prepare(self) -> None:
        """Open the data, build model, loss and optimiser, create or reopen the run."""
        if self.prepared:
            return
        cfg = self.config
        self.device = choose_device(cfg.device)
        self.dist = Context.from_env(self.device.type)
        self.device = self.dist.device(self.device)
        if self.store is None and self.dist.main:
            check_run_name(self.run_name)  # a name or a folder that cannot hold the run
            ensure_runs_dir(self.runs_dir)  # fails before the data is read
        torch.manual_seed(cfg.seed)
        if self.dataset is None:
            self.dataset = open_dataset(cfg)
        if self.store is not None:  # continued: on the split it started with
            self.dataset, changed = self._recorded_split(self.dataset)
            if changed:
                self.dataset = replace(self.dataset, warnings=self.dataset.warnings + (changed,))
                if self.dist.main:
                    self.store.log(f"warning: {changed}")
        data = self.dataset
        self.preprocessing = Preprocessing.for_size(cfg.effective_image_size, data.channels)
        # a run being continued takes its weights from its checkpoint, not from the start
        self.model = build_model(cfg.model, data.num_classes, data.channels,
                                 cfg.weights if self.store is None else None,
                                 cfg.allow_partial_weights)
        self.weights_report = self.model.weights_report
        self.batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                              for m in self.model.modules())
        if cfg.sync_bn and self.dist.active:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.memory_format = memory_format(self.device)
        self.model.to(self.device, memory_format=self.memory_format)
        # 8-bit images finished on the GPU (Preprocessing.finish); the CPU prepares its own
        self.staged = cfg.device_preprocessing and self.device.type in STAGED_DEVICES
        self.forward = self.model  # what a training step calls: DDP and compile wrap it
        if self.dist.active:
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                else None)
        if cfg.compile:
            self.forward = torch.compile(self.forward)
        self.loss_fn = build_loss(cfg.loss, data.num_classes, alpha=cfg.alpha,
                                  epsilon=cfg.epsilon, temperature=cfg.temperature,
                                  ols_init=cfg.ols_init, ols_min_correct=cfg.ols_min_correct,
                                  focal_gamma=cfg.focal_gamma,
                                  mbls_margin=cfg.mbls_margin,
                                  mbls_lambda=cfg.mbls_lambda).to(self.device)
        if cfg.class_weights:
            self.loss_fn.set_class_weights(inverse_frequency(data.train.labels,
                                                             data.num_classes))
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr,
                                             momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                               weight_decay=cfg.weight_decay)
        epochs = cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda e: _lr_factor(cfg.schedule, e, epochs))
        # float16 (a GPU without bf16) needs its gradients scaled; bf16 and float32 do not
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=amp_dtype(self.device, cfg.amp) == torch.float16)
        self.num_workers = default_workers(data.train, cfg.num_workers, self.device)
        if self.epoch_end_beside is None:  # where training leaves the CPU idle
            self.epoch_end_beside = self.device.type != "cpu"
        self._build_loaders()
        rng = np.random.default_rng(cfg.split_seed)
        n_val = len(data.val)
        keep = min(cfg.embedding_samples, n_val)
        self.embed_mask = np.zeros(n_val, dtype=bool)
        self.embed_mask[np.sort(rng.choice(n_val, keep, replace=False))] = True
        if self.store is None:
            path = None
            if self.dist.main:
                self.store = RunStore.create(self.runs_dir, cfg, self._run_info(), self.run_name,
                                             train_names=sample_names(data.train))
                self.lock = self.store.lock()
                for warning in data.all_warnings():
                    self.store.log(f"warning: {warning}")
                if self.weights_report is not None:
                    self.store.log(self.weights_report.sentence())
                path = str(self.store.path)
            path = self.dist.broadcast(path)
            if not self.dist.main:
                self.store = _ReadOnlyStore(RunStore(Path(path)))
        else:
            self.store.remove_stale_temp_files()  # ours to clean: we hold the lock
            self._restore()
            if self.new_total:
                self.store.write_config(self.config)
        self.prepared = True

    def close(self) -> None:
        """Let other processes write the run again (fit() does this when it ends)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if getattr(self, "dist", None) is not None:
            self.dist.close()

    def _recorded_split(self, data: Dataset) -> tuple[Dataset, str | None]:
        """The data split as the run recorded it when it started (files added since are
        left out, its held-out images stay held out), and a sentence when that differs
        from today's split."""
        if tuple(self.store.info().class_names) != data.class_names:
            raise RunError("the run was trained on other classes than the data found now; "
                           "point --data at the run's dataset.")
        return self.store.recorded_split(data, external_test=bool(self.config.test_data))

    def _run_info(self) -> RunInfo:
        data = self.dataset
        return RunInfo(
            class_names=data.class_names, preprocessing=self.preprocessing,
            dataset=DatasetSummary(data.source, data.kind, data.channels, len(data.train),
                                   len(data.val), data.per_class_counts(),
                                   len(data.test) if data.test is not None else 0,
                                   data.test_source),
            validation_names=sample_names(data.val), test_names=sample_names(data.test),
            device=describe_device(self.device) + (f", {self.dist.world_size} process(es) "
                                                   "under torchrun" if self.dist.active
                                                   else ""),
            weights=None if self.weights_report is None else self.weights_report.to_dict(),
            audit=None if data.audit is None else data.audit.to_dict())

    def _build_loaders(self) -> None:
        data, cfg = self.dataset, self.config
        common = dict(batch_size=cfg.batch_size, num_workers=self.num_workers,
                      collate_fn=collate, pin_memory=self.device.type == "cuda",
                      persistent_workers=self.num_workers > 0)
        self.generator = torch.Generator()
        train = TorchSamples(data.train, self.preprocessing, True, seed=cfg.seed,
                             staged=self.staged)
        if cfg.sampling == "balanced":  # classes drawn alike; a shard a process
            order = BalancedSampler(data.train.labels, data.num_classes, cfg.seed,
                                    self.dist.rank, self.dist.world_size)
        elif self.dist.active:  # a shard of the training set a process, reshuffled each epoch
            order = torch.utils.data.DistributedSampler(
                train, self.dist.world_size, self.dist.rank, shuffle=True, seed=cfg.seed)
        else:  # reshuffled each epoch by the generator, seeded from (seed, epoch)
            order = torch.utils.data.RandomSampler(train, generator=self.generator)
        # each key carries its epoch: the augmentation is seeded by (seed, epoch, image)
        self.train_sampler = EpochKeys(order)
        # no generator for the loader itself: it would draw its workers' seed from the
        # shuffle's generator when an iterator is made (every epoch without persistent
        # workers, once with them), so a resumed run would shuffle differently
        self.train_loader = DataLoader(train, sampler=self.train_sampler, **common)
        self.val_loader = DataLoader(
            TorchSamples(data.val, self.preprocessing, False, staged=self.staged),
            sampler=ShardSampler(len(data.val), self.dist.rank, self.dist.world_size),
            **common)

    def _restore(self) -> None:
        checkpoint = load_checkpoint(self.store.checkpoint_path(LATEST))
        if checkpoint.class_names != self.dataset.class_names:
            raise RunError("the run's checkpoint was trained on other classes than the data "
                           "found now; point --data at the run's dataset.")
        where = f"{self.store.path.name}/checkpoints/{LATEST}"
        if checkpoint.model_name != self.config.model:
            raise RunError(f"{where} holds weights of another model ({checkpoint.model_name}, "
                           f"the run trains {self.config.model}); the run's file is damaged "
                           "or was replaced.")
        try:
            self.model.load_state_dict(checkpoint.model)
            self.optimizer.load_state_dict(checkpoint.optimizer)
            self.scheduler.load_state_dict(checkpoint.scheduler)
            self.loss_fn.load_state_dict(checkpoint.loss)
            if checkpoint.scaler:
                self.scaler.load_state_dict(checkpoint.scaler)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # shapes, missing keys
            raise RunError(f"{where} does not fit the run's {self.config.model} "
                           f"({first_line(exc)[:160]}); the run's file is damaged or was "
                           "replaced.") from None
        self.start_epoch = checkpoint.epoch
        self.best_top1 = checkpoint.best_top1
        self.temperature = checkpoint.temperature
        self.conformal = dict(checkpoint.conformal)
        self.ood = dict(checkpoint.ood)
        self.recalibration = dict(checkpoint.recalibration)
        self.store.truncate_to(self.start_epoch)
        self.store.log(f"resumed after epoch {self.start_epoch}")

    def checkpoint(self, epoch: int, states: dict) -> Checkpoint:
        """What a checkpoint holds: enough to resume training and to predict. ``states``:
        the model's, optimiser's, scheduler's, loss's and scaler's state dicts."""
        return Checkpoint(
            epoch=epoch, model_name=self.config.model, class_names=self.dataset.class_names,
            in_channels=self.dataset.channels, preprocessing=self.preprocessing,
            config=self.config, **states, best_top1=self.best_top1, temperature=self.temperature,
            conformal=_tensors(self.conformal), ood=_tensors(self.ood),
            recalibration=_tensors(self.recalibration))

    def started(self) -> RunStarted:
        """What the run is, once prepared: the message the app and the CLI start from."""
        self.prepare()
        return RunStarted(self.store.path, self.store.info(names=True), self.start_epoch,
                          self.config.epochs)

    # --- the loop ---------------------------------------------------------------
    def fit(self) -> Iterator[BatchProgress | EpochReport]:
        """Train from the first unfinished epoch to ``config.epochs``, yielding progress."""
        self.prepare()
        self.run_started = self.clock()
        self.paused_seconds = 0.0  # time spent paused: never counted as training time
        self._requests_read, self._paused_by_request = -1.0, False
        self.store.clear_request()  # a request left from an earlier process is stale
        self.store.set_status("training")
        status = "stopped"
        self._compiled = False  # torch.compile compiles at this session's first step
        self._ending = ThreadPoolExecutor(1, thread_name_prefix="olsdesk-epoch-end",
                                          initializer=_below_training)
        try:
            for epoch in range(self.start_epoch, self.config.epochs):
                if not (yield from self._run_epoch(epoch)):
                    break
            else:
                status = "finished"
            yield from self._collect()  # the last epoch's end: its report and checkpoint
        except (GeneratorExit, KeyboardInterrupt):
            raise  # closed by its consumer: a stop, not a failure
        except BaseException as exc:
            status = "failed"
            self.store.log(f"failed: {type(exc).__name__}: {exc}")
            raise
        finally:
            self._settle_pending()
            self._last_probabilities = None
            self.stopped = status != "finished"
            try:
                self.store.clear_request()
                self.store.set_status(status)
                self.store.log(f"training {status}")
            except OSError:
                pass  # a full disk: run.json keeps 'training'; the free lock says interrupted
            self.close()

    def _read_requests(self) -> None:
        """Follow the run folder's control file (``RunStore.request``: how the app, or
        anyone, pauses and stops a run trained by another process), at most twice a
        second. Rank 0 reads it; the step's flags carry it to the other processes."""
        now = time.monotonic()
        if not self.dist.main or now - self._requests_read < 0.5:
            return
        self._requests_read = now
        what = self.store.requested()
        if what == "stop":
            self.stop_event.set()
        elif what == "pause":
            self._paused_by_request = True
            self.pause_event.set()
        elif self._paused_by_request:
            self._paused_by_request = False
            self.pause_event.clear()

    def _wait_if_paused(self):
        """Block while paused (yielding the last epoch's report if its end finishes
        meanwhile); True when a stop was requested."""
        self._read_requests()
        if self.pause_event.is_set():
            began = self.clock()
            while self.pause_event.is_set() and not self.stop_event.is_set():
                self.stop_event.wait(0.05)
                self._read_requests()
                yield from self._collect(wait=False)
            self.paused_seconds += self.clock() - began
        return self.stop_event.is_set()

    def _collect(self, wait: bool = True):
        """Yield the last epoch's report once its end has run (waiting for it unless
        ``wait`` is false); its failure is raised here, on the training thread."""
        pending = self._pending
        if pending is None or not (wait or pending.done()):
            return
        self._pending = None
        yield pending.result()

    def _settle_pending(self) -> None:
        """When ``fit()`` ends without collecting it (closed, or failed): let the last
        epoch's end finish writing, so its checkpoint is whole, then stop the thread."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except Exception as exc:  # fit() is already ending: keep its own outcome
                try:
                    self.store.log(f"the last epoch's end failed: {first_line(str(exc))}")
                except OSError:
                    pass
        self._ending.shutdown()

    def _since(self, started: float, paused_then: float) -> float:
        """Seconds of work since ``started``, less the pauses since then."""
        return self.clock() - started - (self.paused_seconds - paused_then)

    def _note_failures(self, failed, samples) -> None:
        for index, message in failed:
            name = samples.describe(index)
            if name not in self.skipped:
                self.skipped[name] = message.split("\n", 1)[0]
                self.store.log(f"skipped {name}: {message}")  # with a traceback, if any

    def _gather_failures(self) -> None:
        """Every process's skipped files, so rank 0 logs and counts them all."""
        if not self.dist.active:
            return
        for rank, skipped in enumerate(self.dist.gather(self.skipped)):
            for name, sentence in skipped.items():
                if name not in self.skipped:
                    self.skipped[name] = sentence
                    self.store.log(f"skipped {name} (in process {rank}): {sentence}")

    def _run_epoch(self, epoch: int):
        cfg, device = self.config, self.device
        # Seed from (seed, epoch) alone: a resumed run draws the same batches and crops.
        torch.manual_seed(cfg.seed * 100_003 + epoch + 7_919 * self.dist.rank)
        self.generator.manual_seed(cfg.seed * 100_019 + epoch)
        self.train_sampler.set_epoch(epoch)
        soft_labels = self.loss_fn.soft_labels.detach().cpu().numpy().copy()
        counts = getattr(self.loss_fn, "row_counts", None)  # OLS: what built each row
        row_counts = (counts.detach().cpu().numpy().copy() if counts is not None
                      else np.zeros(0))
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        self.loss_fn.train()
        # loss x images, top-1 hits, top-5 hits: summed on the device, read every
        # `sync_every` steps; the image count is the host's (no copy to the device a step)
        totals = torch.zeros(3, dtype=torch.float64, device=device)
        started, paused_then = self.clock(), self.paused_seconds
        batches = len(self.train_loader)
        sync_every = 1 if device.type == "cpu" else 20
        running_loss, seen = float("nan"), 0
        for step, (images, labels, _, failed) in enumerate(self._on_device(self.train_loader),
                                                            start=1):
            self._note_failures(failed, self.dataset.train)
            stop = yield from self._wait_if_paused()
            empty = images is None
            if not empty and len(images) == 1 and self.batch_norm:
                # BatchNorm cannot normalise one image in training: the batch is left out
                # (a last batch of one, or one that unreadable files shrank), and said so
                empty = True
                self.store.log(f"epoch {epoch + 1}, step {step}: a batch of one image was "
                               "left out (BatchNorm needs two in training)")
            if self.dist.active:  # every process stops, or skips a batch, at the same step
                stop, empty = self.dist.any_of((stop, empty))
            if stop:
                return False
            if empty:
                continue
            if cfg.compile and not self._compiled:  # the first step compiles: say so first
                self._compiled = True
                yield BatchProgress(epoch + 1, cfg.epochs, "compile", 0, batches, float("nan"),
                                    0.0, self._since(self.run_started, 0.0))
            labels = labels.to(device, non_blocking=True)
            with forward_precision(device, cfg.amp):
                logits = self.forward(images)
            loss = self.loss_fn(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            with torch.no_grad():
                n = labels.numel()
                top = logits.detach().topk(min(5, logits.shape[1]), dim=1).indices
                hits = top == labels[:, None]
                totals += torch.stack([loss.detach().double() * n,
                                       hits[:, 0].sum().double(), hits.any(dim=1).sum().double()])
                seen += n
            if step % sync_every == 0 or step == batches:
                running_loss = totals[0].item() / max(seen, 1)
                if not math.isfinite(running_loss):
                    raise TrainingError(
                        f"the loss became {running_loss} in epoch {epoch + 1}; lower the "
                        "learning rate or check the data.")
            elapsed = self._since(started, paused_then)
            yield BatchProgress(epoch + 1, cfg.epochs, "train", step, batches, running_loss,
                                seen / max(elapsed, 1e-9),
                                self._since(self.run_started, 0.0))
            yield from self._collect(wait=False)
        train_seconds = self._since(started, paused_then)
        self._gather_failures()
        loss_sum, top1, top5, seen = self.dist.sum_(
            torch.cat([totals, totals.new_tensor([seen])])).tolist()
        if seen == 0:
            raise TrainingError("no training image of this epoch could be read; see log.txt.")
        self.loss_fn.next_epoch()
        self.scheduler.step()
        val = yield from self._validate(epoch)
        if val is None:
            return False
        passes_seconds = self._since(started, paused_then)
        yield from self._collect()  # one epoch end at a time: the one before, if still running
        states = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                  "scheduler": self.scheduler.state_dict(), "loss": self.loss_fn.state_dict(),
                  "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {}}
        analyse = functools.partial(
            self._report, epoch, soft_labels, row_counts, lr, loss_sum / seen, top1 / seen,
            top5 / seen, val, passes_seconds, seen / train_seconds, len(self.skipped))
        if not self.epoch_end_beside:
            yield self._end_epoch(epoch, states, analyse, val["features"])
            return True
        # what the checkpoint holds of training, as it is now: the next epoch changes it
        self._pending = self._ending.submit(self._end_epoch, epoch, _host_copy(states),
                                            analyse, val["features"])
        return True

    def _on_device(self, loader):
        """The loader's batches with their images on the device, in the layout the model
        takes (``Preprocessing.finish``). Staged batches on CUDA (``device_preprocessing``)
        are copied and finished one batch ahead on a side stream, so that work overlaps
        the step before instead of waiting for it."""
        def moved(batch):
            images, *rest = batch
            if images is None:
                return batch
            return (self.preprocessing.finish(images, self.device, self.memory_format), *rest)

        if not (self.staged and self.device.type == "cuda"):
            yield from map(moved, loader)
            return
        side, main = torch.cuda.Stream(self.device), torch.cuda.current_stream(self.device)
        ahead = None
        for batch in loader:
            with torch.cuda.stream(side):
                made = moved(batch)
                done = torch.cuda.Event()
                done.record(side)
            if ahead is not None:
                yield _handed_over(*ahead, main)
            ahead = made, done
        if ahead is not None:
            yield _handed_over(*ahead, main)

    def _end_epoch(self, epoch: int, states: dict, analyse: Callable[[], EpochReport],
                   features: np.ndarray) -> EpochReport:
        """The epoch's analysis, its line in the run and its checkpoint: in line on the
        CPU, on the epoch-end thread beside the next epoch's training on a GPU."""
        started = self.clock()
        report = analyse()
        report = replace(report, analysis_seconds=self.clock() - started)
        improved = report.val_top1 > self.best_top1
        self.best_top1 = max(self.best_top1, report.val_top1)
        try:
            self.store.write_epoch(report)
            self.store.save_checkpoint(self.checkpoint(epoch + 1, states), best=improved)
            self.store.save_embedding_features(features)
        except OSError as exc:
            what = os_reason(exc)
            where = printable(self.store.path)
            if self.store.checkpoint_path(LATEST).exists():  # what --resume continues from
                advice = (f"the checkpoint of epoch {epoch} is kept. Free some space, then "
                          f"continue with: olsdesk train --resume {where}")
            else:  # best.pt alone may be there, but a resume needs latest.pt
                advice = "no epoch was saved. Free some space, then start the run again."
            raise TrainingError(f"epoch {epoch + 1} could not be saved in {where}: {what}; "
                                f"{advice}") from None
        return report

    @torch.no_grad()
    def _validate(self, epoch: int):
        device = self.device
        self.model.eval()
        self.loss_fn.eval()
        labels, indices, feats = [], [], []
        # each batch's logits into one array (on one process already the float64 the
        # epoch end reads: at 135,000 x 165, concatenating, reordering and converting
        # them cost the training thread 0.8 s an epoch), made probabilities in blocks
        # once the pass is done: the per-batch softmax and log-sum-exp cost 0.43 s an
        # epoch more
        values = self._validation_array(
            (len(self.val_loader.sampler), self.dataset.num_classes),
            np.float32 if self.dist.active else np.float64)
        batches = len(self.val_loader)
        started, paused_then = self.clock(), self.paused_seconds
        done = 0
        stopped = False
        for step, (images, y, idx, failed) in enumerate(self._on_device(self.val_loader),
                                                        start=1):
            self._note_failures(failed, self.dataset.val)
            if (yield from self._wait_if_paused()):
                stopped = True  # shards differ in length: processes agree after the loop
                break
            if images is None:
                continue
            # as prediction and evaluate compute them (core.device's one rule)
            with forward_precision(device, self.config.amp):
                logits, features = self.model.forward_with_features(images)
            values[done:done + len(y)] = logits.float().cpu().numpy()
            labels.append(y)
            indices.append(idx)
            mask = torch.from_numpy(self.embed_mask[idx.numpy()])
            feats.append(features[mask.to(device)].float().cpu())
            done += len(y)
            yield BatchProgress(epoch + 1, self.config.epochs, "validate", step, batches,
                                float("nan"), done / max(self._since(started, paused_then), 1e-9),
                                self._since(self.run_started, 0.0))
        if self.dist.any_of((stopped,))[0]:
            return None
        self._gather_failures()
        probs = values[:done] if done else None
        shard = [probs, None if probs is None else _softmax(probs)] + [
            torch.cat(x).numpy() if x else None for x in (labels, indices, feats)]
        shards = [s for s in self.dist.gather(shard) if s[0] is not None]
        if not shards:
            raise TrainingError("no validation image could be read; see log.txt.")
        # every image once, in image order, whichever process validated it (one process
        # validates in image order: nothing to copy)
        prob, energy, label, index, feat = (parts[0] if len(parts) == 1 else np.concatenate(parts)
                                            for parts in zip(*shards, strict=True))
        embedded = self.embed_mask[index]
        if (np.diff(index) < 0).any():
            order = np.argsort(index, kind="stable")
            feat = feat[np.argsort(index[embedded], kind="stable")]
            prob, label, index, energy = prob[order], label[order], index[order], energy[order]
            embedded = self.embed_mask[index]
        if prob.dtype != np.float64:  # several processes' float32 (one's rows: ``_softmax``)
            prob = prob.astype(np.float64)
            prob /= prob.sum(axis=1, keepdims=True)  # float32's rounding off each row's sum
        return {"probs": prob, "labels": label, "indices": index, "energy": energy,
                "features": feat, "embedded": index[embedded]}

    def _validation_array(self, shape: tuple[int, int], dtype) -> np.ndarray:
        """The validation pass's array: the last pass's again once that epoch's end, which
        reads it, is done (nothing else keeps it: the report takes copies), else a new
        one. A new one's first touch was 44,000 page faults, 0.5 s of the training
        thread's an epoch, at 135,000 x 165 where the kernel gave it no huge pages."""
        last, ending = self._last_probabilities, self._pending
        if (last is None or last.shape != shape or last.dtype != dtype
                or (ending is not None and not ending.done())):  # still read beside
            last = np.empty(shape, dtype)
        self._last_probabilities = last
        return last

    def _report(self, epoch, soft_labels, row_counts, lr, train_loss, train_top1,
                train_top5, val, seconds, images_per_second, skipped_files) -> EpochReport:
        cfg, k = self.config, self.dataset.num_classes
        probs, labels = val["probs"], val["labels"]  # rows that sum to 1 (``_validate``)
        embedded = self.embed_mask[val["indices"]]
        emb_probs, emb_labels = probs[embedded], labels[embedded]
        n_bins = cfg.calibration_bins
        features = val["features"]
        # unfamiliar inputs, from the embedded images' features (the embedding's sample):
        # six fits of a shrunk covariance (the full one and five held-out folds), one a
        # thread, from one Gram matrix of the sample, which the PCA and separation share
        gram = SampleGram(features)
        parts, familiar = familiarity_parts(val["energy"], features, emb_labels, k,
                                            seed=cfg.split_seed, gram=gram)
        # every fit below reads only these arrays, and numpy releases the GIL in its work:
        # they run on the cores together, the temperature first and beside it what needs
        # none (three fits start from it), the longest first
        with _one_blas_thread(), ThreadPoolExecutor(
                ANALYSIS_THREADS, thread_name_prefix="olsdesk-analysis") as pool:
            temperature = pool.submit(_logs_and_temperature, probs, labels)  # all of val
            familiarity = [pool.submit(part) for part in parts]
            # one of the recalibrators, which evaluate compares on test
            binned = pool.submit(fit_histogram_binning, probs, labels, n_bins)
            conf, hits = metrics.top_label(probs, labels)  # for every top-label measure
            at = {name: pool.submit(fn, *args) for name, (fn, *args) in {
                "pca": (lambda: pca_2d(features, gram() if gram.wide else None),),
                "smooth": (_smooth_reliability, conf, hits, cfg.split_seed),
                "classwise": (metrics.classwise_calibration_error, probs, labels, n_bins),
                "mean": (metrics.mean_prediction_matrix, probs, labels, k),
            }.items()}
            nll = metrics.negative_log_likelihood(probs, labels)
            top1, top5 = float(hits.mean()), metrics.topk_accuracy(probs, labels, 5)
            brier = metrics.brier_score(probs, labels)
            histogram = metrics.histogram_of_confidence(conf, n_bins)
            log_probs, fitted = temperature.result()
            t = fitted.temperature
            vector = pool.submit(fit_vector_scaling, log_probs, labels, t)
            # split conformal's calibration, on the probabilities prediction shows (scaled)
            conformal = pool.submit(lambda: calibrate(log_probs, labels, seed=cfg.split_seed,
                                                      temperature=t).to_arrays())
            # honest ECE after scaling: no image scaled by a T fitted on itself
            scaled = pool.submit(cross_fitted_confidence, fitted, seed=cfg.split_seed)
            at |= {name: pool.submit(fn, *args) for name, (fn, *args) in {
                "separation": (lambda: metrics.embedding_separation(features, emb_labels,
                                                                     gram()),),
                "l2": (metrics.debiased_l2_of_confidence, conf, hits, n_bins),
                "adaptive": (metrics.adaptive_of_confidence, conf, hits, n_bins),
                "bins": (metrics.reliability_of_confidence, conf, hits, n_bins),
            }.items()}
            at = {name: future.result() for name, future in at.items()}
            self.temperature = t
            self.recalibration = Recalibration(t, *vector.result(), *binned.result()).to_arrays()
            self.conformal = conformal.result()
            scaled = scaled.result()
            self.ood = familiar([part.result() for part in familiarity]).to_arrays()
        bins, separation, (smooth, band) = at["bins"], at["separation"], at["smooth"]
        points = np.linspace(0.0, 1.0, SMOOTH_POINTS)
        return EpochReport(
            epoch=epoch + 1, epochs=cfg.epochs,
            train_loss=train_loss, train_top1=train_top1, train_top5=train_top5,
            val_top1=top1, val_top5=top5, val_nll=nll, val_brier=brier,
            ece=bins.ece, mce=bins.mce, adaptive_ece=at["adaptive"],
            classwise_ece=at["classwise"],
            temperature=self.temperature,
            ece_temperature_scaled=metrics.ece_of_confidence(scaled, hits, n_bins),
            silhouette=separation.silhouette, intra_inter_ratio=separation.intra_inter_ratio,
            lr=lr, epoch_seconds=seconds, images_per_second=images_per_second,
            skipped_files=skipped_files,
            soft_labels=soft_labels, soft_label_counts=row_counts,
            mean_prediction=at["mean"],
            reliability_counts=bins.counts, reliability_accuracy=bins.accuracy,
            reliability_confidence=bins.confidence,
            confidence_histogram=histogram,
            embedding=at["pca"].astype(np.float32),
            embedding_indices=val["embedded"],
            embedding_labels=emb_labels,
            embedding_predictions=emb_probs.argmax(axis=1),
            embedding_confidences=emb_probs.max(axis=1).astype(np.float32),
            class_names=self.dataset.class_names,
            smooth_ece=smooth.value, smooth_bandwidth=smooth.bandwidth,
            l2_ce_debiased=at["l2"],
            smooth_confidence=points,
            smooth_accuracy=np.interp(points, smooth.confidence,
                                      np.where(smooth.supported, smooth.accuracy, np.nan)),
            smooth_band=np.vstack([np.interp(points, smooth.confidence,
                                             np.where(smooth.supported, b, np.nan))
                                   for b in band]),
        )


def _softmax(values: np.ndarray) -> np.ndarray:
    """A validation pass's float32 logits (held as float32 or float64) made, in place,
    the probabilities prediction computes from them (a float32 softmax), and their
    energies (the log-sum-exp) returned; as float64, each row divided by its sum
    (float32's rounding off it). 8,192 rows at a time: a block's results stay in the
    cache and reuse one allocation."""
    energy = np.empty(len(values), np.float32)
    for start in range(0, len(values), SOFTMAX_ROWS):
        rows = slice(start, start + SOFTMAX_ROWS)
        block = torch.from_numpy(values[rows].astype(np.float32, copy=False))
        energy[rows] = torch.logsumexp(block, dim=1).numpy()
        values[rows] = torch.softmax(block, dim=1).numpy()
        if values.dtype == np.float64:
            values[rows] /= values[rows].sum(axis=1, keepdims=True)
    return energy


def _logs_and_temperature(probs: np.ndarray, labels: np.ndarray):
    """(the log-probabilities, clipped where they underflow; the temperature's fit on
    them): the first task of the epoch end's pool, so the other core starts at once."""
    log_probs = np.clip(probs, 1e-12, None)
    np.log(log_probs, out=log_probs)
    return log_probs, temperature_fit(log_probs, labels)


def _smooth_reliability(conf: np.ndarray, hits: np.ndarray, seed: int):
    """The smoothed reliability curve and its band of resamples."""
    smooth = metrics.smooth_reliability(conf, hits)
    return smooth, smooth_reliability_band(conf, hits, smooth.bandwidth,
                                           SMOOTH_BAND_RESAMPLES, seed=seed)


def _handed_over(batch: tuple, done, stream) -> tuple:
    """A batch made on a side stream, for ``stream``: it waits for the batch's work
    (``done``), and the allocator keeps the images' memory until ``stream`` is through."""
    stream.wait_event(done)
    if batch[0] is not None:
        batch[0].record_stream(stream)
    return batch


def _tensors(arrays: dict) -> dict:
    """numpy arrays as tensors (what ``torch.load(weights_only=True)`` reads back)."""
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in arrays.items()}


_blas = threading.Lock()
_blas_limit = {"users": 0, "limit": None}  # one limit while any epoch end's pool runs


@contextlib.contextmanager
def _one_blas_thread():
    """numpy's BLAS on one thread while the epoch end's fits share the cores: its threads
    would take the cores from the other fits and spin while they wait (vector scaling's
    Hessian products, 0.30 s of CPU alone, took 0.56 s beside them). Counted, so that two
    trainers' epoch ends at once give the threads back once, when the last one is done."""
    from threadpoolctl import threadpool_limits

    with _blas:
        if not _blas_limit["users"]:
            _blas_limit["limit"] = threadpool_limits(1, user_api="blas")
        _blas_limit["users"] += 1
    try:
        yield
    finally:
        with _blas:
            _blas_limit["users"] -= 1
            if not _blas_limit["users"]:
                _blas_limit.pop("limit").restore_original_limits()


def _below_training() -> None:
    """The epoch-end thread at a lower priority than training (Linux: a thread's own nice
    value, 10: about a tenth of a core that training's threads want): it runs mostly on
    what training leaves idle instead of taking a core from its threads (whose parallel
    regions would then wait for the one it took), and has the CPU to itself while
    training waits for it. Elsewhere it runs at training's priority."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), EPOCH_END_NICE)
        except OSError:
            pass


def _host_copy(state):
    """A state dict's copy on the host, tensors and all: what training goes on changing
    cannot reach it."""
    return map_tensors(state, lambda t: t.detach().to("cpu", copy=True), copy.deepcopy)
