"""Calibration: observe every float tensor over `PassContext.calibration_data`, then pick
each tensor's clipping range by min-max, percentile or entropy (KL divergence).

Definitions (ours; the research gives none):

* ``minmax``: ``[min, max]`` over all calibration samples.
* ``percentile`` (``p``, default 99.99): symmetric ``T = percentile(|x|, p)``; asymmetric
  ``[percentile(x, 100 - p), percentile(x, p)]``.
* ``entropy`` (TensorRT's KL calibration): a 2048-bin histogram of ``|x|``; for every
  candidate threshold ``i`` bins, the reference distribution ``P`` is
  the histogram cut at ``i`` with the outliers added to its last bin, ``Q`` is ``P``
  merged into ``levels = 2**(bits-1)`` buckets and spread back over the non-empty bins;
  the threshold minimizing ``KL(P || Q)`` wins.  Candidates start at 128 bins, and the
  zero bin counts like its neighbour (the spike of exact zeros after a ReLU otherwise
  drives the threshold to the smallest candidate; NVIDIA pytorch-quantization does the same).
  Symmetric: ``T`` from ``|x|``, range ``[max(min, -T), min(max, T)]``; asymmetric (the
  default): ``hi`` from the positive values, ``lo`` from the negated negative values, each
  side on its own (an image's background spike at a negative value would otherwise clip
  the whole positive side).
* ``mse``: the min-max range shrunk by the factor ``a`` in ``{0.2, 0.22, ..., 1}`` (both ends
  alike) that minimizes the mean squared error between the sampled values and their
  quantize-dequantize at the tensor's bit width (with its scale and zero point): the
  clipping of a few outliers is traded against the rounding of everything else, which
  matters most at low bit widths.

Statistics keep the exact min/max and a seeded random subsample (at most 65,536 values per
tensor per calibration batch, 262,144 in all) from which percentiles and histograms are
computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from compiler.batching import with_batch_size
from compiler.data_sources import DataSourceError, check_input_batch
from compiler.interpreter import InputError, Interpreter, check_inputs
from compiler.ir import Graph, Node
from compiler.pass_manager import PassDataError

__all__ = ["CalibrationError", "TensorStats", "Observer", "collect_stats", "calibrate_range",
           "kl_threshold", "CALIBRATION_METHODS"]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy", "mse")
HOW_TO_PASS = ("give --calibration SRC on the command line (a folder of images, a .npy/.npz "
               "file or a data set name such as mnist), or pass it as compiler.compile(model, "
               "passes=[...], calibration_data=[{input_name: array}, ...] or a source as "
               "above) or PassContext(calibration_data=[{input_name: array}, ...])")


class CalibrationError(PassDataError):
    """Calibration data is missing or does not fit the model."""


@dataclass
class TensorStats:
    lo: float = np.inf
    hi: float = -np.inf
    samples: list[np.ndarray] = field(default_factory=list)
    count: int = 0
    # tensors of rank >= 3 (N, C, ...): exact per-channel min/max and the channel of
    # every sampled value (for channel equalization, see `scaled`)
    ch_lo: np.ndarray | None = None
    ch_hi: np.ndarray | None = None
    sample_ch: list[np.ndarray] = field(default_factory=list)
    PER_BATCH = 65536
    TOTAL = 262144

    def update(self, array: np.ndarray, rng: np.random.Generator) -> None:
        array = np.asarray(array, dtype=np.float32)
        flat = array.reshape(-1)
        if not flat.size:
            return
        self.lo = min(self.lo, float(flat.min()))
        self.hi = max(self.hi, float(flat.max()))
        self.count += flat.size
        per_channel = array.ndim >= 3 and (self.ch_lo is None or self.ch_lo.size == array.shape[1])
        if per_channel:
            axes = (0,) + tuple(range(2, array.ndim))
            lo, hi = array.min(axis=axes), array.max(axis=axes)
            self.ch_lo = lo if self.ch_lo is None else np.minimum(self.ch_lo, lo)
            self.ch_hi = hi if self.ch_hi is None else np.maximum(self.ch_hi, hi)
        else:
            self.ch_lo = self.ch_hi = None
            self.sample_ch = []
        index = (rng.choice(flat.size, self.PER_BATCH, replace=False)
                 if flat.size > self.PER_BATCH else np.arange(flat.size))
        self.samples.append(flat[index].copy())
        if per_channel:
            inner = int(np.prod(array.shape[2:]))
            self.sample_ch.append(((index // inner) % array.shape[1]).astype(np.int32))
        if sum(s.size for s in self.samples) > 2 * self.TOTAL:
            pool = np.concatenate(self.samples)
            keep = rng.choice(pool.size, self.TOTAL, replace=False)
            self.samples = [pool[keep]]
            if self.sample_ch:
                self.sample_ch = [np.concatenate(self.sample_ch)[keep]]

    def values(self) -> np.ndarray:
        return np.concatenate(self.samples) if self.samples else np.zeros(1, np.float32)

    def scaled(self, gain: np.ndarray) -> "TensorStats":
        """The statistics of the same tensor with channel ``c`` multiplied by ``gain[c] > 0``."""
        if self.ch_lo is None or not self.sample_ch:
            raise ValueError("per-channel statistics were not recorded for this tensor")
        gain = np.asarray(gain, dtype=np.float64)
        lo, hi = self.ch_lo * gain, self.ch_hi * gain
        ch = np.concatenate(self.sample_ch)
        samples = (self.values().astype(np.float64) * gain[ch]).astype(np.float32)
        return TensorStats(float(lo.min()), float(hi.max()), [samples], self.count,
                           lo.astype(np.float32), hi.astype(np.float32), [ch])


class Observer(Interpreter):
    """An interpreter that records `TensorStats` of every float value it computes."""

    def __init__(self, graph: Graph, stats: dict[str, TensorStats], seed: int = 0):
        super().__init__(graph)
        self.stats = stats
        self.rng = np.random.default_rng(seed)

    def observe(self, name: str, array: np.ndarray) -> None:
        if np.issubdtype(array.dtype, np.floating):
            self.stats.setdefault(name, TensorStats()).update(array, self.rng)

    def run(self, inputs, **kwargs):
        for value in self.graph.inputs:
            if isinstance(inputs, Mapping) and value.name in inputs:
                self.observe(value.name, np.asarray(inputs[value.name]))
        return super().run(inputs, **kwargs)

    def run_node(self, node: Node, args: list) -> list[np.ndarray]:
        results = super().run_node(node, args)
        for value, array in zip(node.outputs, results):
            self.observe(value.name, array)
        return results


def _check_samples(graph: Graph, data: Any, pass_name: str) -> list[dict[str, np.ndarray]]:
    if data is None or (hasattr(data, "__len__") and len(data) == 0):
        raise CalibrationError(f"pass '{pass_name}' needs calibration data (a list of input "
                               f"dicts from real data); {HOW_TO_PASS}")
    if isinstance(data, Mapping):
        data = [data]
    samples = []
    expected = {v.name: tuple(v.shape) for v in graph.inputs}
    for index, sample in enumerate(data):
        if not isinstance(sample, Mapping):
            raise CalibrationError(f"calibration sample {index} is a {type(sample).__name__}, "
                                   f"not a dict of input name -> array; {HOW_TO_PASS}")
        arrays = {}
        for name, array in sample.items():
            if name not in expected:
                raise CalibrationError(f"calibration sample {index} names input '{name}', "
                                       f"which the model does not have; its inputs: "
                                       f"{sorted(expected)}")
            value = next(v for v in graph.inputs if v.name == name)
            try:  # shape and dtype checked like run() inputs (the batch may differ)
                arrays[name] = check_input_batch(value, array, f"calibration sample {index}")
            except DataSourceError as exc:
                raise CalibrationError(str(exc)) from None
        missing = sorted(set(expected) - set(arrays))
        if missing:
            raise CalibrationError(f"calibration sample {index} lacks input(s) {missing}")
        batches = {a.shape[0] for a in arrays.values()}
        if len(batches) != 1:
            raise CalibrationError(f"calibration sample {index}: inputs disagree on the batch "
                                   f"size {sorted(batches)}")
        samples.append(arrays)
    return samples


def collect_stats(graph: Graph, data: Any, *, seed: int = 0,
                  pass_name: str = "quantize") -> dict[str, TensorStats]:
    """Run ``graph`` on every calibration sample; stats of every float value by name."""
    samples = _check_samples(graph, data, pass_name)
    stats: dict[str, TensorStats] = {}
    observers: dict[int, Observer] = {}
    from compiler.logs import progress

    for sample in progress(samples, desc=f"{pass_name}: calibration", unit="batch"):
        batch = next(iter(sample.values())).shape[0]
        if batch not in observers:
            observers[batch] = Observer(with_batch_size(graph, batch), stats, seed)
        try:
            observers[batch].run(sample)
        except InputError as exc:
            raise CalibrationError(f"calibration data does not fit the model: {exc}") from None
    return stats


def kl_threshold(abs_values: np.ndarray, levels: int, bins: int = 2048) -> float:
    """TensorRT-style entropy calibration threshold of ``|x|`` for ``levels`` positive levels."""
    top = float(abs_values.max()) if abs_values.size else 0.0
    if top <= 0:
        return 0.0
    hist, edges = np.histogram(abs_values, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    # the spike of exact zeros after a ReLU would make every merge of bin 0 look costly
    # and drive the threshold down to `levels` bins: count bin 0 like its neighbour (as
    # NVIDIA's pytorch-quantization does)
    if bins > 1:
        hist[0] = hist[1]
    best, best_i = np.inf, bins
    levels = max(1, int(levels))
    for i in range(min(bins, max(levels, 128)), bins + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nonzero = p > 0
        # merge into `levels` buckets, then spread each bucket over its non-empty bins
        idx = (np.arange(i) * levels) // i
        sums = np.bincount(idx, weights=hist[:i], minlength=levels)
        counts = np.bincount(idx, weights=nonzero.astype(np.float64), minlength=levels)
        q = np.where(nonzero, sums[idx] / np.maximum(counts[idx], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            continue
        pn, qn = p / ps, q / qs
        mask = pn > 0
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / np.maximum(qn[mask], 1e-12))))
        if kl < best:
            best, best_i = kl, i
    return float(edges[best_i]) if best_i < len(edges) else top


def mse_range(values: np.ndarray, lo: float, hi: float, bits: int, symmetric: bool
              ) -> tuple[float, float]:
    """The range ``a * [lo, hi]`` (``a`` in 0.2..1) whose quantization has the least MSE."""
    from .quantize import act_qparams

    values = np.asarray(values, dtype=np.float64)
    best, best_range = np.inf, (lo, hi)
    for a in np.linspace(1.0, 0.2, 41):
        ap = act_qparams(lo * a, hi * a, bits, symmetric and bits >= 2)
        q = np.clip(np.rint(values / ap.scale) + ap.zero_point, ap.qmin, ap.qmax)
        err = float(np.mean(((q - ap.zero_point) * ap.scale - values) ** 2))
        if err < best:
            best, best_range = err, (lo * a, hi * a)
    return best_range


def calibrate_range(stats: TensorStats, method: str, *, bits: int = 8, symmetric: bool = False,
                    percentile: float = 99.99) -> tuple[float, float]:
    """The clipping range ``(lo, hi)`` of one tensor by ``method``."""
    if method not in CALIBRATION_METHODS:
        raise CalibrationError(f"unknown calibration method '{method}'; choose one of "
                               f"{', '.join(CALIBRATION_METHODS)}")
    lo, hi = float(stats.lo), float(stats.hi)
    if not np.isfinite(lo) or not np.isfinite(hi):
        return 0.0, 0.0
    if method == "minmax":
        return lo, hi
    values = stats.values().astype(np.float64)
    if method == "percentile":
        if symmetric:
            t = float(np.percentile(np.abs(values), percentile))
            return max(lo, -t), min(hi, t)
        return (max(lo, float(np.percentile(values, 100.0 - percentile))),
                min(hi, float(np.percentile(values, percentile))))
    if method == "mse":
        return mse_range(values, lo, hi, bits, symmetric)
    levels = 2 ** (max(bits, 2) - 1)
    if symmetric:
        t = kl_threshold(np.abs(values), levels)
        return max(lo, -t), min(hi, t)
    # asymmetric: each side's threshold from its own values (a spike on one side, such as
    # an image's background, must not decide the other side's clipping)
    pos, neg = values[values > 0], -values[values < 0]
    t_hi = kl_threshold(pos, levels) if pos.size else 0.0
    t_lo = kl_threshold(neg, levels) if neg.size else 0.0
    return max(lo, -t_lo), min(hi, t_hi)
