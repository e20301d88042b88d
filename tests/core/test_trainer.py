"""Trainer.fit(): reports, run directory, stop/pause, resume, unreadable files."""

import json
import os
import sys
import threading

import numpy as np
import pytest
import torch

from olsdesk.config import RunConfig
from olsdesk.core.device import choose_device
from olsdesk.core.losses import OnlineLabelSmoothing
from olsdesk.core.report import BatchProgress, EpochReport
from olsdesk.core.runs import RunError, RunStore, load_checkpoint
from olsdesk.core.trainer import EPOCH_END_NICE, Trainer, TrainingError
from tests.helpers import make_class_folder, truncate

TINY = dict(demo_per_class=8, image_size=32, batch_size=16, epochs=2, device="cpu",
            embedding_samples=20, val_fraction=0.3)


def run_all(trainer):
    items = list(trainer.fit())
    return [i for i in items if isinstance(i, EpochReport)], items


@pytest.fixture(scope="module")
def ols_run(tmp_path_factory):
    trainer = Trainer(RunConfig(loss="ols", **TINY), runs_dir=tmp_path_factory.mktemp("runs"))
    reports, items = run_all(trainer)
    return trainer, reports, items


def test_fit_yields_progress_then_one_report_per_epoch(ols_run):
    trainer, reports, items = ols_run
    assert [r.epoch for r in reports] == [1, 2]
    assert isinstance(items[0], BatchProgress)
    phases = {i.phase for i in items if isinstance(i, BatchProgress)}
    assert phases == {"train", "validate"}
    r = reports[-1]
    k = 12
    assert r.soft_labels.shape == (k, k) and r.mean_prediction.shape == (k, k)
    assert 0 <= r.val_top1 <= r.val_top5 <= 1 and 0 <= r.train_top1 <= r.train_top5 <= 1
    for value in (r.ece, r.mce, r.adaptive_ece, r.classwise_ece, r.val_brier, r.val_nll):
        assert np.isfinite(value) and value >= 0
    assert r.reliability_counts.sum() == len(trainer.dataset.val)
    assert r.confidence_histogram.sum() == len(trainer.dataset.val)
    assert r.embedding.shape == (20, 2) and len(r.embedding_labels) == 20
    assert r.images_per_second > 0 and r.epoch_seconds > 0
    assert r.class_names[0] == "CT/lung/normal"


def test_ols_matrix_in_reports_is_what_the_loss_trained_against(ols_run):
    _, reports, _ = ols_run
    # epoch 1 trains against the uniform start; epoch 2 against the matrix OLS built
    np.testing.assert_allclose(reports[0].soft_labels, 1 / 12)
    np.testing.assert_allclose(reports[1].soft_labels.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(reports[1].soft_labels, 1 / 12)


def test_reports_are_read_only(ols_run):
    with pytest.raises(ValueError):
        ols_run[1][0].soft_labels[0, 0] = 5.0


def test_run_directory_round_trips_the_reports(ols_run):
    trainer, reports, _ = ols_run
    path = trainer.store.path
    assert {"config.json", "run.json", "metrics.jsonl", "log.txt"} <= {p.name for p in path.iterdir()}
    assert len((path / "metrics.jsonl").read_text().splitlines()) == 2
    assert RunConfig.from_json((path / "config.json").read_text()) == trainer.config
    assert json.loads((path / "run.json").read_text())["status"] == "finished"
    loaded = RunStore.load(path)
    assert [r.epoch for r in loaded] == [1, 2]
    for a, b in zip(loaded, reports, strict=True):
        assert a.scalars() == pytest.approx(b.scalars(), nan_ok=True)
        for name, array in a.arrays().items():
            np.testing.assert_array_equal(array, b.arrays()[name])


def test_checkpoint_is_safe_to_load_and_complete(ols_run):
    trainer, _, _ = ols_run
    checkpoint = load_checkpoint(trainer.store.checkpoint_path())
    assert checkpoint.epoch == 2 and len(checkpoint.class_names) == 12
    assert checkpoint.preprocessing.image_size == 32
    fresh = OnlineLabelSmoothing(12)
    fresh.load_state_dict(checkpoint.loss)  # strict: the loss's whole state is there
    np.testing.assert_allclose(fresh.soft_labels.sum(dim=1).numpy(), 1.0, atol=1e-5)
    # the file really loads with the safe unpickler
    torch.load(trainer.store.checkpoint_path(), weights_only=True)
    assert (trainer.store.path / "checkpoints" / "best.pt").exists()


def test_resume_continues_as_if_never_interrupted(tmp_path):
    config = RunConfig(loss="ols", **{**TINY, "epochs": 3})
    straight, _ = run_all(Trainer(config, runs_dir=tmp_path / "a"))

    first = Trainer(config, runs_dir=tmp_path / "b")
    fit = first.fit()
    for item in fit:
        if isinstance(item, EpochReport) and item.epoch == 2:
            break
    fit.close()  # interrupted after two epochs
    assert json.loads((first.store.path / "run.json").read_text())["status"] == "stopped"
    resumed = Trainer.from_run(first.store.path)
    rest, _ = run_all(resumed)
    assert [r.epoch for r in rest] == [3]
    assert rest[0].val_top1 == straight[2].val_top1
    assert rest[0].train_loss == pytest.approx(straight[2].train_loss, rel=1e-6)
    np.testing.assert_allclose(rest[0].soft_labels, straight[2].soft_labels, rtol=1e-6)
    assert [r.epoch for r in RunStore.load(first.store.path)] == [1, 2, 3]


def test_stop_is_honoured_within_one_batch(tmp_path):
    trainer = Trainer(RunConfig(**{**TINY, "batch_size": 4}), runs_dir=tmp_path)
    seen = 0
    for _ in trainer.fit():
        seen += 1
        if seen == 2:
            trainer.request_stop()
        assert seen <= 3, "training went on more than one batch after the stop"
    assert trainer.stopped
    assert not (trainer.store.path / "metrics.jsonl").exists()


class StepClock:
    """A clock that moves 1 ms each time it is read, and as far as a test says."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def test_pause_blocks_until_resumed_and_is_not_counted_as_training_time(tmp_path):
    clock = StepClock()
    trainer = Trainer(RunConfig(**{**TINY, "epochs": 1}), runs_dir=tmp_path, clock=clock)
    fit = trainer.fit()
    next(fit)
    trainer.pause()
    got = []
    worker = threading.Thread(target=lambda: got.append(next(fit)))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive() and not got  # paused: no batch comes
    clock.now += 1000.0  # a long pause, on the trainer's clock
    trainer.unpause()
    worker.join(10)
    assert got
    reports = [r for r in fit if isinstance(r, EpochReport)]
    assert trainer.paused_seconds >= 1000.0
    # the epoch's time is its clock readings (1 ms each), never the 1000 s paused
    assert 0 < reports[-1].epoch_seconds < 1.0
    last = [i for i in got if isinstance(i, BatchProgress)]
    assert all(p.elapsed_seconds < 1.0 for p in last)


def test_each_loss_trains_and_fixed_matrices_are_reported(tmp_path):
    for loss in ("ce", "ls", "tfkd"):
        reports, _ = run_all(Trainer(RunConfig(loss=loss, **{**TINY, "epochs": 1}),
                                     runs_dir=tmp_path))
        s = reports[0].soft_labels
        np.testing.assert_allclose(s.sum(axis=1), 1.0, atol=1e-5)
        assert (np.argmax(s, axis=1) == np.arange(12)).all()


def test_unreadable_files_are_skipped_counted_and_logged(tmp_path):
    root = make_class_folder(tmp_path / "data", {"a": 6, "b": 6})
    truncate(root / "a" / "img001.png", 0.3)
    (root / "b" / "img002.png").write_text("not a png")
    cfg = RunConfig(data=str(root), image_size=16, batch_size=4, epochs=1, device="cpu",
                    val_fraction=0.34, num_workers=0)
    trainer = Trainer(cfg, runs_dir=tmp_path / "runs")
    reports, _ = run_all(trainer)
    assert reports[0].skipped_files == 2
    log = (trainer.store.path / "log.txt").read_text()
    assert "img001.png" in log and "img002.png" in log
    # the audit saw them first: run.json and the log name the file it could not read
    audit = json.loads((trainer.store.path / "run.json").read_text())["audit"]
    assert audit["files"] == {"train": 6, "val": 4, "test": 2}
    assert audit["unreadable_files"] >= 1 and "cannot be read" in log


def test_sgd_step_schedule_and_lr_reported(tmp_path):
    cfg = RunConfig(**{**TINY, "epochs": 3}, optimizer="sgd", lr=0.01, schedule="step")
    reports, _ = run_all(Trainer(cfg, runs_dir=tmp_path))
    # x0.1 at round(0.45 * 3) = 1 and round(0.8 * 3) = 2
    assert [r.lr for r in reports] == pytest.approx([0.01, 0.001, 0.0001])


def test_nan_loss_becomes_a_training_error(tmp_path):
    trainer = Trainer(RunConfig(**TINY), runs_dir=tmp_path)
    trainer.prepare()
    trainer.loss_fn.forward = lambda logits, y: logits.sum() * float("nan")
    with pytest.raises(TrainingError, match="loss became nan"):
        list(trainer.fit())


def test_resume_against_other_classes_is_refused(tmp_path):
    trainer = Trainer(RunConfig(**{**TINY, "epochs": 1}), runs_dir=tmp_path)
    run_all(trainer)
    data = make_class_folder(tmp_path / "other", {"x": 4, "y": 4})
    cfg = json.loads((trainer.store.path / "config.json").read_text())
    cfg["data"] = str(data)
    (trainer.store.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match="other classes"):
        Trainer.from_run(trainer.store.path).prepare()


@pytest.mark.parametrize("cuda,mps,auto", [(False, False, "cpu"), (True, False, "cuda"),
                                           (False, True, "mps"), (True, True, "cuda")])
def test_device_auto_prefers_cuda_then_mps_and_absent_devices_are_refused(monkeypatch, cuda,
                                                                           mps, auto):
    from olsdesk.config import ConfigError
    from olsdesk.core import device

    monkeypatch.setattr(device, "accelerators", lambda: {"cuda": cuda, "mps": mps})
    assert choose_device("auto").type == auto
    assert choose_device("cpu").type == "cpu"
    for name, present in (("cuda", cuda), ("mps", mps)):
        if present:
            assert choose_device(name).type == name
        else:
            with pytest.raises(ConfigError, match="CUDA" if name == "cuda" else "MPS"):
                choose_device(name)


@pytest.mark.slow
def test_ols_on_the_demo_set_grows_within_modality_blocks(tmp_path):
    """The demo set's promise: confusions stay inside a modality, so S is block-diagonal."""
    cfg = RunConfig(loss="ols", demo_per_class=40, image_size=48, epochs=3, device="cpu")
    reports, _ = run_all(Trainer(cfg, runs_dir=tmp_path))
    s = reports[-1].soft_labels
    np.testing.assert_allclose(s.sum(axis=1), 1.0, atol=1e-5)
    modality = np.arange(12) // 4
    same = modality[:, None] == modality[None, :]
    off_diagonal = same & ~np.eye(12, dtype=bool)
    # mean soft label on another finding of the same modality (3 a row) vs on a class
    # of another modality (8 a row)
    within = (s * off_diagonal).sum() / off_diagonal.sum()
    across = (s * ~same).sum() / (~same).sum()
    assert within > 2 * across, (within, across)


def test_a_batch_of_one_image_is_left_out_not_a_batchnorm_crash(tmp_path):
    """#22 item 9: 24 training images in batches of 23 left a last batch of one, and
    ResNet's BatchNorm raised at the end of the epoch's work."""
    cfg = RunConfig(model="resnet18", demo_per_class=4, image_size=32, batch_size=23,
                    epochs=1, device="cpu", num_workers=0)
    trainer = Trainer(cfg, runs_dir=tmp_path)
    reports, _ = run_all(trainer)
    assert len(trainer.dataset.train) == 24 and len(reports) == 1
    assert "a batch of one image was left out" in (trainer.store.path / "log.txt").read_text()


def test_loader_workers_and_a_resume_mid_run_train_on_exactly_the_same_inputs(tmp_path):
    """#22 item 3: with loader workers (persistent, seeded once) a resumed run's next
    epoch differed from the uninterrupted one's. The crops and flips are now seeded by
    (seed, epoch, image), the shuffle by (seed, epoch): no worker count or restart shows."""
    root = make_class_folder(tmp_path / "data", {"a": 12, "b": 12, "c": 12}, size=40)
    base = dict(data=str(root), image_size=32, batch_size=8, epochs=3, device="cpu",
                loss="ols")

    def losses(runs, workers, stop_after=None):
        trainer = Trainer(RunConfig(**base, num_workers=workers), runs_dir=runs,
                          run_name="r")
        out = []
        for item in trainer.fit():
            if hasattr(item, "val_top1"):
                out.append(item.train_loss)
                if stop_after is not None and item.epoch == stop_after:
                    trainer.request_stop()
        trainer.close()
        return out

    straight = losses(tmp_path / "a", 0)
    assert losses(tmp_path / "b", 2) == straight  # two loader processes: the same numbers
    first = losses(tmp_path / "c", 2, stop_after=1)
    resumed = Trainer.from_run(tmp_path / "c" / "r", dataset=None)
    rest = [item.train_loss for item in resumed.fit() if hasattr(item, "val_top1")]
    resumed.close()
    assert first[:1] + rest == straight


def _split_of(trainer):
    from olsdesk.core.data.sources import sample_names

    data = trainer.dataset
    return sample_names(data.train), sample_names(data.val), sample_names(data.test)


def test_a_resumed_run_keeps_its_recorded_split_when_files_were_added(tmp_path):
    """Adding files between two sessions re-split the data: recorded test and validation
    images landed in training while run.json still named the old split."""
    import json

    from olsdesk.core.runs import SPLIT, TRAIN_NAMES

    data = make_class_folder(tmp_path / "data", {"a": 12, "b": 12, "c": 12})
    config = RunConfig(**{**TINY, "epochs": 1, "batch_size": 8}, data=str(data))
    first = Trainer(config, runs_dir=tmp_path / "runs")
    run_all(first)
    recorded = _split_of(first)
    info = first.store.info(names=True)
    assert (info.validation_names, info.test_names) == recorded[1:]
    assert first.store.train_names() == recorded[0]
    # 5 new images a class: today the same seed splits the folder differently
    make_class_folder(tmp_path / "new", {"a": 5, "b": 5, "c": 5}, seed=1)
    for new in (tmp_path / "new").rglob("*.png"):
        new.rename(data / new.parent.name / f"new_{new.name}")
    from olsdesk.core.data.sources import open_dataset

    today = open_dataset(config)
    assert set(today.train.paths) & (set(recorded[1]) | set(recorded[2]))  # it re-splits
    resumed = Trainer.from_run(first.store.path, epochs=2)
    reports, _ = run_all(resumed)
    assert [r.epoch for r in reports] == [2]
    assert _split_of(resumed) == recorded
    sentence = ("the data changed since the run started (15 files added since are left out): "
                "the run keeps the split it recorded (")
    assert any(w.startswith(sentence) for w in resumed.dataset.warnings)
    assert sentence in (first.store.path / "log.txt").read_text()
    # evaluate without --data scores the test images the run held out, not today's split,
    # read from its record (the files added since are no test image of it: nothing to say)
    from olsdesk.core.data.sources import sample_names
    from olsdesk.core.evaluation import open_test_split
    from olsdesk.core.predictor import Predictor

    test, _, said = open_test_split(Predictor.from_checkpoint(
        resumed.store.checkpoint_path("latest.pt"), device="cpu"))
    assert sample_names(test) == recorded[2] and said == []
    # a run of olsdesk 0.3 (format 1: run.json names the held-out images, nothing the
    # training ones): its held-out images stay held out, the files added since train
    # with it, and the sentence says so; the names move out of run.json
    run_json = first.store.path / "run.json"
    old = {**json.loads(run_json.read_text()), "format": 1,
           "validation_names": list(recorded[1]), "test_names": list(recorded[2])}
    run_json.write_text(json.dumps(old))
    (first.store.path / SPLIT).unlink()
    (first.store.path / TRAIN_NAMES).unlink()
    older = Trainer.from_run(first.store.path, epochs=3)
    older.prepare()
    train, val, test = _split_of(older)
    older.close()
    assert (val, test) == recorded[1:]
    first.store.set_status("stopped")  # its first rewrite of run.json
    assert first.store.split_names() == {"validation": recorded[1], "test": recorded[2]}
    assert first.store.train_names() is None
    assert "validation_names" not in json.loads(run_json.read_text())
    everything = set(today.train.paths) | set(today.val.paths) | set(today.test.paths)
    assert set(train) == everything - set(val + test)
    assert any("predates olsdesk recording its training files" in w
               for w in older.dataset.warnings)


def test_a_run_name_cannot_leave_the_runs_folder(tmp_path):
    for name in ("../../x", "/tmp/abs", "a/b", "..", " "):
        with pytest.raises(RunError, match="is not a folder name"):
            Trainer(RunConfig(**TINY), runs_dir=tmp_path / "runs", run_name=name).prepare()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not (tmp_path.parent / "x").exists()


class HeldEpochEnd:
    """Holds the analysis of each epoch end until the test releases it, so what the
    trainer does meanwhile (the next epoch's training) can be watched. The epoch end runs
    beside the next epoch as on a GPU (on the CPU, by default, it runs in line)."""

    def __init__(self, monkeypatch) -> None:
        self.release = threading.Event()
        self.threads: list[tuple[str, int]] = []  # (name, nice value) of each epoch end's
        report = Trainer._report

        def held(trainer, *args):
            self.threads.append((threading.current_thread().name,
                                 os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
                                 if sys.platform.startswith("linux") else EPOCH_END_NICE))
            assert self.release.wait(30), "the test never released the epoch end"
            return report(trainer, *args)

        monkeypatch.setattr(Trainer, "_report", held)


def _into_epoch_2(tmp_path):
    """A 2-epoch run whose epoch end runs beside training, at epoch 2's first step."""
    trainer = Trainer(RunConfig(**{**TINY, "batch_size": 4}), runs_dir=tmp_path)
    trainer.epoch_end_beside = True
    fit = trainer.fit()
    items = []
    while _train_steps(items, 2) < 1:
        items.append(next(fit))
    return trainer, fit


def _train_steps(items, epoch):
    return sum(isinstance(i, BatchProgress) and i.phase == "train" and i.epoch == epoch
               for i in items)


def test_the_epoch_end_runs_beside_the_next_epoch_on_the_weights_it_ended_with(tmp_path,
                                                                                monkeypatch):
    held = HeldEpochEnd(monkeypatch)
    trainer = Trainer(RunConfig(**{**TINY, "batch_size": 4, "epochs": 3}), runs_dir=tmp_path)
    trainer.epoch_end_beside = True
    items, ended_with = [], None
    for item in trainer.fit():
        items.append(item)
        if isinstance(item, BatchProgress) and item.phase == "validate" \
                and item.batch == item.batches and item.epoch == 1:
            ended_with = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        if _train_steps(items, 2) == 3:  # epoch 2 trained three steps while epoch 1 ended
            held.release.set()
            trainer.request_stop()  # the run stops within epoch 2, after epoch 1's end
    reports = [i for i in items if isinstance(i, EpochReport)]
    assert [r.epoch for r in reports] == [1]
    # on its own thread, at the lowest priority: training's threads go first for the CPU
    (name, nice), = held.threads
    assert name.startswith("olsdesk-epoch-end") and nice == EPOCH_END_NICE
    assert items.index(reports[0]) > [i for i, x in enumerate(items)
                                      if isinstance(x, BatchProgress) and x.epoch == 2][2]
    assert trainer.stopped
    saved = load_checkpoint(trainer.store.checkpoint_path("latest.pt"))
    assert saved.epoch == 1 and saved.best_top1 == reports[0].val_top1
    assert saved.temperature == reports[0].temperature == trainer.temperature
    # the checkpoint holds the weights epoch 1 ended with, not what epoch 2 made of them
    assert all(torch.equal(saved.model[k], v) for k, v in ended_with.items())
    live = trainer.model.state_dict()
    assert not all(torch.equal(live[k], v) for k, v in ended_with.items())
    assert [r.epoch for r in RunStore.load(trainer.store.path)] == [1]
    resumed = Trainer.from_run(trainer.store.path)  # the stop let the run go: it resumes
    rest, _ = run_all(resumed)
    assert [r.epoch for r in rest] == [2, 3]


def test_a_paused_run_still_shows_the_epoch_that_ended_before_the_pause(tmp_path, monkeypatch):
    held = HeldEpochEnd(monkeypatch)
    trainer, fit = _into_epoch_2(tmp_path)
    trainer.pause()
    got = []
    worker = threading.Thread(target=lambda: got.append(next(fit)))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive() and not got  # paused, and epoch 1's end still running
    held.release.set()
    worker.join(10)
    assert not worker.is_alive() and isinstance(got[0], EpochReport) and got[0].epoch == 1
    assert trainer.pause_event.is_set()  # it came while the run stayed paused
    trainer.unpause()
    assert [r.epoch for r in got + list(fit) if isinstance(r, EpochReport)] == [1, 2]


def test_closing_the_fit_waits_for_the_epoch_end_so_its_checkpoint_is_whole(tmp_path,
                                                                             monkeypatch):
    held = HeldEpochEnd(monkeypatch)
    trainer, fit = _into_epoch_2(tmp_path)
    threading.Timer(0.3, held.release.set).start()
    fit.close()  # as the CLI does on Ctrl-C
    assert load_checkpoint(trainer.store.checkpoint_path("latest.pt")).epoch == 1
    assert [r.epoch for r in RunStore.load(trainer.store.path)] == [1]
    assert json.loads((trainer.store.path / "run.json").read_text())["status"] == "stopped"
    assert [r.epoch for r in run_all(Trainer.from_run(trainer.store.path))[0]] == [2]


def test_on_the_cpu_the_epoch_end_runs_in_line_before_the_next_epoch(tmp_path):
    """Training keeps a CPU's cores busy: an epoch end beside it would only come late."""
    trainer = Trainer(RunConfig(**{**TINY, "batch_size": 4}), runs_dir=tmp_path)
    reports, items = run_all(trainer)
    assert trainer.epoch_end_beside is False
    first = items.index(reports[0])
    assert all(i.epoch == 1 for i in items[:first])
    assert isinstance(items[first + 1], BatchProgress) and items[first + 1].epoch == 2



def test_a_validation_pass_refills_the_last_ones_array_only_once_its_epoch_end_is_done(
        tmp_path, monkeypatch):
    """The probabilities' array (135,000 x 165 float64 is 178 MB, its first touch up to
    0.5 s an epoch) is the last pass's again when that epoch's end is done: every epoch
    in line on the CPU. An epoch end still reading it beside training keeps it whole:
    the next pass gets a new one."""
    release = threading.Event()
    seen = []  # each epoch end's: (its array, its values on entry, its values when it reads)
    report = Trainer._report

    def watched(trainer, epoch, *args):
        probs = args[6]["probs"]
        on_entry = probs.copy()
        if trainer.epoch_end_beside and epoch == 0:  # held while epoch 2 validates
            assert release.wait(30), "the test never released the epoch end"
        seen.append((probs, on_entry, probs.copy()))
        return report(trainer, epoch, *args)

    monkeypatch.setattr(Trainer, "_report", watched)
    in_line = Trainer(RunConfig(**{**TINY, "epochs": 3}), runs_dir=tmp_path / "in line")
    run_all(in_line)
    assert np.shares_memory(seen[0][0], seen[1][0]) and np.shares_memory(seen[1][0], seen[2][0])
    assert not np.array_equal(seen[0][2], seen[2][2])  # refilled: the model learnt meanwhile
    assert in_line._last_probabilities is None  # let go with the run
    seen.clear()
    beside = Trainer(RunConfig(**{**TINY, "epochs": 3}), runs_dir=tmp_path / "beside")
    beside.epoch_end_beside = True
    for item in beside.fit():
        if isinstance(item, BatchProgress) and (item.epoch, item.phase) == (2, "validate") \
                and item.batch == item.batches:
            release.set()  # epoch 2 validated while epoch 1's end was held
    assert release.is_set() and len(seen) == 3
    assert not np.shares_memory(seen[1][0], seen[0][0])
    assert np.array_equal(seen[0][1], seen[0][2])  # epoch 1's, untouched while it was read


def test_validation_softmax_in_blocks_is_bit_for_bit_a_batch_at_a_time():
    """The validation pass's logits go through softmax and log-sum-exp in blocks of rows
    once it is done: the same bits as a batch at a time (as prediction computes them),
    across blocks and a short last one."""
    from olsdesk.core.trainer import SOFTMAX_ROWS, _softmax

    logits = (np.random.default_rng(3).normal(size=(2 * SOFTMAX_ROWS + 100, 165)) * 6
              ).astype(np.float32)
    probs = logits.astype(np.float64)  # one process's: float64 from the start
    energy = _softmax(probs)
    for start in range(0, len(logits), 64):
        batch = torch.from_numpy(logits[start:start + 64])
        want = torch.softmax(batch, dim=1).numpy().astype(np.float64)
        want /= want.sum(axis=1, keepdims=True)
        assert np.array_equal(probs[start:start + 64], want)
        assert np.array_equal(energy[start:start + 64], torch.logsumexp(batch, dim=1).numpy())
    shard = logits.copy()  # one of several processes': float32
    assert np.array_equal(_softmax(shard), energy)
    assert np.array_equal(shard, torch.softmax(torch.from_numpy(logits), dim=1).numpy())


def test_a_compiled_run_says_it_compiles_before_its_first_step(tmp_path, monkeypatch):
    """#23 item 3: torch.compile's first step takes long (a minute for ResNet-50 on a
    GPU): the trainer says "compile" before it, once a session."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    trainer = Trainer(RunConfig(**{**TINY, "compile": True}), runs_dir=tmp_path)
    items = list(trainer.fit())
    assert len(compiled) == 1
    phases = [i.phase for i in items if isinstance(i, BatchProgress)]
    assert phases.count("compile") == 1 and phases[0] == "compile" and phases[1] == "train"
    said = next(i for i in items if isinstance(i, BatchProgress))
    assert said.batch == 0 and said.epoch == 1 and said.fraction_of_epoch == 0.0


def test_the_epoch_ends_fits_side_by_side_report_what_one_thread_reports(monkeypatch):
    """The epoch end's fits share the validation arrays on a pool of threads: none may
    write to them or to each other's state, so one thread and eight give the same report
    and the same recalibrators, conformal calibration and unfamiliar-input detector."""
    import types

    from olsdesk.core import trainer as trainer_module

    rng = np.random.default_rng(3)
    n, k, width = 1500, 12, 32
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 2.0
    logits[np.arange(n), labels] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, 400, replace=False)] = True
    val = {"probs": probs, "labels": labels, "indices": np.arange(n),
           "energy": np.log(np.exp(logits).sum(1)), "embedded": np.flatnonzero(mask),
           "features": rng.normal(size=(400, width)).astype(np.float32)}
    results = []
    for threads in (1, 8):
        monkeypatch.setattr(trainer_module, "ANALYSIS_THREADS", threads)
        stub = types.SimpleNamespace(config=RunConfig(), embed_mask=mask, dataset=types.SimpleNamespace(
            num_classes=k, class_names=[f"c{i}" for i in range(k)]))
        report = Trainer._report(stub, 0, np.eye(k), np.ones(k), 0.1, 2.0, 0.5, 0.8, val,
                                 1.0, 10.0, 0)
        results.append((vars(report), stub.temperature, stub.recalibration, stub.conformal,
                        stub.ood))
    assert np.isfinite(results[0][0]["ece_temperature_scaled"]) and results[0][1] > 0

    def same(a, b):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for key in a:
                same(a[key], b[key])
        elif isinstance(a, np.ndarray | float | int | np.floating):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b

    for one, eight in zip(*results, strict=True):
        same(one, eight)


def test_batches_finished_on_the_device_train_on_the_cpus_inputs(tmp_path, monkeypatch):
    """``device_preprocessing`` (the batches finished by ``Preprocessing.finish``, as on
    a GPU), run here on the CPU: every training and validation step's input is the CPU
    path's to float rounding, so the run's numbers are the same to 1e-4. On the CPU
    itself the setting changes nothing: its own path, bit for bit."""
    from olsdesk.core import trainer as trainer_module

    root = make_class_folder(tmp_path / "data", {"a": 10, "b": 10, "c": 10}, size=40)
    base = dict(data=str(root), image_size=32, batch_size=4, epochs=1, device="cpu",
                num_workers=0)

    def inputs(name, **extra):
        run = Trainer(RunConfig(**base, **extra), runs_dir=tmp_path / name)
        run.prepare()
        seen = []
        run.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
        reports, _ = run_all(run)
        return run, seen, reports[0]

    plain, cpu_inputs, cpu_report = inputs("plain")
    ignored, same_inputs, _ = inputs("ignored", device_preprocessing=True)
    assert not ignored.staged and not plain.staged
    assert all(torch.equal(a, b) for a, b in zip(cpu_inputs, same_inputs, strict=True))
    monkeypatch.setattr(trainer_module, "STAGED_DEVICES", ("cpu",))
    staged, staged_inputs, staged_report = inputs("staged", device_preprocessing=True)
    assert staged.staged and len(staged_inputs) == len(cpu_inputs) > 3
    for a, b in zip(cpu_inputs, staged_inputs, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
        assert b.stride() == a.stride()  # the same layout: the same convolution algorithm
    assert staged_report.train_loss == pytest.approx(cpu_report.train_loss, rel=1e-4)
    assert staged_report.val_nll == pytest.approx(cpu_report.val_nll, rel=1e-4)


def test_the_epoch_end_holds_blas_to_one_thread_and_gives_the_threads_back():
    """The fits share the cores with numpy's BLAS on one thread; a second epoch end that
    starts and ends inside the first (two trainers in one process) leaves the limit in
    force until the first ends, and then every BLAS has its threads back."""
    from threadpoolctl import threadpool_info

    from olsdesk.core.trainer import _one_blas_thread

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    assert before  # numpy's own OpenBLAS at least
    with _one_blas_thread():
        assert set(blas_threads()) == {1}
        with _one_blas_thread():
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {1}
    assert blas_threads() == before
