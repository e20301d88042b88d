"""The one worker helper and the RunSession model, through their public signals."""

import threading

from PySide6.QtCore import QTimer

from olsdesk.config import RunConfig
from olsdesk.core.runs import RunStore
from olsdesk.core.trainer import Trainer
from olsdesk.errors import DataError
from olsdesk.gui.session import RunSession
from olsdesk.gui.workers import live_workers, shutdown_workers, start_worker


def test_a_generator_worker_yields_in_order_then_finishes(qtbot):
    got, ends = [], []
    start_worker(lambda n: (i * i for i in range(n)), 5, yielded=got.append,
                 returned=lambda r: ends.append(("returned", r)),
                 finished=lambda: ends.append("finished"))
    qtbot.waitUntil(lambda: "finished" in ends, timeout=5000)
    assert got == [0, 1, 4, 9, 16] and ends == [("returned", None), "finished"]
    assert not live_workers()


def test_a_user_error_arrives_as_one_sentence_and_the_thread_is_joined(qtbot):
    def fail():
        raise DataError("/data/x does not exist.")

    errors, done = [], []
    worker = start_worker(fail, errored=errors.append, finished=lambda: done.append(1))
    qtbot.waitUntil(lambda: bool(done), timeout=5000)
    assert errors == ["/data/x does not exist."] and not worker.running


def test_thinned_progress_keeps_what_may_not_be_dropped(qtbot):
    got, done = [], []
    start_worker(lambda: (i for i in range(10_000)), yielded=got.append, finished=lambda: done.append(1),
                 throttle=lambda i: i % 1000 != 999, interval=10.0)
    qtbot.waitUntil(lambda: bool(done), timeout=5000)
    assert got[0] == 0 and [i for i in got if i % 1000 == 999] == list(range(999, 10_000, 1000))
    assert len(got) == 11  # the first item, then only the ones that may not be dropped


def test_a_held_item_is_drawn_before_the_job_goes_on(qtbot):
    events, done = [], []

    def job():
        yield "epoch"
        events.append("job goes on")
        yield "batch"

    def slot(item):
        events.append(f"got {item}")
        if item == "epoch":  # drawn in a later turn of the event loop, as a session does
            QTimer.singleShot(0, lambda: QTimer.singleShot(0, lambda: events.append("drawn")))

    # released by the drawing, long before its timeout (which would fail the wait below)
    start_worker(job, yielded=slot, finished=lambda: done.append(1),
                 hold=lambda item: item == "epoch", hold_timeout=60.0)
    qtbot.waitUntil(lambda: bool(done), timeout=10_000)
    assert events == ["got epoch", "drawn", "job goes on", "got batch"]


def test_shutdown_stops_a_long_job_through_its_stop_callback(qtbot):
    stop = threading.Event()

    def forever():
        while not stop.is_set():
            yield 1
            stop.wait(0.01)

    worker = start_worker(forever, stop=stop.set)
    qtbot.waitUntil(lambda: worker.running, timeout=5000)
    shutdown_workers()
    assert not worker.running and not live_workers()


def test_a_session_follows_a_run_written_elsewhere_until_it_ends(qtbot, tmp_path):
    config = RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=2, device="cpu")
    trainer = Trainer(config, runs_dir=tmp_path)
    list(trainer.fit())
    store = RunStore(trainer.store.path)
    lines = (store.path / "metrics.jsonl").read_text().splitlines(keepends=True)
    (store.path / "metrics.jsonl").write_text(lines[0])  # as if epoch 2 were still running
    store.set_status("training")
    writer = store.lock()  # held as the training process holds it

    session = RunSession(poll_ms=50)
    added = []
    session.report_added.connect(added.append)
    assert session.open(store.path) == "training" and session.following
    qtbot.waitUntil(lambda: not session.loading, timeout=10_000)  # read in a worker
    assert [r.epoch for r in session.reports] == [1] and session.selected.epoch == 1
    (store.path / "metrics.jsonl").write_text("".join(lines))  # epoch 2 arrives
    store.set_status("finished")
    writer.release()
    # the selection follows the new epoch in the next turn of the event loop
    qtbot.waitUntil(lambda: not session.following and session.selected.epoch == 2,
                    timeout=5000)
    assert [r.epoch for r in added] == [2]
    assert session.best is max(session.reports, key=lambda r: r.val_top1)
