"""Predictor: good files, every kind of bad input, and wrong checkpoints."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from olsdesk.cli import main
from olsdesk.config import RunConfig
from olsdesk.core.predictor import Prediction, Predictor, PredictorError
from olsdesk.core.trainer import Trainer
from olsdesk.gui.resources import resource
from tests.helpers import truncate, write_dicom, write_png, write_zip_bomb

SAMPLES = resource("samples")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = RunConfig(demo_per_class=8, image_size=32, batch_size=16, epochs=1, device="cpu")
    trainer = Trainer(cfg, runs_dir=tmp_path_factory.mktemp("runs"))
    for _ in trainer.fit():
        pass
    return trainer.store.checkpoint_path("best.pt")


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return Predictor.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture
def mixed_folder(tmp_path):
    """Good PNGs and DICOMs beside every kind of broken file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "drop"
    folder.mkdir()
    for name in ("CT_lung_nodule.png", "MR_brain_tumor.png", "US_abdomen_cyst.png"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    write_dicom(folder / "ct16.dcm", rng.integers(0, 4000, (48, 48)).astype(np.uint16),
                intercept=-1024, window=(40, 400))
    write_dicom(folder / "cr_mono1.dcm", rng.integers(0, 1000, (40, 40)).astype(np.uint16),
                photometric="MONOCHROME1")
    Image.fromarray(rng.integers(0, 255, (3000, 2500), dtype=np.uint8)).save(folder / "big.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    truncate(write_png(folder / "cut.png", rng.integers(0, 255, (64, 64), dtype=np.uint8)))
    jpeg = folder / "cut.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(jpeg, quality=90)
    truncate(jpeg, 0.4)
    write_dicom(folder / "no_pixels.dcm", None)
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

    write_dicom(folder / "j2k.dcm", np.zeros((8, 8), dtype=np.uint16),
                transfer_syntax=JPEG2000Lossless)
    write_dicom(folder / "jpegls.dcm", np.zeros((8, 8), dtype=np.uint16),
                transfer_syntax=JPEGLSLossless)
    return folder


def test_predicts_good_files_with_class_names_and_probabilities(predictor):
    results = predictor.predict([SAMPLES / "CT_lung_nodule.png", SAMPLES / "CT_lung_nodule.dcm"])
    assert [r.ok for r in results] == [True, True]
    for r in results:
        assert len(r.top_classes) == 5 and r.top_classes[0] in predictor.class_names
        assert r.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
        assert list(r.top_probabilities) == sorted(r.top_probabilities, reverse=True)
        assert 0 <= r.entropy <= np.log(12) + 1e-9
        assert r.calibrated_probabilities.sum() == pytest.approx(1.0, abs=1e-6)


def test_a_mixed_folder_gets_a_prediction_or_a_sentence_for_every_file(predictor, mixed_folder):
    results = {Path(r.path).name: r for r in predictor.predict([mixed_folder])}
    assert len(results) == 13
    good = {"CT_lung_nodule.png", "MR_brain_tumor.png", "US_abdomen_cyst.png", "ct16.dcm",
            "cr_mono1.dcm", "big.png"}
    assert {n for n, r in results.items() if r.ok} == good
    expected = {
        "notes.txt": "not an image",
        "empty.png": "empty",
        "cut.png": "truncated or corrupt",
        "cut.jpg": "truncated or corrupt",
        "no_pixels.dcm": "without pixel data",
        "j2k.dcm": "could not be decoded",
        "jpegls.dcm": "JPEG-LS Lossless Image Compression and could not be decoded",
    }
    for name, fragment in expected.items():
        assert fragment in results[name].error, (name, results[name].error)
        assert results[name].error.startswith(name)  # one sentence that names the file


def test_cancel_stops_early_and_progress_is_reported(predictor, mixed_folder):
    import threading

    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append((done, total))
        if done == 2:
            cancel.set()

    results = predictor.predict([mixed_folder], progress=progress, cancel=cancel)
    assert len(results) == 2 and seen[-1] == (2, 13)


def test_checkpoint_errors_are_one_sentence(tmp_path, checkpoint):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(PredictorError, match="not an olsdesk checkpoint"):
        Predictor.from_checkpoint(junk)
    from torchvision.models import resnet18

    plain = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), plain)
    with pytest.raises(PredictorError, match="not an olsdesk checkpoint"):
        Predictor.from_checkpoint(plain)
    state = torch.load(checkpoint, weights_only=True)
    state["class_names"] = state["class_names"][:5]  # another class count than the weights
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    with pytest.raises(PredictorError, match="do not fit a smallcnn with 5 classes"):
        Predictor.from_checkpoint(edited)
    state["model_name"] = "resnet18"  # another architecture than the weights
    state["class_names"] = state["class_names"] + [f"x{i}" for i in range(7)]
    torch.save(state, edited)
    with pytest.raises(PredictorError, match="do not fit a resnet18"):
        Predictor.from_checkpoint(edited)


def test_cli_predict_lines_json_and_exit_codes(checkpoint, mixed_folder, capsys):
    good = str(mixed_folder / "ct16.dcm")
    assert main(["predict", "--checkpoint", str(checkpoint), good, "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(good + ": ") and "calibrated" in line
    assert main(["predict", "--checkpoint", str(checkpoint), str(mixed_folder), "--json",
                 "--top-k", "3", "--device", "cpu"]) == 1
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 13
    assert sum(r["error"] is None for r in rows) == 6
    assert all(len(r["top_classes"]) == 3 for r in rows if r["error"] is None)
    assert main(["predict", "--checkpoint", str(mixed_folder / "notes.txt"), good]) == 2
    assert "not an olsdesk checkpoint" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(checkpoint), "/no/such/file.png"]) == 2


def test_a_checkpoint_is_validated_before_anything_is_allocated(tmp_path, checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    for field, value, fragment in (
        ("preprocessing", {**state["preprocessing"], "resize_size": 100_000}, "resize_size"),
        ("preprocessing", {**state["preprocessing"], "channels": 7}, "channels"),
        ("temperature", float("nan"), "temperature"),
        ("class_names", ["only one"], "class list"),
        ("model_name", "alexnet", "unknown model"),
    ):
        edited = tmp_path / f"edited_{field}.pt"
        torch.save({**state, field: value}, edited)
        with pytest.raises(PredictorError, match=f"damaged or was edited: .*{fragment}"):
            Predictor.from_checkpoint(edited)
    bomb = write_zip_bomb(tmp_path / "bomb.pt")
    with pytest.raises(PredictorError, match="would unpack to 1.0 GB"):
        Predictor.from_checkpoint(bomb)


def test_every_stored_field_of_a_crafted_checkpoint_is_checked(tmp_path, checkpoint):
    """Containers of the wrong type, a name nested 3000 deep, settings no run writes and
    weights that are not numbers: one sentence each, nothing allocated or traced back."""
    state = torch.load(checkpoint, weights_only=True)
    nested: list = ["x"]
    for _ in range(3000):
        nested = [nested]
    weights = {k: v.clone() for k, v in state["model"].items()}
    weights[next(iter(weights))].view(-1)[0] = float("nan")
    for field, value, fragment in (
        ("config", torch.zeros(3), "its config is not a set of named values"),
        ("preprocessing", torch.zeros(3), "its preprocessing is not a set of named values"),
        ("class_names", [nested, "b"], "its class names are not a list of names"),
        ("class_names", "ab", "its class names are not a list of names"),
        ("config", {**state["config"], "calibration_bins": 0}, "calibration bins"),
        ("config", {**state["config"], "calibration_bins": 10**8}, "calibration bins"),
        ("config", {**state["config"], "val_fraction": "x"}, "val fraction must be a number"),
        ("preprocessing", {**state["preprocessing"], "std": 1e-300}, "std must be between"),
        ("preprocessing", {**state["preprocessing"], "mean": 1e300}, "mean must be between"),
        ("model", weights, "NaN or infinite"),
    ):
        edited = tmp_path / "edited.pt"
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(20_000)  # pickling the nested name recurses; loading does not
        try:
            torch.save({**state, field: value}, edited)
        finally:
            sys.setrecursionlimit(limit)
        with pytest.raises(PredictorError, match=fragment):
            Predictor.from_checkpoint(edited)


def test_evaluate_never_walks_a_stored_data_path_that_is_not_the_training_data(
        tmp_path, checkpoint, capsys):
    """A checkpoint naming "/" as its data used to walk the whole filesystem for 42 s and
    open every extension-less file on it; one look at the class folders refuses it."""
    state = torch.load(checkpoint, weights_only=True)
    crafted = tmp_path / "crafted.pt"
    torch.save({**state, "config": {**state["config"], "data": "/"}}, crafted)
    assert main(["evaluate", "--checkpoint", str(crafted), "--device", "cpu",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint's training data / does not hold its class folders" in err
    assert "--data FOLDER" in err


def test_a_file_too_short_for_the_dicom_magic_is_never_opened(tmp_path, monkeypatch):
    """/proc's files all report size 0 and some block a reader (/proc/kmsg): the sniff
    of an extension-less file opens only what could hold a DICOM preamble."""
    from olsdesk.core.data import images

    opened = []
    monkeypatch.setattr(images, "open", lambda *a, **k: opened.append(a[0]) or open(*a, **k),
                        raising=False)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "short").write_bytes(b"x" * 131)
    assert not images.is_dicom(tmp_path / "empty")
    assert not images.is_dicom(tmp_path / "short")
    assert not images.is_dicom(Path("/proc/self/status"))
    assert opened == []


def test_csv_and_json_name_the_frame_and_the_checkpoint(checkpoint, predictor, tmp_path,
                                                         capsys):
    import csv

    from olsdesk.core.predictor import write_predictions_csv
    from tests.core.test_real_files import real

    multi, single = real("SC_rgb_2frame.dcm"), real("SC_rgb.dcm")
    found = predictor.predict([multi, single, tmp_path / "missing.png"])
    assert [p.frame for p in found] == [(2, 2), None, None]
    assert found[0].note == "frame 2 of 2"
    out = write_predictions_csv(found, tmp_path / "p.csv")
    rows = list(csv.DictReader(open(out)))
    assert [(r["frame"], r["frames"]) for r in rows] == [("2", "2"), ("", ""), ("", "")]
    assert [r["prediction_set"] for r in rows[:2]] == ["|".join(p.prediction_set)
                                                       for p in found[:2]]
    assert rows[2]["prediction_set"] == "" and "missing.png" in rows[2]["error"]
    epoch = str(torch.load(checkpoint, weights_only=True)["epoch"])
    assert {(r["checkpoint"], r["epoch"]) for r in rows} == {(str(checkpoint), epoch)}
    assert main(["predict", "--checkpoint", str(checkpoint), str(multi), "--json",
                 "--device", "cpu"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["frame"], row["frames"], row["checkpoint"]) == (2, 2, str(checkpoint))
    assert row["epoch"] == int(epoch)


def test_each_prediction_carries_its_conformal_set(checkpoint, tmp_path, capsys):
    """The set is every class the LAC threshold admits, the threshold computed here by
    numpy from the checkpoint's validation scores; CLI lines and JSON carry it."""
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    predictor.use_sets("lac", 0.8)
    scores = np.sort(predictor.calibration.scores["lac"])
    n = len(scores)
    threshold = scores[int(np.ceil((n + 1) * 0.8)) - 1]
    files = [SAMPLES / "CT_lung_nodule.png", SAMPLES / "MR_brain_tumor.png"]
    for p in predictor.predict(files):
        expected = {c for c, q in zip(predictor.class_names, p.calibrated_probabilities,
                                      strict=True) if 1 - q <= threshold}
        assert set(p.prediction_set) == expected and p.set_coverage == 0.8
        probs = [p.calibrated_probabilities[predictor.class_names.index(c)]
                 for c in p.prediction_set]
        assert probs == sorted(probs, reverse=True)  # most probable first
    predictor.use_sets()  # RAPS at 90 %: never empty, the top class first
    for p in predictor.predict(files):
        assert p.prediction_set[0] == p.top_classes[0] and p.set_text.endswith("} at 90%")
    good = str(files[0])
    assert main(["predict", "--checkpoint", str(checkpoint), good, "--device", "cpu",
                 "--coverage", "0.95", "--conformal", "aps"]) == 0
    assert "; set {" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(checkpoint), good, "--json",
                 "--device", "cpu"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert isinstance(row["prediction_set"], list) and row["set_coverage"] == 0.9
    assert row["prediction_set"][0] == row["top_classes"][0]
    assert main(["predict", "--checkpoint", str(checkpoint), good, "--coverage", "1"]) == 2
    state = torch.load(checkpoint, weights_only=True)
    state.pop("conformal")  # a checkpoint from before 0.4
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert main(["predict", "--checkpoint", str(old), good, "--json", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["prediction_set"] is None
    assert "no conformal calibration" in out.err


def test_unlike_the_training_data_is_marked(tmp_path, capsys):
    """The demo model's own kind of image passes; a real CT from another scanner and a
    handwritten digit are unlike anything it was trained on, and say so."""
    from sklearn.datasets import load_digits

    from tests.core.test_real_files import real

    cfg = RunConfig(demo_per_class=24, image_size=32, batch_size=16, epochs=2, device="cpu")
    trainer = Trainer(cfg, runs_dir=tmp_path / "runs")  # 36 validation images, 12 classes
    for _ in trainer.fit():
        pass
    checkpoint = trainer.store.checkpoint_path("best.pt")
    digit = tmp_path / "digit.png"
    Image.fromarray((load_digits().images[0] * 255 / 16).astype(np.uint8)).save(digit)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    assert predictor.familiarity.method == "mahalanobis"
    own = predictor.predict(sorted(SAMPLES.glob("*.png")))
    strange = predictor.predict([real("CT_small.dcm"), digit])
    # of 12: the threshold keeps 95 % of validation, so 0.6 false alarms are expected and
    # 2 happen one time in ten (the packages of a fresh install gave 2)
    assert sum(p.unfamiliar for p in own) <= 2
    assert [p.unfamiliar for p in strange] == [True, True]
    assert max(p.familiarity for p in strange) < min(p.familiarity for p in own)
    assert strange[0].unfamiliar_sentence.startswith("CT_small.dcm is unlike the training")
    assert main(["predict", "--checkpoint", str(checkpoint), str(digit), "--device",
                 "cpu"]) == 0
    assert "warning: digit.png is unlike the training data" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(checkpoint), str(digit), "--json",
                 "--device", "cpu"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["unfamiliar"] is True and isinstance(row["familiarity"], float)


def test_predict_recalibration_takes_the_calibrated_confidence_from_the_chosen_one(
        checkpoint, tmp_path, capsys):
    """--recalibration vector / histogram: the calibrated probabilities are the
    checkpoint's fitted recalibrator applied to the file's log-probabilities (by hand here);
    the sets stay on the temperature-scaled probabilities they were calibrated on; an older
    checkpoint without the recalibrator is refused in one sentence (exit 2)."""
    good = str(SAMPLES / "CT_lung_nodule.png")
    base = Predictor.from_checkpoint(checkpoint, device="cpu")
    (reference,) = base.predict([good])
    log_p = np.log(reference.probabilities)
    fitted = base.recalibration
    by_hand = {
        "vector": torch.softmax(torch.from_numpy(fitted.vector_scale * log_p
                                                 + fitted.vector_bias), 0).numpy(),
        "histogram": fitted.apply("histogram", log_p[None])[0]}
    for method, expected in by_hand.items():
        assert main(["predict", "--checkpoint", str(checkpoint), good, "--json",
                     "--device", "cpu", "--recalibration", method]) == 0
        row = json.loads(capsys.readouterr().out)
        top = [base.class_names.index(c) for c in row["top_classes"]]
        assert row["recalibration"] == method
        np.testing.assert_allclose(row["calibrated_top_probabilities"], expected[top],
                                   atol=1e-6)
        assert row["prediction_set"] == list(reference.prediction_set)
        assert row["top_probabilities"] == [round(p, 6) for p in reference.top_probabilities]
    assert main(["predict", "--checkpoint", str(checkpoint), good, "--device", "cpu",
                 "--recalibration", "vector"]) == 0
    assert "(vector scaling " in capsys.readouterr().out
    state = torch.load(checkpoint, weights_only=True)
    state.pop("recalibration")  # a checkpoint from before the recalibrators
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert main(["predict", "--checkpoint", str(old), good, "--device", "cpu",
                 "--recalibration", "histogram"]) == 2
    err = capsys.readouterr().err
    assert "old.pt holds no histogram recalibration (only temperature)" in err


def test_predict_prints_one_line_a_file_whatever_its_name_or_classes(checkpoint, tmp_path,
                                                                     capsys):
    """An ANSI escape in a file name reached the terminal raw (recolouring it), and a class
    name with a newline split predict's one line a file."""
    state = torch.load(checkpoint, weights_only=True)
    names = list(state["class_names"])
    names = [f"{n}\nsecond line\x1b[2J" for n in names]
    edited = tmp_path / "newlines.pt"
    torch.save({**state, "class_names": names}, edited)
    folder = tmp_path / "drop"
    folder.mkdir()
    sample = (SAMPLES / "CT_lung_nodule.png").read_bytes()
    (folder / "red\x1b[31mscan.png").write_bytes(sample)
    (folder / "plain.png").write_bytes(sample)
    (folder / "broken\x1b[0m.png").write_bytes(b"not a png")
    assert main(["predict", "--checkpoint", str(edited), "--device", "cpu", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out
    lines = [line for line in out.splitlines() if not line.startswith("  ")]
    files = [line for line in lines if line.startswith(str(folder))]
    assert len(files) == 3, out
    assert any("red\\x1b[31mscan.png: " in line and "\\nsecond line\\x1b[2J" in line
               for line in files)
    assert any("broken\\x1b[0m.png: ERROR" in line for line in files)


def test_evaluate_says_which_classes_have_no_test_image(checkpoint, predictor, tmp_path,
                                                        capsys):
    folder = tmp_path / "external"
    sample = (SAMPLES / "CT_lung_nodule.png").read_bytes()
    for name in predictor.class_names[:2]:
        for i in range(3):
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / f"{i}.png").write_bytes(sample)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--test-data", str(folder),
                 "--out", str(tmp_path / "out"), "--device", "cpu", "--resamples", "20"]) == 0
    said = capsys.readouterr()
    missing = len(predictor.class_names) - 2
    assert (f"{missing} of {len(predictor.class_names)} classes have no test image, so their "
            f"recall is not measured and the averages leave them out: "
            f"{predictor.class_names[2]}, ") in said.out + said.err


def test_a_long_prediction_set_is_summed_up_in_a_line():
    def with_set(classes):
        return Prediction("x.png", prediction_set=tuple(classes), set_coverage=0.9)

    assert with_set(["a", "b"]).set_summary() == "{a, b} at 90%"
    many = with_set([f"c{i}" for i in range(129)])
    assert many.set_summary(3) == "{c0, c1, c2, … 126 more: 129 classes} at 90%"
    assert many.set_summary(None) == many.set_text  # the whole set, as the files keep it
    assert many.set_text.count(",") == 128
    assert with_set([f"c{i}" for i in range(10)]).set_summary() == (
        "{" + ", ".join(f"c{i}" for i in range(10)) + "} at 90%")  # ten: all named
    assert Prediction("x.png").set_summary() == ""


def _expand_reference(paths):
    """expand_paths as 0.3 wrote it (Path.rglob, a Path per test), the reference."""
    import os

    out, seen = [], set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and
                           not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            found = [path]
        for file in found:
            key = Path(os.path.abspath(file))
            if key not in seen:
                seen.add(key)
                out.append(file)
    return out


def test_expand_paths_lists_what_rglob_listed_on_an_awkward_tree(tmp_path):
    import os

    from olsdesk.core.predictor import expand_paths

    root = tmp_path / "drop"
    for name in ("a.png", "a/z.png", "a/x/c.png", "a/x/B.png", "b.dcm", "noext", ".hidden.png",
                 ".git/config", "a/.cache/x.png", "a/y./dot.png", "a b/é.png", "Z/1.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "linked").symlink_to(root / "a", target_is_directory=True)  # not walked
    (root / "a" / "link.png").symlink_to(root / "b.dcm")  # a file
    (root / "a" / "dangling.png").symlink_to(root / "gone.png")  # no file
    os.mkfifo(root / "a" / "fifo")
    (tmp_path / "empty").mkdir()
    dropped = [root, root / "a" / "z.png", tmp_path / "empty", root / "a" / "x",
               tmp_path / "missing.png"]
    expected = _expand_reference(dropped)
    assert len(expected) == 11
    assert expand_paths(dropped) == expected
    assert expand_paths([str(root / "a")]) == _expand_reference([str(root / "a")])
