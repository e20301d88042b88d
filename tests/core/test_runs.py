"""The run folder: files as the user's umask makes them, and the incremental follower."""

import sys

import numpy as np
import pytest

from olsdesk.config import RunConfig
from olsdesk.core.runs import RunFollower, RunStore
from olsdesk.core.trainer import Trainer


def test_run_files_are_written_with_the_users_umask(tmp_path):
    import os
    import stat

    from olsdesk.core.runs import FILE_MODE, atomic_write_bytes

    old = os.umask(0o022)
    os.umask(old)
    assert FILE_MODE == 0o666 & ~old
    atomic_write_bytes(tmp_path / "run.json", b"{}")
    with open(tmp_path / "metrics.jsonl", "w") as fh:  # as open() makes them
        fh.write("\n")
    modes = {stat.S_IMODE((tmp_path / name).stat().st_mode)
             for name in ("run.json", "metrics.jsonl")}
    assert modes == {FILE_MODE}


def test_a_resumed_run_cut_back_is_read_again_from_the_start(tmp_path):
    config = RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=2, device="cpu")
    trainer = Trainer(config, runs_dir=tmp_path)
    list(trainer.fit())
    store = RunStore(trainer.store.path)
    follower = RunFollower(store)
    first = follower.read(with_status=False)
    assert [r.epoch for r in first.reports] == [1, 2] and not first.reset
    assert follower.read(with_status=False).reports == []  # nothing new
    store.truncate_to(1)  # what a resume from epoch 1 does
    again = follower.read(with_status=False)
    assert again.reset and [r.epoch for r in again.reports] == [1]
    # a half-written line waits for the next read
    with open(store.path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, ')
    assert follower.read(with_status=False).reports == []


def test_the_reader_reads_each_epoch_once_and_lists_a_broken_run_as_damaged(tmp_path,
                                                                             monkeypatch):
    from olsdesk.core.runs import RunReader, list_runs

    config = RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=2, device="cpu")
    trainer = Trainer(config, runs_dir=tmp_path)
    list(trainer.fit())
    path = trainer.store.path
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "run.json").write_text("{}")
    listed = {item.path: item for item in list_runs(tmp_path)}
    assert listed[broken].status == "damaged"  # listed with its sentence, not lost
    item = listed[path]
    assert item.epochs_done == 2 and item.status == "finished" and item.notes == ""
    assert item.best_top1 == max(m["val_top1"] for m in RunStore(path).metrics())

    loads = []
    real = RunFollower._report

    def counted(self, scalars, with_arrays=True):
        loads.append((scalars["epoch"], with_arrays))
        return real(self, scalars, with_arrays)

    monkeypatch.setattr(RunFollower, "_report", counted)
    reader = RunReader()
    first = reader.reports([path])[path]
    assert [r.epoch for r in first] == [1, 2]
    assert [r.epoch for r in reader.reports([path])[path]] == [1, 2]
    # every epoch's scalars, the final epoch's arrays; shown again: nothing read again
    assert loads == [(1, False), (2, False), (2, True)]
    whole = RunStore(path).load_reports()
    assert [r.scalars() for r in first] == [r.scalars() for r in whole]
    for name in ("reliability_counts", "reliability_accuracy", "reliability_confidence",
                 "confidence_histogram"):  # what Compare draws of the final epoch
        np.testing.assert_array_equal(getattr(first[-1], name), getattr(whole[-1], name))
        assert getattr(first[0], name).size == 0
    # nothing it does not draw: a run's memory does not grow with classes or images
    assert first[-1].soft_labels.size == first[-1].embedding.size == 0
    RunStore(path).truncate_to(1)
    assert [r.epoch for r in reader.reports([path])[path]] == [1]
    assert reader.reports([broken]) == {broken: []}  # unreadable: nothing, no exception
    reader.keep_only([])
    assert reader.reports([path])[path][0].epoch == 1  # forgotten, then read afresh


def test_a_listing_whose_files_are_unchanged_is_kept_and_a_changed_one_read_again(tmp_path):
    import dataclasses
    import os

    from olsdesk.core.runs import list_runs, read_listing

    config = RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=1, device="cpu")
    trainer = Trainer(config, runs_dir=tmp_path)
    list(trainer.fit())
    path = trainer.store.path
    first = {item.path: item for item in list_runs(tmp_path)}
    again = {item.path: item for item in list_runs(tmp_path, first)}
    assert again[path] is first[path]  # nothing changed: not read again
    metrics = path / "metrics.jsonl"
    line = metrics.read_text().splitlines()[0]
    metrics.write_text(line + "\n" + line.replace('"epoch": 1', '"epoch": 2') + "\n")
    os.utime(metrics, ns=(0, 1))  # even with an old time, the size differs
    changed = {item.path: item for item in list_runs(tmp_path, again)}
    assert changed[path] is not again[path] and changed[path].epochs_done == 2
    # a run marked training is read every time: its lock frees with no file changing
    training = dataclasses.replace(changed[path], status="training")
    assert list_runs(tmp_path, {path: training})[0] is not training
    assert read_listing(path).signature == ()  # read alone: no signature to trust


def test_a_listing_reads_the_summary_while_it_describes_metrics_jsonl(tmp_path, monkeypatch):
    import json
    import os

    from olsdesk.core.runs import SUMMARY, list_runs

    config = RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=3, device="cpu")
    trainer = Trainer(config, runs_dir=tmp_path)
    list(trainer.fit())
    store = trainer.store
    metrics = store.path / "metrics.jsonl"
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]

    def expected(records):
        return (len(records), max(r["val_top1"] for r in records), records[-1]["ece"])

    def listed():
        item = list_runs(tmp_path)[0]
        assert item.problem == "", item.problem
        return item.epochs_done, item.best_top1, item.final_ece

    parsed = []
    real = RunStore.parse_metrics
    monkeypatch.setattr(RunStore, "parse_metrics",
                        lambda self, *a, **k: parsed.append(1) or real(self, *a, **k))
    assert listed() == expected(lines) and parsed == []  # summary.json alone, nothing parsed
    # another tool appends an epoch: the size differs, metrics.jsonl is parsed
    extra = {**lines[-1], "epoch": 4, "val_top1": 1.0, "ece": 0.5}
    with open(metrics, "a") as fh:
        fh.write(json.dumps(extra) + "\n")
    assert listed() == expected(lines + [extra]) and parsed == [1]
    # the same size, written after summary.json: parsed too
    text = metrics.read_text()
    metrics.write_text(text.replace('"val_top1": 1.0', '"val_top1": 0.0'))
    future = os.stat(store.path / SUMMARY).st_mtime_ns + 10**9
    os.utime(metrics, ns=(future, future))
    assert listed() == expected(lines + [{**extra, "val_top1": 0.0}])
    # cut back for a resume: the summary follows
    store.truncate_to(1)
    parsed.clear()
    assert listed() == expected(lines[:1]) and parsed == []
    # a damaged summary.json or none (a run from before it): metrics.jsonl, not damaged
    (store.path / SUMMARY).write_text("{garbage")
    assert listed() == expected(lines[:1]) and parsed == [1]
    (store.path / SUMMARY).unlink()
    assert listed() == expected(lines[:1])
    store.write_summary()
    parsed.clear()
    assert listed() == expected(lines[:1]) and parsed == []


def test_a_damaged_run_is_listed_as_damaged_with_its_sentence(tmp_path):
    import json
    import shutil

    from olsdesk.core.runs import list_runs

    config = RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=1, device="cpu")
    trainer = Trainer(config, runs_dir=tmp_path / "runs")
    list(trainer.fit())
    good = trainer.store.path
    stored = json.loads((good / "config.json").read_text())
    damage = {
        "data-null": ("config.json", json.dumps({**stored, "data": None})),
        "string-lr": ("config.json", json.dumps({**stored, "lr": "0.1"})),
        "config-list": ("config.json", "[]"),
        "run-garbage": ("run.json", "{garbage"),
        "metrics-empty": ("metrics.jsonl", "{}\n"),
        "metrics-list": ("metrics.jsonl", "[1, 2]\n"),
        "metrics-strings": ("metrics.jsonl", '{"epoch": "1", "val_top1": "x", "ece": 1}\n'),
        "metrics-bytes": ("metrics.jsonl", b"\xff\xfe\x00garbage\n"),
    }
    for name, (file, content) in damage.items():
        folder = tmp_path / "runs" / name
        shutil.copytree(good, folder)
        target = folder / file
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    (good / "notes.md").write_bytes("Réunion: a = 0.5".encode("cp1252"))  # not UTF-8
    listed = {item.path.name: item for item in list_runs(tmp_path / "runs")}
    assert set(listed) == set(damage) | {good.name}  # every run listed, none lost
    assert listed[good.name].problem == "" and listed[good.name].epochs_done == 1
    assert listed[good.name].notes.startswith("R") and "0.5" in listed[good.name].notes
    for name, (file, _) in damage.items():
        item = listed[name]
        assert item.config is None and item.status == "damaged", name
        assert f"{name}/{file}" in item.problem and item.problem.endswith("."), item
        assert "\n" not in item.problem, item


@pytest.mark.skipif(sys.platform == "win32", reason="fork and kill -9")
def test_a_killed_writer_frees_its_run_at_once_though_its_loader_workers_live_on(tmp_path):
    """#22 item 3: a flock belongs to the open file a fork shares, so data-loader workers
    orphaned by kill -9 held the run's lock for seconds and --resume named a dead process.
    Here the writer forks a child that outlives it by 30 s; the lock is free at once."""
    import signal
    import subprocess
    import textwrap
    import time

    from olsdesk.core.runs import RunLock

    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from olsdesk.core.runs import RunLock
        lock = RunLock(Path({str(tmp_path)!r})).acquire()
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        print("locked", flush=True)
        time.sleep(60)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True, start_new_session=False)
    try:
        assert writer.stdout.readline().strip() == "locked"
        assert RunLock.holder(tmp_path) is not None
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        time.sleep(0.2)
        assert RunLock.holder(tmp_path) is None
    finally:
        writer.kill()
        subprocess.run(["pkill", "-f", str(tmp_path)], check=False)


@pytest.mark.parametrize("content", [b"not gzip", None, b'{"validation": [1, 2], "test": []}',
                                     b'["a.png"]'])
def test_a_damaged_split_file_is_one_sentence_and_run_json_alone_still_reads(tmp_path,
                                                                            content):
    import gzip

    from olsdesk.core.data.transforms import Preprocessing
    from olsdesk.core.records import DatasetSummary, RunInfo
    from olsdesk.core.runs import SPLIT
    from olsdesk.errors import RunError

    info = RunInfo(("a", "b"), Preprocessing(), DatasetSummary("d", "folder", 1, 2, 1),
                   validation_names=("a/1.png",), test_names=("b/2.png",))
    store = RunStore.create(tmp_path, RunConfig(), info, name="r", train_names=["a/0.png"])
    assert store.info(names=True).validation_names == ("a/1.png",)
    (store.path / SPLIT).write_bytes(
        gzip.compress(b"{") if content is None else
        content if content == b"not gzip" else gzip.compress(content))
    with pytest.raises(RunError, match=r"^r/split.json.gz is damaged: the run's split cannot "
                                       r"be read \(.+\)\.$"):
        store.info(names=True)
    assert store.info().class_names == ("a", "b")  # what Compare and the follower read
    store.set_status("stopped")  # a status change does not touch the names
    assert store.info().status == "stopped"
