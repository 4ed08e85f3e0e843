"""seg-scenes-256: deterministic per-scene seeds, labels that follow the objects, splits
built from their own source images."""
import numpy as np
import pytest

from compiler import datasets as D


def test_scenes_are_deterministic_and_prefix_stable():
    a = D.load_dataset("seg-scenes-256", "test", n=3)
    b_img, b_lab = D.scene_arrays("test", 1, 3)      # any range builds on its own
    assert a.images.shape == (3, 3, 256, 256) and a.labels.shape == (3, 256, 256)
    assert np.array_equal(a.images[1:], b_img) and np.array_equal(a.labels[1:], b_lab)
    assert a.num_classes == 21 == len(D.SCENE_CLASSES) and a.task == "segmentation"
    assert a.inputs(0, 1).shape == (1, 3, 256, 256)
    c = D.load_scenes("calib", n=3)
    assert not np.array_equal(c.images, a.images)
    assert D.SCENE_SIZES["test"] == 100 and D.SCENE_SIZES["calib"] == 50


def test_scene_labels_cover_objects_of_both_sources():
    ds = D.load_scenes("calib", n=20)
    counts = np.bincount(ds.labels.ravel(), minlength=21)
    assert counts[0] > 0.6 * ds.labels.size          # mostly background
    assert counts[1:11].sum() > 0 and counts[11:].sum() > 0  # digits and Fashion-MNIST
    # an object pixel differs from the background around it: the labels are visible
    img = ds.images.astype(np.float32)
    fg = ds.labels > 0
    edge = fg & ~np.roll(fg, 3, axis=-1)
    assert np.abs(img[:, :, :, 3:] - img[:, :, :, :-3]).mean() > 1.0
    assert edge.any()


def test_bad_scene_requests_are_clear_errors():
    with pytest.raises(D.DatasetError, match="size must be >= 128"):
        D.scene_arrays("test", 0, 1, size=64)
    with pytest.raises(D.DatasetError, match="bad sample range 3:1"):
        D.scene_arrays("test", 3, 1)
    with pytest.raises(D.DatasetError, match="n must be >= 1"):
        D.load_scenes("test", n=0)
