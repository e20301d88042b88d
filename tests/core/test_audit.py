"""The data audit against what was planted, and against an independent count on real
images (scikit-learn's digits, whose 1,797 scans hold exact repeats)."""

from __future__ import annotations

import csv
import hashlib
import threading
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from olsdesk.config import RunConfig
from olsdesk.core.audit import audit_dataset, drop_leaked
from olsdesk.core.data.sources import open_dataset


def _png(path, seed: int, value: int | None = None, size: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = (np.full((size, size), value, np.uint8) if value is not None
              else rng.integers(0, 256, (size, size), dtype=np.uint8))
    Image.fromarray(pixels).save(path)


@pytest.fixture()
def planted(tmp_path):
    """Two classes split by CSVs, with: a test image copied from train (the leak), a val
    image copied from train, one image under both classes in train, a repeat within a
    class, two blank images (one large: only found as a duplicate), a renamed text file
    and a truncated PNG."""
    root = tmp_path / "data"
    rows = {"train": [], "val": [], "test": []}
    for k, c in enumerate(("ct", "mr")):
        for i in range(8):
            split = "train" if i < 4 else "val" if i < 6 else "test"
            name = f"{c}/{i}.png"
            _png(root / name, seed=100 * (k + 1) + i)  # distinct: only planted repeats
            rows[split].append((name, c))
    (root / "ct/4.png").write_bytes((root / "ct/0.png").read_bytes())  # val copy of train
    (root / "mr/6.png").write_bytes((root / "mr/1.png").read_bytes())  # test copy of train
    (root / "mr/2.png").write_bytes((root / "ct/3.png").read_bytes())  # one image, 2 labels
    _png(root / "ct/extra.png", seed=0)
    (root / "ct/extra.png").write_bytes((root / "ct/1.png").read_bytes())  # repeat in class
    rows["train"].append(("ct/extra.png", "ct"))
    # blank: a small one (decoded for its size) and a large pair (decoded as a group:
    # noise in the PNG's metadata keeps it over the small-file size)
    _png(root / "mr/blank.png", seed=0, value=0)
    rows["train"].append(("mr/blank.png", "mr"))
    big = Image.fromarray(np.full((64, 64), 7, np.uint8))
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("padding", "x" * 6000)
    for name in ("ct/big_blank_a.png", "ct/big_blank_b.png"):
        big.save(root / name, pnginfo=info)
        rows["train"].append((name, "ct"))
    (root / "ct/notes.png").write_text("not an image")  # renamed text
    rows["train"].append(("ct/notes.png", "ct"))
    good = (root / "ct/0.png").read_bytes()
    (root / "ct/truncated.png").write_bytes(good[: len(good) // 2])
    rows["train"].append(("ct/truncated.png", "ct"))
    splits = tmp_path / "splits"
    splits.mkdir()
    for split, lines in rows.items():
        with open(splits / f"data_{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["filename", "label"])
            writer.writerows(lines)
    return open_dataset(RunConfig(data=str(root), split_csv=str(splits)))


def test_the_audit_finds_what_was_planted(planted):
    report = audit_dataset(planted, workers=4)
    assert report.files == {"train": 14, "val": 4, "test": 4}
    # the leak: ct/4 (val) is ct/0 (train), mr/6 (test) is mr/1 (train)
    assert len(report.across_splits) == 2
    val_names = [planted.val.paths[i] for i in report.leaked["val"]]
    test_names = [planted.test.paths[i] for i in report.leaked["test"]]
    assert [n.rsplit("/", 2)[-2:] for n in val_names] == [["ct", "4.png"]]
    assert [n.rsplit("/", 2)[-2:] for n in test_names] == [["mr", "6.png"]]
    assert report.leak_count == 2
    # one image under two labels; one repeat within a class (plus the big blank pair)
    assert [sorted(c.label for c in g) for g in report.across_classes] == [["ct", "mr"]]
    within = sorted(sorted(c.name.rsplit("/", 1)[-1] for c in g) for g in report.within_class)
    assert within == [["1.png", "extra.png"], ["big_blank_a.png", "big_blank_b.png"]]
    assert report.redundant == 2
    # blank: the small one, and both of the large pair (decoded once, as a group)
    assert sorted(c.name.rsplit("/", 1)[-1] for c in report.constant) == [
        "big_blank_a.png", "big_blank_b.png", "blank.png"]
    # unreadable: the renamed text (its first bytes) and the truncated PNG (small, so
    # decoded); each with its sentence
    why = sorted(w for _, w in report.unreadable)
    assert len(why) == 2
    assert "notes.png does not start as a PNG file must" in why[0]
    assert "truncated.png" in why[1]
    lines = report.lines()
    assert "2 image(s) appear in more than one split: 1 val, 1 test" in lines[0]
    stored = report.to_dict()
    assert stored["leaked"] == {"val": 1, "test": 1}
    assert stored["constant_images"] == 3 and stored["unreadable_files"] == 2
    assert stored["examples"]["across_splits"][0][0]["split"] == "train"


def test_dropping_the_leak_keeps_the_rest(planted):
    report = audit_dataset(planted)
    clean = drop_leaked(planted, report)
    assert len(clean.val) == len(planted.val) - 1 and len(clean.test) == len(planted.test) - 1
    assert len(clean.train) == len(planted.train)
    assert not any(p.endswith("ct/4.png") for p in clean.val.paths)
    assert "dropped 1 val, 1 test image(s)" in clean.warnings[-1]
    again = audit_dataset(clean)
    assert not again.across_splits and again.leak_count == 0


def test_a_stopped_audit_says_so(planted):
    stop = threading.Event()
    stop.set()
    report = audit_dataset(planted, stop=stop)
    assert not report.complete
    assert report.lines()[0].startswith("The audit was stopped")


def test_the_repeats_among_pydicoms_files_match_an_independent_count(tmp_path):
    """pydicom's bundled scanner files hold an exact repeat (two names, one JPEG DICOM);
    the audit, reading them from class folders through a held-out split, finds exactly the
    groups a plain SHA-256 of every file finds, and reads every file or says why not."""
    pydicom = pytest.importorskip("pydicom")
    from pathlib import Path

    bundled = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))
    root = tmp_path / "scans"
    by_content = defaultdict(list)
    for i, path in enumerate(bundled):
        folder = root / ("even" if i % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).write_bytes(path.read_bytes())
        by_content[hashlib.sha256(path.read_bytes()).hexdigest()].append(path.name)
    repeated = sorted(sorted(names) for names in by_content.values() if len(names) > 1)
    assert repeated, "pydicom's files are known to repeat"
    dataset = open_dataset(RunConfig(data=str(root), val_fraction=0.2, test_fraction=0.2))
    report = audit_dataset(dataset)
    groups = report.within_class + report.across_splits + [
        g for g in report.across_classes if len({c.split for c in g}) == 1]
    assert sorted(sorted(Path(c.name).name for c in g) for g in groups) == repeated
    assert report.total == len(bundled)
    assert all(why.endswith(".") for _, why in report.unreadable)
