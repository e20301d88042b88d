"""Dataset readers: folders (flat and RadImageNet-nested), CSV splits, MedMNIST, demo."""

from pathlib import Path

import numpy as np
import pytest

from olsdesk.config import RunConfig
from olsdesk.core.data.demo import CLASS_NAMES, make_demo
from olsdesk.core.data.sources import DataError, open_dataset, stratified_split
from olsdesk.core.data.transforms import Preprocessing
from tests.helpers import make_class_folder, write_dicom, write_png


def test_radimagenet_nested_layout_uses_leaf_path_as_class(tmp_path):
    root = make_class_folder(tmp_path / "radiology_ai", {
        "CT/lung/normal": 5, "CT/abdomen/normal": 5, "US/cyst": 5})
    ds = open_dataset(RunConfig(data=str(root), val_fraction=0.2))
    assert ds.class_names == ("CT/abdomen/normal", "CT/lung/normal", "US/cyst")
    assert len(ds.train) + len(ds.val) + len(ds.test) == 15
    assert ds.per_class_counts()["US/cyst"] == (3, 1, 1)
    assert ds.channels == 1


def test_dicom_files_count_as_images(tmp_path):
    root = make_class_folder(tmp_path / "d", {"a": 3, "b": 3})
    write_dicom(root / "a" / "x.dcm", np.zeros((4, 4), dtype=np.uint16))
    ds = open_dataset(RunConfig(data=str(root)))
    assert len(ds.train) + len(ds.val) + len(ds.test) == 7


def test_csv_split_files(tmp_path):
    root = make_class_folder(tmp_path / "radiology_ai", {"CT/lung/normal": 4, "MR/knee/tear": 4})
    splits = tmp_path / "splits"
    splits.mkdir()
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    train, val = files[:3] + files[4:7], [files[3], files[7]]
    # filenames relative to the dataset root's parent, as RadImageNet ships them
    for name, rows in (("RadiologyAI_train.csv", train), ("RadiologyAI_val.csv", val)):
        lines = ["filename,label"] + [f"radiology_ai/{f},{f.rsplit('/', 1)[0]}" for f in rows]
        (splits / name).write_text("\n".join(lines) + "\n")
    ds = open_dataset(RunConfig(data=str(root), split_csv=str(splits)))
    assert ds.class_names == ("CT/lung/normal", "MR/knee/tear")
    assert (len(ds.train), len(ds.val)) == (6, 2)
    assert ds.test is None and "no test CSV" in ds.warnings[0]
    assert ds.train.load(0, Preprocessing.for_size(16, 1)).shape == (24, 24)
    lines = ["filename,label"] + [f"radiology_ai/{f},{f.rsplit('/', 1)[0]}" for f in val]
    (splits / "RadiologyAI_test.csv").write_text("\n".join(lines) + "\n")
    ds = open_dataset(RunConfig(data=str(root), split_csv=str(splits)))
    assert len(ds.test) == 2 and ds.test_source == "RadiologyAI_test.csv"
    assert ds.warnings == ()


def test_medmnist_npz_gray_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    for shape, channels in (((20, 28, 28), 1), ((20, 28, 28, 3), 3)):
        path = tmp_path / f"m{channels}.npz"
        np.savez(path, train_images=rng.integers(0, 255, shape, dtype=np.uint8),
                 train_labels=np.arange(20).reshape(20, 1) % 4,
                 val_images=rng.integers(0, 255, (8,) + shape[1:], dtype=np.uint8),
                 val_labels=np.arange(8).reshape(8, 1) % 4)
        ds = open_dataset(RunConfig(data=str(path)))
        assert ds.num_classes == 4 and ds.channels == channels
        assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 8, 4)  # test from train
        assert ds.train.load(3).shape == shape[1:]


def test_medmnist_multilabel_is_refused(tmp_path):
    path = tmp_path / "chest.npz"
    np.savez(path, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros((4, 14)))
    with pytest.raises(DataError, match="multi-label"):
        open_dataset(RunConfig(data=str(path)))


@pytest.mark.parametrize("layout,message", [
    ({}, "contains no images"),
    ({"only": 3}, "only one class"),
])
def test_folder_errors(tmp_path, layout, message):
    root = make_class_folder(tmp_path / "data", layout)
    root.mkdir(exist_ok=True)
    with pytest.raises(DataError, match=message):
        open_dataset(RunConfig(data=str(root)))


def test_missing_folder_and_loose_images(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(RunConfig(data=str(tmp_path / "nope")))
    make_class_folder(tmp_path / "x", {"a": 2})
    for p in (tmp_path / "x" / "a").iterdir():
        p.rename(tmp_path / "x" / p.name)
    (tmp_path / "x" / "a").rmdir()
    with pytest.raises(DataError, match="no class folders"):
        open_dataset(RunConfig(data=str(tmp_path / "x")))


def test_stratified_split_is_seeded_and_keeps_every_class():
    labels = np.repeat(np.arange(5), [10, 10, 3, 2, 1])
    tr, va, te = stratified_split(labels, 0.2, seed=1)
    assert len(te) == 0
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(labels)
    assert np.bincount(labels[va], minlength=5).tolist() == [2, 2, 1, 1, 0]
    tr2, va2, _ = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, stratified_split(labels, 0.2, seed=2)[1])


def test_three_way_split_is_stratified_disjoint_and_keeps_the_old_two_way_split():
    labels = np.repeat(np.arange(4), [100, 40, 3, 2])
    tr, va, te = stratified_split(labels, 0.15, seed=0, test_fraction=0.15)
    assert len(set(tr) | set(va) | set(te)) == len(labels) == len(tr) + len(va) + len(te)
    assert np.bincount(labels[va], minlength=4).tolist() == [15, 6, 1, 1]
    assert np.bincount(labels[te], minlength=4).tolist() == [15, 6, 1, 0]  # 2 images: none
    assert np.bincount(labels[tr], minlength=4).min() >= 1
    # the validation images of a run made before the test split existed stay the same
    old_tr, old_va, _ = stratified_split(labels, 0.15, seed=0)
    assert np.array_equal(old_va, va)


def test_a_folder_gets_a_seeded_70_15_15_split_that_reopens_identically(tmp_path):
    root = make_class_folder(tmp_path / "d", {"a": 20, "b": 20})
    cfg = RunConfig(data=str(root))
    ds = open_dataset(cfg)
    assert ds.per_class_counts() == {"a": (14, 3, 3), "b": (14, 3, 3)}
    assert ds.test_source == "held out from the data"
    names = set(ds.test.paths)
    assert names.isdisjoint(ds.train.paths) and names.isdisjoint(ds.val.paths)
    assert open_dataset(cfg).test.paths == ds.test.paths
    assert open_dataset(cfg.replace(test_fraction=0.0)).test is None


def test_a_stored_configuration_without_a_test_fraction_keeps_its_two_way_split():
    old = RunConfig().to_dict()
    del old["test_fraction"], old["test_data"]
    old["val_fraction"] = 0.2
    assert RunConfig.from_dict(old).test_fraction == 0.0
    assert RunConfig.from_dict(RunConfig().to_dict()).test_fraction == 0.15


def test_medmnist_test_arrays_are_the_test_split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "organ.npz"
    np.savez(path, train_images=rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
             train_labels=np.arange(20).reshape(20, 1) % 4,
             val_images=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8),
             val_labels=np.arange(8).reshape(8, 1) % 4,
             test_images=rng.integers(0, 255, (12, 28, 28), dtype=np.uint8),
             test_labels=np.arange(12).reshape(12, 1) % 4)
    ds = open_dataset(RunConfig(data=str(path)))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (20, 8, 12)
    assert ds.test.describe(0) == "organ.npz:test #0"
    assert ds.test_source == "the archive's test arrays"


def test_external_test_folder_maps_to_the_run_classes_and_names_a_stranger(tmp_path):
    root = make_class_folder(tmp_path / "d", {"a": 6, "b": 6, "c": 6})
    other = make_class_folder(tmp_path / "hospital2", {"c": 2, "a": 3})
    ds = open_dataset(RunConfig(data=str(root), test_data=str(other)))
    assert len(ds.train) + len(ds.val) == 18  # nothing held out: the folder is the test
    assert sorted(ds.test.labels.tolist()) == [0, 0, 0, 2, 2]
    assert "hospital2" in ds.test_source
    make_class_folder(tmp_path / "hospital3", {"a": 1, "tumour": 1})
    with pytest.raises(DataError, match="not trained on: tumour"):
        open_dataset(RunConfig(data=str(root), test_data=str(tmp_path / "hospital3")))


def test_demo_set_is_deterministic_and_shaped():
    a, b = make_demo(3, seed=5), make_demo(3, seed=5)
    assert np.array_equal(a.images, b.images)
    assert a.images.shape == (36, 64, 64) and a.images.dtype == np.uint8
    assert a.class_names == CLASS_NAMES and len(set(a.labels)) == 12
    assert not np.array_equal(a.images, make_demo(3, seed=6).images)
    # the first images of a class do not depend on how many are asked for
    assert np.array_equal(make_demo(5, seed=5).images[:3], a.images[:3])


def test_demo_modalities_differ_more_than_findings_within_one():
    demo = make_demo(20)
    means = np.array([demo.images[demo.labels == c].mean(axis=0).ravel() for c in range(12)])
    dist = np.linalg.norm(means[:, None] - means[None], axis=2)
    within = [dist[i, j] for i in range(12) for j in range(12) if i != j and i // 4 == j // 4]
    across = [dist[i, j] for i in range(12) for j in range(12) if i // 4 != j // 4]
    assert max(within) < min(across)


def test_loader_workers_default_to_the_cores_on_a_gpu_and_stay_few_on_the_cpu(monkeypatch):
    import os

    import torch

    from olsdesk.core.data.loader import default_workers
    from olsdesk.core.data.sources import ArraySamples

    arrays = ArraySamples(np.zeros((4, 8, 8), np.uint8), np.zeros(4, int), "arrays")

    class Files:
        paths = ("a.png",)

    def cores(n):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(n)), raising=False)

    cores(16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers(Files(), 3, torch.device("cuda")) == 3  # asked for: as asked
    assert default_workers(arrays, None, torch.device("cpu")) == 0  # the CPU trains too
    assert default_workers(Files(), None, torch.device("cpu")) == 4
    assert default_workers(arrays, None, torch.device("cuda")) == 15  # the GPU waits else
    assert default_workers(Files(), None, torch.device("mps")) == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 processes share the cores
    assert default_workers(Files(), None, torch.device("cuda")) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    cores(96)
    assert default_workers(Files(), None, torch.device("cuda")) == 16
    cores(1)
    assert default_workers(Files(), None, torch.device("cuda")) == 1
    assert default_workers(Files(), None, torch.device("cpu")) == 0


def test_a_group_split_keeps_every_patient_in_one_split_and_each_class_near_its_share():
    """600 patients, 1-9 images each, two classes with a patient's images mostly of one:
    no patient crosses splits; each class's shares are within 3 points of 70/15/15."""
    from olsdesk.core.data.sources import stratified_group_split

    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 10, 600)
    groups = np.repeat(np.arange(600), sizes).astype(str)
    labels = np.repeat(rng.integers(0, 2, 600), sizes)
    flip = rng.random(len(labels)) < 0.1
    labels[flip] = 1 - labels[flip]
    train, val, test = stratified_group_split(labels, groups, 0.15, seed=0, test_fraction=0.15)
    assert len(train) + len(val) + len(test) == len(labels)
    sets = [set(groups[s]) for s in (train, val, test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    for c in (0, 1):
        total = (labels == c).sum()
        shares = [(labels[s] == c).sum() / total for s in (train, val, test)]
        assert np.allclose(shares, [0.7, 0.15, 0.15], atol=0.03)
    again = stratified_group_split(labels, groups, 0.15, seed=0, test_fraction=0.15)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, val, test), strict=True))


def test_a_group_pattern_splits_a_folder_by_patient(tmp_path):
    root = tmp_path / "scans"
    for c in ("ct", "mr"):
        for patient in range(12):
            for slice_ in range(3):
                rng = np.random.default_rng([("ct", "mr").index(c), patient, slice_])
                write_png(root / c / f"patient_{patient:03d}_slice{slice_}.png",
                          rng.integers(0, 255, (16, 16), dtype=np.uint8))
    config = RunConfig(data=str(root), val_fraction=0.2, test_fraction=0.2,
                       group_pattern=r"patient_(\d+)")
    ds = open_dataset(config)

    def patients(samples):
        return {p.rsplit("/", 1)[-1].split("_slice")[0] for p in samples.paths}

    train, val, test = patients(ds.train), patients(ds.val), patients(ds.test)
    assert not (train & val or train & test or val & test)
    assert len(ds.val) % 3 == 0 and len(ds.test) % 3 == 0 and len(ds.val) > 0
    with pytest.raises(DataError, match="matches none of the 72 file paths"):
        open_dataset(config.replace(group_pattern=r"subject-(\d+)"))
    with pytest.raises(DataError, match="no file names to find groups in"):
        open_dataset(RunConfig(group_pattern=r"(\d+)"))


def test_a_split_csvs_patient_in_two_splits_is_named(tmp_path):
    root = make_class_folder(tmp_path / "data", {"a": 4, "b": 4})
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "x_train.csv").write_text("filename,label,group\n" + "".join(
        f"{f},{f.split('/')[0]},p{i}\n" for i, f in enumerate(files[:3] + files[4:7])))
    (splits / "x_val.csv").write_text("filename,label,group\n" + "".join(
        f"{f},{f.split('/')[0]},{g}\n" for f, g in ((files[3], "p0"), (files[7], "p9"))))
    ds = open_dataset(RunConfig(data=str(root), split_csv=str(splits)))
    assert any("1 group(s) of the split CSVs have images in more than one split (e.g. p0)"
               in w for w in ds.all_warnings())


def test_opening_data_audits_it_and_can_drop_the_leak(tmp_path):
    root = make_class_folder(tmp_path / "data", {"a": 10, "b": 10})
    plain = open_dataset(RunConfig(data=str(root), audit_data=False))
    assert plain.audit is None
    leaked = plain.test.paths[0]
    (Path(leaked)).write_bytes(Path(plain.train.paths[0]).read_bytes())
    ds = open_dataset(RunConfig(data=str(root)))
    assert ds.audit.leak_count == 1
    assert any("appear in more than one split" in w for w in ds.all_warnings())
    dropped = open_dataset(RunConfig(data=str(root), drop_duplicates=True))
    assert len(dropped.test) == len(ds.test) - 1 and leaked not in dropped.test.paths
    from olsdesk.errors import ConfigError
    with pytest.raises(ConfigError, match="needs the data audit"):
        RunConfig(audit_data=False, drop_duplicates=True).validated()


def test_the_balanced_sampler_draws_every_class_alike_seeded_and_sharded():
    from olsdesk.core.data.loader import BalancedSampler

    labels = np.array([0] * 900 + [1] * 90 + [2] * 10 + [4] * 0)
    sampler = BalancedSampler(labels, 5, seed=3)
    sampler.set_epoch(2)
    draws = np.array(list(sampler))
    assert len(draws) == len(sampler) == 1000
    shares = np.bincount(labels[draws], minlength=5) / len(draws)
    np.testing.assert_allclose(shares[:3], 1 / 3, atol=0.05)  # 90 %, 9 %, 1 % before
    assert shares[3] == shares[4] == 0  # no image, never drawn
    assert len(set(draws[labels[draws] == 2])) == 10  # the rare class's every image
    assert np.array_equal(draws, list(sampler))  # the same epoch, the same batches
    sampler.set_epoch(3)
    assert not np.array_equal(draws, list(sampler))
    # two processes: the same sequence, every other draw each
    shards = [BalancedSampler(labels, 5, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for s in shards:
        s.set_epoch(2)
    parts = [list(s) for s in shards]
    assert len(parts[0]) == len(parts[1]) == 500
    merged = np.empty(1000, dtype=np.int64)
    merged[0::2], merged[1::2] = parts
    assert np.array_equal(merged, draws)


def test_training_with_the_balanced_sampler_and_class_weights_runs(tmp_path):
    from olsdesk.core.trainer import Trainer

    root = make_class_folder(tmp_path / "data", {"common": 30, "rare": 6})
    config = RunConfig(data=str(root), image_size=16, batch_size=8, epochs=1, device="cpu",
                       num_workers=0, sampling="balanced", class_weights=True, loss="ols")
    trainer = Trainer(config, runs_dir=tmp_path / "runs")
    reports = [r for r in trainer.fit() if hasattr(r, "val_top1")]
    assert len(reports) == 1 and np.isfinite(reports[0].train_loss)
    weights = trainer.loss_fn.class_weights.numpy()
    assert weights[1] > weights[0] * 3  # the rare class weighs more
    assert reports[0].soft_label_counts.tolist() == [0.0, 0.0]  # the start matrix


def test_a_stored_configuration_from_before_the_ols_minimum_keeps_the_papers_rule():
    old = RunConfig().to_dict()
    del old["ols_min_correct"]
    assert RunConfig.from_dict(old).ols_min_correct == 1
    assert RunConfig.from_dict(RunConfig().to_dict()).ols_min_correct == 2


def test_a_blank_label_in_a_split_csv_is_refused_naming_its_line(tmp_path):
    """#22 item 8: a blank label made a class '' that the run's own checkpoint was later
    called damaged for."""
    root = make_class_folder(tmp_path / "data", {"a": 3, "b": 3})
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "x_train.csv").write_text("filename,label\n" + f"{files[0]},a\n{files[1]}, \n")
    (splits / "x_val.csv").write_text("filename,label\n" + f"{files[3]},b\n")
    with pytest.raises(DataError, match=r"x_train.csv, line 3: a/img001.png has no label"):
        open_dataset(RunConfig(data=str(root), split_csv=str(splits)))


def test_ten_thousand_empty_folders_are_one_warning(tmp_path):
    """Each empty leaf folder was a warning of its own: 100,000 of them were 100,000 log
    lines and froze the app's summary for 37 s."""
    root = make_class_folder(tmp_path / "data", {"a": 6, "b": 6})
    for i in range(10_000):
        (root / "empty" / f"{i:05d}").mkdir(parents=True)
    data = open_dataset(RunConfig(data=str(root)))
    assert data.class_names == ("a", "b")
    assert data.warnings == ("10,000 folders hold no images, so they are not classes: "
                             "empty/00000, empty/00001, empty/00002 ….",)
    (tmp_path / "one").mkdir()
    single = make_class_folder(tmp_path / "one", {"a": 6, "b": 6})
    (single / "c").mkdir()
    assert open_dataset(RunConfig(data=str(single))).warnings == (
        "the folder c holds no images, so it is not a class.",)


def test_split_csv_rows_naming_files_outside_the_data_folder_are_said(tmp_path):
    """A row of ``../../`` or an absolute path was read from outside the data folder
    without a word."""
    root = make_class_folder(tmp_path / "data", {"a": 4, "b": 4})
    elsewhere = make_class_folder(tmp_path / "elsewhere", {"a": 1}, seed=3)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    splits = tmp_path / "splits"
    splits.mkdir()
    rows = [f"{f},{f.split('/')[0]}\n" for f in files[:3] + files[4:7]]
    (splits / "x_val.csv").write_text("filename,label\n" + f"{files[3]},a\n{files[7]},b\n")
    (splits / "x_train.csv").write_text("filename,label\n" + "".join(rows))
    inside = open_dataset(RunConfig(data=str(root), split_csv=str(splits)))
    assert not any("outside" in w for w in inside.warnings)
    (splits / "x_train.csv").write_text("filename,label\n" + "".join(rows) + (
        "../elsewhere/a/img000.png,a\n"
        f"{elsewhere / 'a' / 'img000.png'},a\n"
        "a/../a/img000.png,a\n"))  # climbs out and back in: inside
    ds = open_dataset(RunConfig(data=str(root), split_csv=str(splits)))
    said = [w for w in ds.warnings if "outside" in w]
    assert said == [f"2 rows of the split files in {splits} name files outside {root} (e.g. "
                    "../elsewhere/a/img000.png); they are read from there."]


def _walk_reference(root: Path) -> tuple[list[str], list[str], list[str]]:
    """The scan as os.walk and pathlib define it (how olsdesk 0.3 scanned), to hold the
    string-based scan to."""
    import os

    from olsdesk.core.data.images import IMAGE_SUFFIXES, is_dicom
    paths, classes, empty = [], [], []
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if here == root:
            continue
        rel = here.relative_to(root).as_posix()
        found = 0
        for name in sorted(filenames):
            suffix = Path(name).suffix.lower()
            if not name.startswith(".") and (suffix in IMAGE_SUFFIXES
                                             or (suffix == "" and is_dicom(here / name))):
                paths.append(str(here / name))
                classes.append(rel)
                found += 1
        if not found and not dirnames:
            empty.append(rel)
    return paths, classes, empty


def test_the_folder_scan_matches_os_walk_on_an_awkward_tree_and_a_scanner_export(tmp_path):
    import os

    from olsdesk.core.data.sources import scan_folder
    root = tmp_path / "data"
    write_png(root / "CT" / "lung" / "b.PNG", np.zeros((4, 4), np.uint8))
    write_png(root / "CT" / "lung" / "a.png", np.zeros((4, 4), np.uint8))
    write_png(root / "CT" / "abd" / "x.y.tif", np.zeros((4, 4), np.uint8))
    (root / "MR" / "knee").mkdir(parents=True)
    write_dicom(root / "MR" / "knee" / "IM0001", np.zeros((4, 4), np.uint16))  # extension-less DICOM, sniffed
    (root / "MR" / "knee" / "notes.").write_text("a trailing dot")
    (root / "MR" / "knee" / "README").write_text("extension-less, not DICOM")
    (root / "MR" / ".hidden").mkdir(parents=True)
    write_png(root / "MR" / ".hidden" / "c.png", np.zeros((4, 4), np.uint8))
    write_png(root / "MR" / "knee" / ".d.png", np.zeros((4, 4), np.uint8))
    (root / "US" / "empty").mkdir(parents=True)
    write_png(root / "loose.png", np.zeros((4, 4), np.uint8))
    os.symlink(root / "CT", root / "US" / "linked")  # listed as a folder, never followed
    os.mkfifo(root / "MR" / "knee" / "pipe")  # never opened
    got = scan_folder(root)
    assert got == _walk_reference(root)
    assert [Path(p).name for p in got[0]] == ["x.y.tif", "a.png", "b.PNG", "IM0001"]
    assert got[1] == ["CT/abd", "CT/lung", "CT/lung", "MR/knee"]
    assert got[2] == ["US/empty"]
    import pydicom
    bundled = Path(pydicom.__file__).parent
    assert scan_folder(bundled) == _walk_reference(bundled)


def test_packed_paths_read_back_slice_take_compare_and_pickle_as_the_list_they_hold():
    import pickle

    from olsdesk.core.data.sources import FileSamples, PathList
    names = ["/data/CT/lung/a.png", "/data/Ünïcode/ß.png", "", "/x/\udcff.png",  # undecodable
             "/data/MR/knee/IM0001"] * 3
    packed = PathList(names)
    assert len(packed) == 15 and list(packed) == names and packed == names
    assert [packed[i] for i in range(-15, 15)] == names + names
    with pytest.raises(IndexError):
        packed[15]
    assert list(packed[2:9:3]) == names[2:9:3]
    order = np.array([14, 0, 3, 3, 7])
    assert list(packed.take(order)) == [names[i] for i in order]
    assert len(packed.take(np.array([], int))) == 0 and list(PathList([])) == []
    assert pickle.loads(pickle.dumps(packed)) == packed
    assert "/data/Ünïcode/ß.png" in packed and "/nope" not in packed
    samples = FileSamples(names, np.arange(15))
    part = samples.subset(np.array([4, 1]))
    assert list(part.paths) == [names[4], names[1]] and list(part.labels) == [4, 1]
    assert isinstance(samples.paths._data, np.ndarray)  # no Python object per path


def test_packed_paths_take_crosses_its_chunks(monkeypatch):
    from olsdesk.core.data.sources import PathList
    monkeypatch.setattr(PathList, "_CHUNK", 3)
    names = [f"/p/{i}" * (i % 4 + 1) for i in range(20)]
    order = np.random.default_rng(0).permutation(20)
    assert list(PathList(names).take(order)) == [names[i] for i in order]
