"""Calibration, evaluation and training data from what a user has: a folder of images, a
``.npy`` / ``.npz`` batch, or the name of a shipped data set -- for ``--calibration`` /
``--eval-data`` / ``--train-data`` on the command line and ``calibration_data=`` /
``eval_data=`` / ``train_data=`` in `compiler.compile`.

Sources (`resolve`):

* **a folder of images** (PNG/JPEG, read with Pillow).  Images directly in the folder
  have no labels; images in subfolders are labelled by the subfolder's name: integer
  names are the class index itself (``3/`` is class 3, as MNIST-style folders are laid
  out), other names are numbered in sorted order (torchvision's ``ImageFolder`` rule).
  Each image is converted to the channel order (``rgb``, ``bgr``, ``gray``), resized
  to ``resize`` (default: the model input's height and width; bilinear), scaled to
  [0, 1] (pixel / 255), normalized ``(x - mean) / std`` per channel, and laid out
  ``nchw`` or ``nhwc``.  Channel order and layout default to what the model's input
  shape says (1 channel: gray, 3: rgb; a dimension 1 or 3 after the batch: nchw).
* **a ``.npy`` file**: one array, the model's input batch (N, ...), no labels.
* **a ``.npz`` file**: the inputs under ``x`` (or ``inputs``), optional labels under
  ``y`` (or ``labels``): class per sample (N,) or class per pixel (N, H, W).
  Arrays are used as they are: already preprocessed, in the model's dtype and layout.
* **a data set name** (`compiler.datasets`): ``mnist``, ``fashion-mnist``, ``mnist-seg``
  (also ``seg-mnist``), optionally with a split: ``mnist:test``.  The default split is
  ``calib`` for calibration and evaluation (passes decide on it; keep ``test`` for the
  final score) and ``train`` for training data (fine-tuning must not see the split the
  passes score on).

Training data (``role="train"``, for ``finetune``, ``gradual-prune``,
``deep-compression`` and fine-tuning options of other passes) must be labelled.

Every source is checked against the model input like `CompiledModel.run` inputs are
(shape, dtype): integer data for a float input (e.g. uint8 images saved as they were
loaded) is refused with the fix, because quantizing with unnormalized calibration data
silently costs most of the accuracy (issue 21 reports 93 % -> 21 % top-1); float data
that still looks like 0..255 pixels gets a warning.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .datasets import DATASETS, SPLITS, Dataset, batch_indices, load_dataset
from .ir import Graph, Value
from .pass_manager import PassDataError

__all__ = ["DataSourceError", "Preprocess", "Samples", "resolve", "calibration_batches",
           "make_evaluator", "check_input_batch", "METRIC_NAMES", "metric_name",
           "IMAGE_SUFFIXES", "is_dataset_name"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Metric names accepted on the command line -> `compiler.evaluate` metric.
METRIC_NAMES = {"top1": "top1", "f1": "macro_f1", "macro_f1": "macro_f1", "miou": "miou"}
_ALIASES = {"seg-mnist": "mnist-seg", "mnist_seg": "mnist-seg", "fashion": "fashion-mnist",
            "fmnist": "fashion-mnist"}
NPZ_INPUT_KEYS = ("x", "inputs")
NPZ_LABEL_KEYS = ("y", "labels")


class DataSourceError(PassDataError):
    """A data source that cannot be read or does not fit the model (names the source)."""


@dataclass
class Preprocess:
    """How images become model inputs (image folders only; arrays are used as given).

    ``mean``/``std``: one value, or one per channel, in units of pixel/255 (torchvision's
    convention: ImageNet is mean 0.485,0.456,0.406, std 0.229,0.224,0.225).
    ``resize``: (height, width); None: the model input's.  ``channels`` / ``layout``:
    None means what the model input's shape says."""

    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    resize: tuple[int, int] | None = None
    channels: str | None = None   # "rgb" | "bgr" | "gray"
    layout: str | None = None     # "nchw" | "nhwc"

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in _as_list(self.mean, "mean"))
        self.std = tuple(float(v) for v in _as_list(self.std, "std"))
        if any(not s > 0 for s in self.std):
            raise DataSourceError(f"std must be > 0, got {list(self.std)}")
        if self.channels is not None and self.channels not in ("rgb", "bgr", "gray"):
            raise DataSourceError(f"channels must be rgb, bgr or gray, got {self.channels!r}")
        if self.layout is not None and self.layout not in ("nchw", "nhwc"):
            raise DataSourceError(f"layout must be nchw or nhwc, got {self.layout!r}")
        if self.resize is not None:
            size = tuple(int(v) for v in _as_list(self.resize, "resize"))
            if len(size) == 1:
                size = size * 2
            if len(size) != 2 or min(size) < 1:
                raise DataSourceError(f"resize must be HEIGHT,WIDTH (positive), got "
                                      f"{self.resize!r}")
            self.resize = size


def _as_list(value: Any, what: str) -> list:
    if isinstance(value, str):
        value = [v for v in value.replace("x", ",").split(",") if v.strip()]
    elif np.isscalar(value):
        value = [value]
    try:
        return [float(v) if what != "resize" else int(v) for v in value]
    except (TypeError, ValueError):
        raise DataSourceError(f"{what} must be a number or comma-separated numbers, got "
                              f"{value!r}") from None


@dataclass
class Samples:
    """Model-ready inputs (``x``: the model's dtype and layout, batch first) with
    optional labels; it offers what `compiler.evaluate.evaluate` reads from a
    `compiler.datasets.Dataset` (``inputs``, ``labels``, ``num_classes``, ``task``)."""

    name: str
    x: np.ndarray
    labels: np.ndarray | None = None
    num_classes: int = 0
    task: str = "classification"
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x)

    def inputs(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.x[start:stop]

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int | None = None,
                drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(inputs, labels)`` batches as `Dataset.batches` yields them: what fine-tuning
        (`compiler.torch.finetune`) reads from training data."""
        if self.labels is None:
            raise DataSourceError(f"{self.name}: no labels to train on")
        for idx in batch_indices(len(self), batch_size, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last, name=self.name):
            yield self.x[idx], self.labels[idx]

    def __repr__(self) -> str:
        return (f"Samples({self.name!r}, n={len(self)}, x={self.x.dtype}{tuple(self.x.shape)}, "
                f"labels={'none' if self.labels is None else self.task})")


def metric_name(metric: str | None) -> str | None:
    """``top1`` | ``f1`` | ``miou`` (and `compiler.evaluate`'s own names) -> its name."""
    if metric is None:
        return None
    try:
        return METRIC_NAMES[metric.lower()]
    except KeyError:
        raise DataSourceError(f"unknown metric '{metric}'; choose top1, f1 or miou") from None


def _single_input(graph: Graph, what: str) -> Value:
    if len(graph.inputs) != 1:
        raise DataSourceError(f"{what}: data sources feed single-input models; "
                              f"'{graph.name}' has inputs {[v.name for v in graph.inputs]} "
                              "(pass a list of input dicts through the API instead)")
    return graph.inputs[0]


def check_input_batch(value: Value, array: Any, where: str) -> np.ndarray:
    """``array`` as a batch for the model input ``value`` (any batch size), checked like
    `CompiledModel.run` inputs: rank and per-sample shape, and no integer data for a float
    input (the usual mistake: images saved as loaded, 0..255, not normalized).  Float data
    of another precision is converted; float data that looks like raw pixels warns."""
    array = np.asarray(array)
    want = tuple(value.shape)
    if array.ndim != len(want) or tuple(array.shape[1:]) != want[1:]:
        hint = ""
        if array.ndim == 4 and len(want) == 4 and \
                tuple(array.shape[1:]) == (want[2], want[3], want[1]):
            hint = " (it looks NHWC: transpose it with x.transpose(0, 3, 1, 2))"
        elif array.ndim == len(want) - 1 and tuple(array.shape) == want[1:]:
            hint = " (one sample without the batch dimension: add it with x[None])"
        raise DataSourceError(f"{where}: input '{value.name}' has shape "
                              f"{tuple(array.shape)}, the model expects {want} (the leading "
                              f"batch dimension may differ){hint}")
    dtype = np.dtype(value.dtype)
    if np.issubdtype(dtype, np.floating):
        if not np.issubdtype(array.dtype, np.floating):
            lo = int(array.min()) if array.size else 0
            hi = int(array.max()) if array.size else 0
            raise DataSourceError(
                f"{where}: {array.dtype} data (values {lo}..{hi}) for the float input "
                f"'{value.name}' ({dtype}): these are unnormalized pixels, and calibrating "
                "on them silently ruins a quantized model. Preprocess them as in training, "
                "e.g. x = (x.astype(np.float32) / 255 - mean) / std, and save again; or "
                "give the images as a folder with --mean/--std")
        if array.size and float(np.max(array)) > 2.0 and float(np.min(array)) >= 0.0 \
                and np.all(np.mod(array.reshape(-1)[:4096], 1) == 0):
            warnings.warn(f"{where}: float data with whole values 0..{float(np.max(array)):g} "
                          "looks like unnormalized pixels; the model usually expects the "
                          "training normalization ((x/255 - mean)/std)", stacklevel=2)
        return array.astype(dtype, copy=False)
    if array.dtype != dtype:
        raise DataSourceError(f"{where}: dtype {array.dtype}, the model input '{value.name}' "
                              f"expects {dtype}")
    return array


# --------------------------------------------------------------------------- sources

def resolve(source: Any, graph: Graph, *, role: str = "calibration",
            preprocess: Preprocess | None = None, limit: int | None = None,
            seed: int = 0) -> "Samples | Dataset":
    """The data ``source`` names (a folder, a ``.npy``/``.npz`` file, a data set name, an
    array or a `Dataset`), checked against ``graph``'s input.  ``limit`` keeps that many
    samples (a seeded random subset when the source has more); ``role`` (``calibration``,
    ``eval`` or ``train``) words the messages, picks a data set's default split and, for
    ``train``, requires labels."""
    what = "training data" if role == "train" else f"{role} data"
    value = _single_input(graph, what)
    preprocess = preprocess or Preprocess()
    if isinstance(source, Dataset):
        data: Samples | Dataset = source
    elif isinstance(source, np.ndarray):
        data = Samples("array", check_input_batch(value, source, f"{what} (array)"))
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        path = Path(text)
        if path.is_dir():
            data = _image_folder(path, value, preprocess, f"{what} {path}", limit, seed)
            limit = None  # already drawn
        elif path.suffix.lower() in (".npy", ".npz"):
            data = _arrays(path, value, f"{what} {path}")
        elif _dataset_key(text) is not None:
            data = _named_dataset(text, value, what, "train" if role == "train" else "calib")
        elif path.exists():
            raise DataSourceError(f"{what} {path}: not a folder of images nor a .npy/.npz "
                                  "file")
        else:
            raise DataSourceError(f"{what} '{text}': no such file or folder, and not a data "
                                  f"set name ({', '.join(DATASETS)}, optionally NAME:SPLIT "
                                  f"with SPLIT in {', '.join(SPLITS)})")
    else:
        raise DataSourceError(f"{what}: give a folder, a .npy/.npz file, a data set name or "
                              f"an array, not {type(source).__name__}")
    if len(data) == 0:
        raise DataSourceError(f"{what} {source}: no samples")
    if limit is not None and 0 < limit < len(data):
        data = _subset(data, limit, seed)
    _check_labels(data, graph, f"{what} {source}")
    if role == "train" and getattr(data, "labels", None) is None:
        raise DataSourceError(f"{what} {source}: no labels to train on: use a folder with "
                              "class subfolders, an .npz with 'y', or a data set name")
    return data


def _subset(data: "Samples | Dataset", n: int, seed: int) -> "Samples | Dataset":
    if isinstance(data, Dataset):
        return data.subset(n, seed=seed)
    idx = np.sort(np.random.default_rng(seed).choice(len(data), size=n, replace=False))
    return Samples(data.name, data.x[idx], None if data.labels is None else data.labels[idx],
                   data.num_classes, data.task, list(data.class_names))


def is_dataset_name(text: str) -> bool:
    """Whether ``text`` names a shipped data set (``mnist``, ``fashion-mnist:test``, ...)."""
    return _dataset_key(text) is not None


def _dataset_key(text: str) -> str | None:
    name = text.split(":", 1)[0].lower()
    name = _ALIASES.get(name, name)
    return name if name in DATASETS else None


def _named_dataset(text: str, value: Value, what: str, default_split: str) -> Dataset:
    key = _dataset_key(text)
    split = text.split(":", 1)[1] if ":" in text else default_split
    if split not in SPLITS:
        raise DataSourceError(f"{what} '{text}': split '{split}' is not one of "
                              f"{', '.join(SPLITS)}")
    kwargs = {}
    if key == "mnist-seg" and len(value.shape) == 4 and value.shape[2] == value.shape[3] \
            and value.shape[2] >= 28:
        kwargs["size"] = int(value.shape[2])  # canvases of the model's input size
    data = load_dataset(key, split, **kwargs)
    check_input_batch(value, data.inputs(0, 1), f"{what} '{text}'")
    return data


def _arrays(path: Path, value: Value, where: str) -> Samples:
    if not path.is_file():
        raise DataSourceError(f"{where}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataSourceError(f"{where}: not a readable numpy file ({type(exc).__name__}: "
                              f"{exc})") from None
    labels = None
    if isinstance(loaded, np.ndarray):
        x = loaded
    else:
        with loaded:
            keys = list(loaded.files)
            xk = next((k for k in NPZ_INPUT_KEYS if k in keys), None)
            yk = next((k for k in NPZ_LABEL_KEYS if k in keys), None)
            if xk is None:
                raise DataSourceError(f"{where}: an .npz needs the inputs under 'x' (or "
                                      f"'inputs'), labels optional under 'y' (or 'labels'); "
                                      f"it has {keys}")
            x = loaded[xk]
            labels = loaded[yk] if yk is not None else None
    x = check_input_batch(value, x, where)
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataSourceError(f"{where}: labels must be integer classes, got "
                                  f"{labels.dtype}")
        if len(labels) != len(x):
            raise DataSourceError(f"{where}: {len(labels)} labels for {len(x)} inputs")
        labels = labels.astype(np.int64)
    task = "segmentation" if labels is not None and labels.ndim == 3 else "classification"
    return Samples(path.name, x, labels, 0, task)


def _layout(value: Value, pre: Preprocess, where: str) -> tuple[str, int, int, int]:
    """(layout, channels, height, width) of the model input for images."""
    shape = tuple(value.shape)
    if len(shape) != 4:
        raise DataSourceError(f"{where}: images need a 4-d model input (N,C,H,W or N,H,W,C); "
                              f"'{value.name}' is {shape}")
    layout = pre.layout or ("nhwc" if shape[1] not in (1, 3) and shape[3] in (1, 3) else "nchw")
    c, h, w = (shape[1], shape[2], shape[3]) if layout == "nchw" else \
        (shape[3], shape[1], shape[2])
    return layout, c, h, w


def _image_files(folder: Path, where: str) -> list[tuple[Path, str | None]]:
    def images(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file()
                      and p.suffix.lower() in IMAGE_SUFFIXES)

    top = images(folder)
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    labelled = [(p, d.name) for d in subdirs for p in images(d)]
    if top and labelled:
        raise DataSourceError(f"{where}: holds images both directly and in subfolders; put "
                              "all in class subfolders (labelled) or all at the top (unlabelled)")
    files = labelled or [(p, None) for p in top]
    if not files:
        raise DataSourceError(f"{where}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or "
                              "in its subfolders")
    return files


def _image_folder(folder: Path, value: Value, pre: Preprocess, where: str,
                  limit: int | None, seed: int) -> Samples:
    try:
        from PIL import Image
    except ImportError:
        raise DataSourceError(f"{where}: reading images needs Pillow (pip install pillow, "
                              "or bash scripts/setup.sh)") from None
    layout, c, h, w = _layout(value, pre, where)
    channels = pre.channels or ("gray" if c == 1 else "rgb")
    if (channels == "gray") != (c == 1):
        raise DataSourceError(f"{where}: channels={channels} gives {1 if channels == 'gray' else 3} "
                              f"channel(s), the model input '{value.name}' has {c}")
    size = pre.resize or (h, w)
    if tuple(size) != (h, w):
        raise DataSourceError(f"{where}: resize {size[0]}x{size[1]} does not give the model "
                              f"input's {h}x{w}")
    for stat, vals in (("mean", pre.mean), ("std", pre.std)):
        if len(vals) not in (1, c):
            raise DataSourceError(f"{where}: {stat} has {len(vals)} values for {c} channel(s)")
    files = _image_files(folder, where)
    if limit is not None and 0 < limit < len(files):
        idx = np.sort(np.random.default_rng(seed).choice(len(files), size=limit, replace=False))
        files = [files[i] for i in idx]
    names = [n for n in dict.fromkeys(n for _, n in files) if n is not None]
    all_names = sorted({d.name for d in folder.iterdir() if d.is_dir()}) if names else []
    numeric = bool(names) and all(n.isdigit() for n in all_names)
    index = {n: (int(n) if numeric else all_names.index(n)) for n in names}
    mean = np.asarray(pre.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre.std, np.float32).reshape(-1, 1, 1)
    xs = np.empty((len(files), c, h, w), np.float32)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as img:
                img = img.convert("L" if channels == "gray" else "RGB")
                if img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                a = np.asarray(img, dtype=np.float32)
        except OSError as exc:
            raise DataSourceError(f"{where}: {path} is not a readable image ({exc})") from None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if channels == "bgr":
            a = a[::-1]
        xs[i] = (a / np.float32(255.0) - mean) / std
    if layout == "nhwc":
        xs = xs.transpose(0, 2, 3, 1)
    x = check_input_batch(value, np.ascontiguousarray(xs), where)
    labels = np.asarray([index[n] for _, n in files], np.int64) if names else None
    return Samples(folder.name, x, labels, 0, "classification",
                   all_names if names and not numeric else [])


def _check_labels(data: "Samples | Dataset", graph: Graph, where: str) -> None:
    """Fill a `Samples`' class count from the model output and check the labels fit."""
    if not isinstance(data, Samples) or data.labels is None:
        return
    out = tuple(graph.outputs[0].shape)
    classes = int(out[1]) if len(out) >= 2 else 0
    top = int(data.labels.max()) + 1 if data.labels.size else 0
    if classes and top > classes:
        raise DataSourceError(f"{where}: labels go up to {top - 1}, the model output "
                              f"'{graph.outputs[0].name}' has {classes} classes")
    data.num_classes = classes or top
    if data.labels.min() < 0:
        raise DataSourceError(f"{where}: negative labels")


# --------------------------------------------------------------------------- for passes

def calibration_batches(data: "Samples | Dataset", graph: Graph,
                        batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """``PassContext.calibration_data``: input dicts of up to ``batch_size`` samples."""
    value = _single_input(graph, "calibration data")
    n = len(data)
    return [{value.name: check_input_batch(value, data.inputs(s, min(s + batch_size, n)),
                                           "calibration data")}
            for s in range(0, n, batch_size)]


def make_evaluator(data: "Samples | Dataset", metric: str | None = None
                   ) -> Callable[[Graph], float]:
    """``PassContext.evaluate``: graph -> score of ``metric`` on ``data`` (interpreter)."""
    if getattr(data, "labels", None) is None:
        raise DataSourceError(f"evaluation data {getattr(data, 'name', data)!r} has no labels: "
                              "use a folder with class subfolders, an .npz with 'y', or a "
                              "data set name")
    from .evaluate import evaluate

    metric = metric_name(metric)

    def score(graph: Graph) -> float:
        return float(evaluate(graph, data, metric).value)

    return score
