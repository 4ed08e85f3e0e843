"""Requantization as FINN hardware does it: per-channel thresholds on the accumulator.

Our integer graph requantizes with a fixed-point multiplier (`compiler.ops.quant`)::

    y = clip(((acc * M + 2**(s-1)) >> s) + zp, qmin, qmax)        # M >= 0, s >= 1

A FINN MVAU/Thresholding unit has no multiplier: it compares the accumulator with
``qmax - qmin`` sorted thresholds per channel and outputs ``qmin + #{k : T_k <= acc}``
(qonnx ``MultiThreshold`` semantics, comparison ``>=``).  Because ``acc -> y`` is
non-decreasing for ``M >= 0``, the two are the same function when

    T_k = ceil(((k - zp) * 2**s - 2**(s-1)) / M)     for k = qmin+1 .. qmax

(``y >= k  <=>  acc*M + 2**(s-1) >= (k-zp)*2**s``); the clip is the count saturating at
0 and ``qmax - qmin``, so a fused ReLU/ReLU6 (``qmin = zp`` / a lower ``qmax``) costs no
extra hardware.  ``M == 0`` (a factor too small for 62 shift bits) is the constant
``clip(zp)``: thresholds at +/-inf.  The arithmetic is in Python integers (``2**62``
overflows int64) and the thresholds are saturated to the int64 range, which no int32
accumulator can reach.  `tests/fpga_tests/test_thresholds.py` proves the equality
exhaustively over the accumulator range of small layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .options import FpgaSimError

__all__ = ["Thresholds", "derive_thresholds", "apply_thresholds", "requantize_thresholds"]

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


@dataclass(frozen=True)
class Thresholds:
    """``values``: int64 ``[channels, qmax - qmin]``, each row ascending; output is
    ``offset + count(values[c] <= acc)`` for channel ``c``."""

    values: np.ndarray
    offset: int

    @property
    def channels(self) -> int:
        return int(self.values.shape[0])

    @property
    def steps(self) -> int:
        """Thresholds per channel (``2**B - 1`` for a full ``B``-bit output range)."""
        return int(self.values.shape[1])


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def derive_thresholds(multiplier, shift, zero_point: int, qmin: int, qmax: int,
                      channels: int | None = None, bias=None) -> Thresholds:
    """Thresholds equal to ``clip(rescale(acc + bias, M, s) + zp, qmin, qmax)``.

    ``multiplier``/``shift`` are scalars or per-channel 1-D arrays (broadcast to
    ``channels``).  ``bias`` (optional, per channel) is folded into the thresholds as
    FINN does (the MVAU then accumulates without it): ``T_k - bias``.
    """
    m = np.atleast_1d(np.asarray(multiplier, dtype=np.int64)).reshape(-1)
    s = np.atleast_1d(np.asarray(shift, dtype=np.int64)).reshape(-1)
    n = channels or max(m.size, s.size)
    if m.size not in (1, n) or s.size not in (1, n):
        raise FpgaSimError(f"requantize: multiplier ({m.size}) and shift ({s.size}) must be "
                           f"scalars or have one entry per channel ({n})")
    m, s = np.broadcast_to(m, (n,)), np.broadcast_to(s, (n,))
    b = (np.zeros(n, dtype=np.int64) if bias is None
         else np.broadcast_to(np.atleast_1d(np.asarray(bias, dtype=np.int64)).reshape(-1), (n,)))
    qmin, qmax, zp = int(qmin), int(qmax), int(zero_point)
    if qmax < qmin:
        raise FpgaSimError(f"requantize: qmax {qmax} < qmin {qmin}")
    out = np.empty((n, qmax - qmin), dtype=np.int64)
    for c in range(n):
        mc, sc, bc = int(m[c]), int(s[c]), int(b[c])
        if mc < 0:
            raise FpgaSimError(f"requantize: channel {c} has a negative multiplier {mc}; the "
                               "quantizer only produces M >= 0 (descending thresholds are "
                               "not modelled)")
        if sc < 1:
            raise FpgaSimError(f"requantize: channel {c} has shift {sc} < 1")
        for j, k in enumerate(range(qmin + 1, qmax + 1)):
            if mc == 0:  # constant output clip(zp): threshold reached always or never
                t = _INT64_MIN if k <= zp else _INT64_MAX
            else:
                t = _ceil_div((k - zp) * (1 << sc) - (1 << (sc - 1)), mc) - bc
            out[c, j] = min(max(t, _INT64_MIN), _INT64_MAX)
    return Thresholds(out, qmin)


def apply_thresholds(acc: np.ndarray, thresholds: Thresholds, axis: int = 1) -> np.ndarray:
    """``offset + count(T[c] <= acc)`` along channel ``axis`` (int8), as the hardware does."""
    acc = np.asarray(acc, dtype=np.int64)
    t = thresholds.values
    c = acc.shape[axis] if acc.ndim else 1
    if t.shape[0] not in (1, c):
        raise FpgaSimError(f"thresholds have {t.shape[0]} channels, the accumulator {c}")
    moved = np.moveaxis(acc, axis, -1) if acc.ndim else acc.reshape(1)
    counts = (moved[..., None] >= np.broadcast_to(t, (c, t.shape[1]))).sum(axis=-1)
    y = counts + thresholds.offset
    y = np.moveaxis(y, -1, axis) if acc.ndim else y.reshape(())
    return y.astype(np.int8)


def requantize_thresholds(graph, node, fold_bias: bool = False) -> Thresholds:
    """The thresholds of a ``q.Requantize`` ``node`` of ``graph`` (constants read from it).

    With ``fold_bias`` and a producer ``q.Conv``/``q.Gemm`` that has a constant bias, the
    bias is folded in (FINN's MVAU accumulates without it)."""
    if node.domain != "q" or node.op_type != "Requantize":
        raise FpgaSimError(f"node {node.name!r} ({node.op_type}) is not a q.Requantize")
    mult, shift = (v.const for v in node.inputs[1:3])
    if mult is None or shift is None:
        raise FpgaSimError(f"node {node.name!r}: multiplier and shift must be constants")
    channels = node.inputs[0].shape[int(node.attrs.get("axis", 1))] \
        if node.inputs[0].shape else None
    bias = None
    if fold_bias:
        prod = node.inputs[0].producer
        if prod is not None and len(prod.inputs) > 2 and prod.inputs[2].const is not None:
            bias = prod.inputs[2].const
    return derive_thresholds(mult, shift, int(node.attrs.get("zero_point", 0)),
                             int(node.attrs["qmin"]), int(node.attrs["qmax"]),
                             channels=channels if np.size(mult) > 1 else None, bias=bias)
