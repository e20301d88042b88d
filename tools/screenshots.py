"""Make the README's screenshots: the real window after a few demo epochs, one per panel,
and the smoothed reliability curve, risk-coverage and unfamiliar-input views.

Run under a virtual display:  xvfb-run -s "-screen 0 1400x900x24" .venv/bin/python
tools/screenshots.py [--epochs 8] [--out docs/images] [--size 1024x700]

With --radimagenet, the views at RadImageNet's 165 classes instead (bench/radimagenet.py's
class names), at 1400 x 900, from synthetic data: the Evaluate tab of a 20,000-image
evaluation (bench/save_evaluation.py's, with mistakes within an anatomy, as a scan
classifier makes them), whole and zoomed in; the Embedding tab by anatomy and with one
class found; the Soft labels tab; and Compare with 50 runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from olsdesk.gui.app import isolated_window, wait_for
from olsdesk.gui.panels.predict import SAMPLES


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--size", default="1400x880", help="the window's size, WxH")
    parser.add_argument("--radimagenet", action="store_true",
                        help="the 165-class views of a synthetic RadImageNet evaluation")
    args = parser.parse_args()
    app = QApplication(sys.argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.radimagenet:
        return radimagenet_views(app, out)
    with tempfile.TemporaryDirectory() as tmp:
        window = isolated_window(tmp, args.epochs)
        window.resize(*(int(v) for v in args.size.split("x")))
        window.show()
        wait_for(app, lambda: window.experiment.dataset is not None)
        window.experiment.train_button.click()
        wait_for(app, lambda: not window.training and window.last_status)
        print(window.message.text())
        # the samples, and a real CT from another scanner, which the model has never seen
        # the like of: its row and its details say not to trust it
        from pydicom.data import get_testdata_file

        window.predict.predict_paths([str(SAMPLES), get_testdata_file("CT_small.dcm")])
        wait_for(app, lambda: not window.predict.busy)
        table, rows = window.predict.table, window.predict.rows
        table.sortByColumn(2, Qt.SortOrder.AscendingOrder)  # least confident first
        table.selectRow(next(r for r in range(rows.rowCount())
                             if rows.index(r, 0).data() == "CT_small.dcm"))
        wait_for(app, lambda: not window.predict.cam_busy)
        evaluation = window.evaluation
        evaluation.evaluate()
        wait_for(app, lambda: evaluation.evaluation is not None and not evaluation.busy)
        counts = evaluation.evaluation.confusion()
        np.fill_diagonal(counts, -1)  # the commonest mistake
        evaluation.browser.show_cell(*np.unravel_index(np.argmax(counts), counts.shape))
        wait_for(app, lambda: not evaluation.browser.busy)
        evaluation.browser.grid.setCurrentRow(0)
        def shoot(name: str) -> None:
            for _ in range(20):
                app.processEvents()
                time.sleep(0.02)
            window.grab().save(str(out / f"{name}.png"))
            print("wrote", out / f"{name}.png")

        for name in ("curves", "soft_labels", "reliability", "embedding", "predict",
                     "evaluation"):
            window.tabs.setCurrentWidget(getattr(window, name))
            shoot(name)
        window.tabs.setCurrentWidget(window.reliability)
        window.reliability.smoothed.setChecked(True)
        shoot("reliability_smooth")
        # the trust views: risk-coverage, and the unfamiliar-input score against images
        # nobody made for this model (handwritten digits, pydicom's own CT and MR)
        window.tabs.setCurrentWidget(evaluation)
        evaluation.views.setCurrentIndex(2)
        shoot("evaluation_risk")
        evaluation.evaluate(ood_data=unfamiliar_folder(Path(tmp) / "unfamiliar"))
        wait_for(app, lambda: evaluation.evaluation is not None and not evaluation.busy
                 and evaluation.evaluation.ood_scores is not None)
        evaluation.views.setCurrentIndex(3)
        shoot("evaluation_unfamiliar")
        window.close()
    return 0


def settle(app) -> None:
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)


def radimagenet_views(app, out: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from radimagenet import class_names
    from save_evaluation import synthetic

    from olsdesk.core.state import AppState, CheckpointRef
    from olsdesk.gui.panels.evaluation import EvaluationPanel

    ev = synthetic(20_000, 0, 20, names=class_names())
    state = AppState()
    panel = EvaluationPanel(state)
    state.set_checkpoint(CheckpointRef(ev.checkpoint, ev.epoch))
    state.set_evaluation(ev)
    panel.resize(1400, 900)
    panel.show()
    first = ev.top_confusions(limit=1)[0]
    panel.browser.show_cell(first.true, first.predicted)
    shots = {"evaluation_165": None,
             # zoomed in on MR's knee and shoulder (wheel or trackpad): the cells' counts
             "evaluation_165_zoomed": ((47, 56), (47, 56))}
    for name, zoom in shots.items():
        panel.confusion_choice.setCurrentIndex(panel.confusion_choice.findData(
            "counts" if zoom else "rates"))
        if zoom:
            panel.confusion.plot.setRange(xRange=zoom[0], yRange=zoom[1], padding=0)
        settle(app)
        panel.grab().save(str(out / f"{name}.png"))
        print("wrote", out / f"{name}.png")
    embedding_views(app, out, ev)
    soft_labels_view(app, out, ev.class_names)
    compare_view(app, out)
    from ui_latency import class_folder

    with tempfile.TemporaryDirectory() as tmp:  # 12 synthetic 32 px images a class
        data = class_folder(str(Path(tmp) / "data"), 165, 12)
        predict_view(app, out, data)
        data_view(app, out, data)
    return 0


def data_view(app, out: Path, data: str) -> None:
    """The window with a 165-class folder opened: the data summary a line an anatomy."""
    with tempfile.TemporaryDirectory() as tmp:
        window = isolated_window(str(Path(tmp) / "app"))
        window.resize(1400, 900)
        window.show()
        wait_for(app, lambda: window.experiment.dataset is not None)
        window.experiment.set_data(data)
        wait_for(app, lambda: window.experiment.dataset is not None
                 and window.experiment.dataset.num_classes == 165)
        settle(app)
        window.grab().save(str(out / "data_165.png"))
        print("wrote", out / "data_165.png")
        window.close()


def predict_view(app, out: Path, data: str) -> None:
    """The Predict tab with a model of RadImageNet's 165 classes (trained 10 epochs on 12
    synthetic 32 px images a class) over images of eight classes and a digit it never saw
    the like of: long names in the list and the details, its prediction set, the flag."""
    from olsdesk.config import RunConfig
    from olsdesk.core.runs import BEST
    from olsdesk.core.state import AppState, CheckpointRef
    from olsdesk.core.trainer import Trainer
    from olsdesk.gui.panels.predict import PredictPanel

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(RunConfig(data=data, image_size=32, batch_size=64, epochs=10,
                                    lr=0.05, device="cpu"), runs_dir=Path(tmp) / "runs")
        list(trainer.fit())
        state = AppState()
        panel = PredictPanel(state)
        state.set_checkpoint(CheckpointRef(str(trainer.store.checkpoint_path(BEST)), 10))
        panel.resize(1400, 900)
        panel.show()
        files = sorted(Path(data).rglob("*.png"))
        picked = [str(f) for f in files[::12][::40] + files[5::12][20:23]]
        digit = unfamiliar_folder(Path(tmp) / "unfamiliar")
        picked.append(str(next(Path(digit).rglob("*.png"))))
        panel.predict_paths(picked)
        while panel.busy:
            app.processEvents()
        panel.table.selectRow(0)
        while panel.cam_busy:
            app.processEvents()
        settle(app)
        panel.grab().save(str(out / "predict_165.png"))
        print("wrote", out / "predict_165.png")


def soft_labels_view(app, out: Path, names) -> None:
    """The Soft labels tab at 165 classes: a synthetic OLS matrix whose off-diagonal mass
    sits within each anatomy, as OLS learns it on scans."""
    from olsdesk.core.names import class_groups
    from olsdesk.gui.panels.soft_labels import SoftLabelsPanel

    of = np.asarray(class_groups(names, 2)[1])
    rng = np.random.default_rng(0)
    k = len(names)
    off = np.where(of[:, None] == of[None, :], rng.uniform(0.01, 0.08, (k, k)),
                   rng.uniform(0.0, 0.002, (k, k)))
    np.fill_diagonal(off, 0)
    matrix = 0.4 * off / off.sum(axis=1, keepdims=True) + 0.6 * np.eye(k)  # rows sum to 1

    class Report:
        epoch, epochs, class_names = 12, 30, tuple(names)
        soft_labels = mean_prediction = matrix
        soft_label_counts = rng.integers(40, 400, k)

    panel = SoftLabelsPanel()
    panel.resize(1400, 900)
    panel.show()
    panel.show_report(Report())
    settle(app)
    panel.grab().save(str(out / "soft_labels_165.png"))
    print("wrote", out / "soft_labels_165.png")


def compare_view(app, out: Path) -> None:
    """The Compare tab with 50 real run folders (bench/compare_runs.py's, 165 classes, 20
    epochs), each given a curve of its own, all selected: the list, the legend above the
    curves, scrolling."""
    import json
    import tempfile

    from compare_runs import build_runs

    from olsdesk.core.runs import RunStore
    from olsdesk.gui.panels.compare import ComparePanel

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_runs(Path(tmp), 50, 20, 165)
        for i, folder in enumerate(paths):
            top = (0.55 + 0.3 * (1 - np.exp(-np.arange(1, 21) / (4 + i % 7)))
                   + rng.normal(0, 0.01, 20))
            records = [json.loads(line) for line in
                       (folder / "metrics.jsonl").read_text().splitlines()]
            for e, record in enumerate(records):
                record["val_top1"] = float(top[e])
                record["ece"] = float(0.12 * np.exp(-e / 8) + 0.02 + rng.normal(0, 0.004))
            (folder / "metrics.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in records))
            config = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps({**config, "epochs": 20}))
            RunStore(folder).write_summary()  # the list's numbers, from the new curve
        panel = ComparePanel(Path(tmp) / "runs")
        panel.resize(1400, 900)
        panel.show()
        panel.refresh(select=paths)
        wait_for(app, lambda: not panel.busy and len(panel.selected_listings()) == 50)
        settle(app)
        panel.grab().save(str(out / "compare_50.png"))
        print("wrote", out / "compare_50.png")


def embedding_views(app, out: Path, ev) -> None:
    """The Embedding tab over the same 165 classes: coloured by anatomy, then one class
    found. Points of a synthetic PCA, one cluster an anatomy, its classes side by side."""
    from olsdesk.core.names import class_groups
    from olsdesk.gui.panels.embedding import EmbeddingPanel

    names = ev.class_names
    rng = np.random.default_rng(0)
    groups, of = class_groups(names, 2)
    n = 3000
    labels = rng.integers(0, len(names), n)
    angle = 2 * np.pi * np.asarray(of)[labels] / len(groups)
    offset = rng.normal(size=(len(names), 2)) * 0.6  # a class's place in its cluster
    coords = np.c_[4 * np.cos(angle), 4 * np.sin(angle)] + offset[labels] + rng.normal(
        size=(n, 2)) * 0.35
    predicted = np.where(rng.random(n) < 0.15, rng.integers(0, len(names), n), labels)

    class Report:
        epoch, epochs, class_names = 12, 12, names
        embedding, embedding_labels, embedding_predictions = coords, labels, predicted
        embedding_indices = np.arange(n)
        embedding_confidences = rng.uniform(0.3, 1.0, n)
        silhouette, intra_inter_ratio = 0.21, 0.74

    panel = EmbeddingPanel()
    panel.resize(1400, 900)
    panel.show()
    panel.show_report(Report())
    for name, find in (("embedding_165", ""), ("embedding_165_find", "MR/knee/tear")):
        panel.find.setText(find)
        panel.pick_class(find)
        settle(app)
        panel.grab().save(str(out / f"{name}.png"))
        print("wrote", out / f"{name}.png")


def unfamiliar_folder(folder: Path) -> str:
    """scikit-learn's handwritten digits as PNGs, and pydicom's bundled CT and MR."""
    from PIL import Image
    from pydicom.data import get_testdata_file
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True)
    for i, image in enumerate(load_digits().images[:60]):
        Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((64, 64)).save(
            folder / f"digit_{i:02d}.png")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        (folder / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    return str(folder)


if __name__ == "__main__":
    sys.exit(main())
