"""Preprocessing split at the decode (``device_preprocessing``): a loader worker stages
an 8-bit image as decoded (uint8) with its crop and flip, and ``Preprocessing.finish``
makes the batch on the device. Its code runs on any device, so here it runs on the CPU,
against the CPU's own path (``Preprocessing.__call__``), on real pictures nobody here
made (scikit-learn's sample JPEGs and digits, pydicom's scanner files) and on every
8-bit mode PIL decodes: the tensors agree to float rounding, image by image, in the
batch's order, whatever the batch mixes."""

import numpy as np
import pytest
import torch
from PIL import Image

from olsdesk.core.data.images import read_image
from olsdesk.core.data.loader import TorchSamples, collate
from olsdesk.core.data.sources import ArraySamples, FileSamples
from olsdesk.core.data.transforms import Preprocessing, Staged, StagedBatch

# float rounding of [-1, 1] values after a resize (the luma's sum may round differently)
CLOSE = 1e-6


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Files of every kind a folder holds: real JPEGs (427 x 640 RGB), real digits as an
    8 x 8 gray PNG (enlarged), RGBA, palette, 1-bit and gray-as-RGB PNGs, a 16-bit PNG
    and a DICOM (not 8-bit: prepared in the worker, as floats)."""
    from sklearn.datasets import load_digits, load_sample_images

    from tests.helpers import write_dicom

    root = tmp_path_factory.mktemp("pictures")
    china, flower = load_sample_images().images
    rng = np.random.default_rng(0)
    paths = []

    def save(name, image, **kw):
        image.save(root / name, **kw)
        paths.append(root / name)

    save("china.jpg", Image.fromarray(china), quality=95)
    save("flower.png", Image.fromarray(flower))
    save("digit.png", Image.fromarray((load_digits().images[3] * 255 / 16).astype(np.uint8)))
    save("rgba.png", Image.fromarray(rng.integers(0, 256, (90, 70, 4), dtype=np.uint8)))
    save("palette.png", Image.fromarray(china[:200, :300]).convert("P"))
    save("bits.png", Image.fromarray(rng.random((64, 64)) > 0.5))
    gray = rng.integers(0, 256, (50, 80), dtype=np.uint8)
    save("gray_as_rgb.png", Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2)))
    save("deep.png", Image.fromarray(rng.integers(0, 65535, (40, 40)).astype(np.uint16)))
    paths.append(write_dicom(root / "scan.dcm", rng.integers(0, 4000, (48, 48)).astype(np.uint16),
                             slope=1.0, intercept=-1024.0, window=(40, 400)))
    return paths


def test_an_8_bit_file_reads_as_its_uint8_values_and_any_other_as_before(pictures):
    preprocessing = Preprocessing.for_size(32, 1)
    for path in pictures:
        floats = preprocessing.read(path)
        values = preprocessing.read(path, eight_bit=True)
        assert floats.dtype == np.float32
        if path.suffix in (".dcm",) or path.name == "deep.png":
            assert values.dtype == np.float32
            np.testing.assert_array_equal(values, floats)
        else:
            assert values.dtype == np.uint8, path.name
            np.testing.assert_array_equal(values.astype(np.float32) / 255.0, floats)


def test_a_file_reduced_further_after_decoding_is_read_as_floats(tmp_path):
    """The block averaging after a decode (a reduction PIL could not make) leaves 8-bit
    values behind: such a file is staged as floats, never rounded back to uint8."""
    path = tmp_path / "tall.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (600, 600), dtype=np.uint8)
                    ).save(path)
    import olsdesk.core.data.images as images

    real_reduction = images._reduction
    # PIL reduces as asked; the check after it asks for one more halving
    calls = []

    def reduction(shape, min_side):
        calls.append(shape)
        return real_reduction(shape, min_side) if len(calls) == 1 else 2

    images._reduction = reduction
    try:
        value = read_image(path, 100, eight_bit=True)
    finally:
        images._reduction = real_reduction
    assert value.dtype == np.float32


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("size", [32, 224])
def test_a_staged_batch_finished_on_the_device_is_the_cpus_batch(pictures, channels, train,
                                                                   size):
    """Every picture at once, one batch mixing decoded sizes, 8-bit and float images:
    each finished image is the CPU path's for the same file and the same crop draw
    (shrunk and enlarged, gray made colour and colour made gray, flipped or not)."""
    preprocessing = Preprocessing.for_size(size, channels)
    expected, staged = [], []
    for i, path in enumerate(pictures * 2):  # each twice: same-size groups of two
        draws = [torch.Generator().manual_seed(100 + i) for _ in range(2)]
        expected.append(preprocessing(preprocessing.read(path), train, draws[0]))
        staged.append(preprocessing.stage(preprocessing.read(path, eight_bit=True), train,
                                          draws[1]))
    assert sum(isinstance(s, Staged) for s in staged) == 2 * (len(pictures) - 2)
    batch = StagedBatch(staged)
    shapes = {tuple(s.pixels.shape) for s in staged if isinstance(s, Staged)}
    assert len(batch) == len(staged) and len(batch.groups) == len(shapes) > 1
    finished = preprocessing.finish(batch, torch.device("cpu"))
    assert finished.shape == (len(staged), channels, size, size)
    assert finished.dtype == torch.float32
    for i, want in enumerate(expected):
        np.testing.assert_allclose(finished[i].numpy(), want.numpy(), rtol=0, atol=CLOSE,
                                   err_msg=(pictures * 2)[i].name)
    if train:  # the crops and flips differ from image to image: it is not one crop for all
        tops = {s.placement for s in staged if isinstance(s, Staged)}
        assert len(tops) > 3


@pytest.mark.parametrize("mixed", [False, True])
def test_the_batch_comes_in_the_layout_asked_for(pictures, mixed):
    """Channels-last (as a GPU's model takes it) or the standard layout, with its standard
    strides whether the batch is one decoded size or several."""
    preprocessing = Preprocessing.for_size(32, 1)
    chosen = pictures if mixed else [pictures[0]] * 3
    items = [preprocessing.stage(preprocessing.read(p, eight_bit=True)) for p in chosen]
    plain = preprocessing.finish(StagedBatch(items), torch.device("cpu"))
    last = preprocessing.finish(StagedBatch(items), torch.device("cpu"), torch.channels_last)
    assert plain.is_contiguous() and plain.stride() == torch.empty(plain.shape).stride()
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert last.stride() == torch.empty(plain.shape).to(
        memory_format=torch.channels_last).stride()
    torch.testing.assert_close(last, plain, rtol=0, atol=0)


def test_flips_and_crops_follow_the_draw(pictures):
    """An asymmetric picture: a flipped draw is the mirror of the unflipped one at the
    same crop; the centre crop for evaluation."""
    preprocessing = Preprocessing(image_size=24, resize_size=30, channels=1)
    image = preprocessing.read(pictures[0], eight_bit=True)
    items = [Staged(preprocessing.stage(image).pixels, (2, 5, False)),
             Staged(preprocessing.stage(image).pixels, (2, 5, True)),
             preprocessing.stage(image)]
    out = preprocessing.finish(StagedBatch(items), torch.device("cpu"))
    torch.testing.assert_close(out[1], out[0].flip(-1), rtol=0, atol=0)
    assert items[2].placement == (3, 3, False)
    whole = preprocessing(preprocessing.read(pictures[0]))  # the centre crop, on the CPU
    np.testing.assert_allclose(out[2].numpy(), whole.numpy(), rtol=0, atol=CLOSE)


def test_through_the_loader_the_batch_keeps_its_order_and_failures(pictures, tmp_path):
    """A DataLoader batch of staged samples (files, in-memory uint8 images, a corrupt
    file): the same images, labels and indices as the unstaged loader, and the corrupt
    file the same one sentence."""
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    files = FileSamples([str(p) for p in [*pictures, corrupt]],
                        np.arange(len(pictures) + 1) % 3)
    arrays = ArraySamples(np.random.default_rng(2).integers(0, 256, (5, 28, 28, 3),
                                                            dtype=np.uint8),
                          np.arange(5) % 3, "archive")
    preprocessing = Preprocessing.for_size(32, 3)
    for samples in (files, arrays):
        batches = []
        for staged in (False, True):
            loader = torch.utils.data.DataLoader(
                TorchSamples(samples, preprocessing, train=True, seed=4, staged=staged),
                sampler=[(i, 1) for i in range(len(samples))], batch_size=len(samples),
                collate_fn=collate)
            batches.append(next(iter(loader)))
        (plain, y, idx, failed), (staged, y2, idx2, failed2) = batches
        assert isinstance(staged, StagedBatch)
        torch.testing.assert_close(y, y2)
        torch.testing.assert_close(idx, idx2)
        assert failed == failed2
        np.testing.assert_allclose(preprocessing.finish(staged, torch.device("cpu")).numpy(),
                                   plain.numpy(), rtol=0, atol=CLOSE)
        if samples is files:
            assert len(failed) == 1 and "corrupt.png" in failed[0][1]


def test_a_sample_that_cannot_be_prepared_is_named_and_only_a_failure_asks_its_name():
    """The loader names a sample only when it fails (naming every sample cost 5-7 us
    an image); the failure's sentence names it as before."""
    asked = []

    class Samples(ArraySamples):
        def describe(self, index):
            asked.append(index)
            return f"scan_{index:02d}.png"

    images = np.zeros((3, 28, 28), np.uint8)
    samples = Samples(images, np.arange(3), "archive")
    samples.images = [images[0], np.zeros((2, 2, 2, 2), np.uint8), images[2]]  # 4-D: no image
    loaded = TorchSamples(samples, Preprocessing.for_size(28, 1), train=True, seed=0)
    good, bad = loaded[(0, 0)], loaded[(1, 0)]
    assert good[0].shape == (1, 28, 28) and good[1:] == (0, 0)
    assert bad[0] is None and bad[2] == 1
    assert bad[1].startswith("scan_01.png could not be prepared for the model")
    assert asked == [1]


def test_a_staged_batch_pins_its_tensors_where_pinning_is_possible(pictures):
    preprocessing = Preprocessing.for_size(32, 1)
    items = [preprocessing.stage(preprocessing.read(p, eight_bit=True)) for p in pictures]
    batch = StagedBatch(items)
    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs a GPU")
    pinned = batch.pin_memory()  # pragma: no cover - on a lent GPU machine
    assert all(t.is_pinned() for group in pinned.groups for t in group)
    assert pinned.finished is None or pinned.finished.is_pinned()


def test_a_training_image_is_augmented_by_its_seed_alone_whatever_came_before():
    """The loader seeds one generator anew for each (image, epoch) key: each draws the
    crop and flip a new generator of that seed would, in any order of keys."""
    images = np.random.default_rng(0).integers(0, 255, (4, 40, 40), dtype=np.uint8)
    samples = ArraySamples(images, np.arange(4), "archive")
    preprocessing = Preprocessing.for_size(28, 1)
    loaded = TorchSamples(samples, preprocessing, train=True, seed=3)
    keys = [(2, 1), (0, 1), (2, 1), (3, 5), (0, 1)]
    for index, epoch in keys:
        fresh = torch.Generator().manual_seed((3 * 1_000_003 + epoch) * 10_000_019 + index)
        expected = preprocessing(samples.load(index, preprocessing), train=True,
                                 generator=fresh)
        assert torch.equal(loaded[(index, epoch)][0], expected), (index, epoch)
    assert not torch.equal(loaded[(2, 1)][0], loaded[(2, 2)][0])  # another epoch's draw
