"""Score a model on a real data set: top-1 accuracy, macro F1, mean IoU.

`evaluate` accepts what a user holds at any stage: an ONNX file or proto, an IR
`Graph` (scored by the reference interpreter, in batches), or a `CompiledModel` (run
on its target, one sample at a time, as deployed).  Metrics come from one confusion
matrix, so accuracy, F1 and IoU of the same predictions are always consistent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from .batching import BatchSizeError, with_batch_size
from .interpreter import Interpreter
from .ir import Graph

Metric = Literal["top1", "macro_f1", "miou"]
METRICS: tuple[str, ...] = ("top1", "macro_f1", "miou")

__all__ = ["evaluate", "EvalResult", "EvaluationError", "confusion_matrix", "METRICS"]


class EvaluationError(ValueError):
    """Model and data set (or metric) do not fit together."""


@dataclass
class EvalResult:
    metric: str
    value: float
    samples: int
    confusion: np.ndarray = field(repr=False)

    @property
    def top1(self) -> float:
        return float(np.trace(self.confusion) / max(self.confusion.sum(), 1))

    @property
    def macro_f1(self) -> float:
        return _macro_f1(self.confusion)

    @property
    def miou(self) -> float:
        return mean_iou(self.confusion)

    def __str__(self) -> str:
        return f"{self.metric}={self.value:.4f} on {self.samples} samples"


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, predicted]`` counts (pixels count individually for segmentation)."""
    labels = labels.reshape(-1).astype(np.int64)
    predictions = predictions.reshape(-1).astype(np.int64)
    return np.bincount(labels * num_classes + predictions,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _macro_f1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(np.float64)
    precision_den = cm.sum(axis=0)
    recall_den = cm.sum(axis=1)
    denom = precision_den + recall_den
    present = recall_den > 0  # classes that occur in the labels
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1[present].mean()) if present.any() else 0.0


def mean_iou(cm: np.ndarray) -> float:
    """Mean intersection-over-union of a confusion matrix (rows: labels, columns:
    predictions), averaged over the classes that occur in the labels; a class that is
    predicted but absent from the labels is not averaged in.  The one mIoU formula of the
    project (scripts/train_baselines.py uses it too)."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    present = cm.sum(axis=1) > 0
    iou = np.where(union > 0, tp / np.maximum(union, 1), 0.0)
    return float(iou[present].mean()) if present.any() else 0.0


def _metric_value(metric: str, cm: np.ndarray) -> float:
    if metric == "top1":
        return float(np.trace(cm) / max(cm.sum(), 1))
    if metric == "macro_f1":
        return _macro_f1(cm)
    return mean_iou(cm)


def _as_predictor(model: Any, batch_size: int) -> tuple[Graph, Callable[[np.ndarray], np.ndarray], int]:
    """(graph for shape checks, a function batch -> first output, batch size it takes)."""
    from .artifact import CompiledModel

    if isinstance(model, CompiledModel):
        graph = model.graph
        name = graph.inputs[0].name
        fixed = graph.inputs[0].shape[0]

        def run_compiled(x: np.ndarray) -> np.ndarray:
            return np.concatenate([model.run({name: x[i:i + fixed]})[0]
                                   for i in range(0, len(x), fixed)])

        return graph, run_compiled, fixed
    if not isinstance(model, Graph):
        from .onnx_io import import_model

        model = import_model(model)
    graph = model
    if len(graph.inputs) != 1:
        raise EvaluationError(f"evaluate() needs a single-input model; '{graph.name}' has "
                              f"{len(graph.inputs)} inputs")
    try:
        batched = with_batch_size(graph, batch_size)
    except BatchSizeError:
        batched, batch_size = graph, graph.inputs[0].shape[0]
    interp = Interpreter(batched)
    name = batched.inputs[0].name
    return graph, lambda x: interp.run({name: x})[0], batch_size


def evaluate(model: Any, dataset: Any, metric: str | None = None, *, batch_size: int = 100,
             limit: int | None = None, progress: bool = False) -> EvalResult:
    """Score ``model`` on ``dataset`` (a `compiler.datasets.Dataset`).

    ``metric`` defaults to ``top1`` for classification and ``miou`` for segmentation;
    ``limit`` scores only the first ``limit`` samples (for quick checks).
    """
    task = getattr(dataset, "task", "classification")
    metric = metric or ("miou" if task == "segmentation" else "top1")
    if metric not in METRICS:
        raise EvaluationError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    if metric == "miou" and task != "segmentation":
        raise EvaluationError(f"metric 'miou' needs per-pixel labels; data set "
                              f"'{dataset.name}' is a {task} set")
    graph, predict, step = _as_predictor(model, batch_size)
    x_value, y_value = graph.inputs[0], graph.outputs[0]
    sample_shape = tuple(dataset.inputs(0, 1).shape[1:])
    if tuple(x_value.shape[1:]) != sample_shape:
        raise EvaluationError(f"model input '{x_value.name}' expects samples of shape "
                              f"{tuple(x_value.shape[1:])}, data set '{dataset.name}' gives "
                              f"{sample_shape}")
    classes = dataset.num_classes
    out_shape = tuple(y_value.shape[1:])
    if task == "segmentation":
        label_shape = tuple(dataset.labels.shape[1:])
        if len(out_shape) != 3 or out_shape[0] != classes or out_shape[1:] != label_shape:
            raise EvaluationError(f"model output '{y_value.name}' has per-sample shape "
                                  f"{out_shape}; segmentation of '{dataset.name}' needs "
                                  f"({classes}, {label_shape[0]}, {label_shape[1]})")
    elif out_shape != (classes,):
        raise EvaluationError(f"model output '{y_value.name}' has per-sample shape {out_shape}; "
                              f"'{dataset.name}' has {classes} classes, so it must be ({classes},)")
    total = len(dataset) if limit is None else min(limit, len(dataset))
    cm = np.zeros((classes, classes), dtype=np.int64)
    starts = range(0, total, step)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"evaluate {dataset.name}", unit="batch")
    for start in starts:
        stop = min(start + step, total)
        x = dataset.inputs(start, stop)
        if len(x) < step:  # last partial batch: pad, then drop the padding's predictions
            x = np.concatenate([x, np.repeat(x[-1:], step - len(x), axis=0)])
        logits = predict(x)[: stop - start]
        cm += confusion_matrix(dataset.labels[start:stop], logits.argmax(axis=1), classes)
    return EvalResult(metric, _metric_value(metric, cm), total, cm)
