"""Dataset readers: folders (flat and RadImageNet-nested), CSV splits, MedMNIST, demo."""

import numpy as np
import pytest

from olsdesk.config import RunConfig
from olsdesk.core.data.demo import CLASS_NAMES, make_demo
from olsdesk.core.data.sources import DataError, open_dataset, stratified_split
from olsdesk.core.data.transforms import Preprocessing
from tests.helpers import make_class_folder, write_dicom


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
