"""Integer (quantized) ops: our own ``q`` domain, plus the ONNX integer ops for import.

Number format
-------------
A quantized tensor is stored in an **int8 container** and means
``real = scale * (q - zero_point)`` (`compiler.ir.QuantParams` on its `Value`).  Any
bit width ``b`` in 1..8 is a *range* inside the container:

* activations: ``[qmin, qmax] = [-2**(b-1), 2**(b-1) - 1]`` (asymmetric, any zero point
  in that range) or ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` with zero point 0 (symmetric);
* weights: symmetric per output channel, ``[-(2**(b-1) - 1), 2**(b-1) - 1]``; with
  ``b = 1`` (binary weights) the stored value is the sign, +1 or -1, and the channel's
  scale is the magnitude ``a`` (``w ~ a * sign(w)``);
* accumulators and biases are int32 (``bias_q = round(bias / (s_x * s_w))``).

Everything between `q.Quantize` and `q.Dequantize` is integer arithmetic with int64
intermediates; no float is touched.  Rescaling uses a fixed-point multiplier: a real
factor ``m`` is ``M * 2**-shift`` with ``M`` an int32 (`quantize_multiplier`), and
``rescale(v) = (v * M + 2**(shift-1)) >> shift`` (arithmetic shift: rounds half up, i.e.
toward +inf).  The TVM lowering (``targets/tvm/lowering/quant.py``) computes exactly the
same integers.

Ops of domain ``q`` (all attributes explicit, all written by the ``quantize`` pass)
---------------------------------------------------------------------------------
``q.Quantize(x: f32) {scale, zero_point, qmin, qmax} -> i8``
    ``clip(rint(x * (1/scale)) + zero_point, qmin, qmax)``; ``1/scale`` is rounded to
    float32 once, ``rint`` rounds half to even.
``q.Dequantize(q: i8|i32) {scale, zero_point} -> f32``
    ``float32(q - zero_point) * float32(scale)``.
``q.Conv(x: i8, w: i8, bias: i32?) {kernel_shape, strides, pads, dilations, group,
x_zero_point} -> i32``
    ``conv(x - x_zero_point, w) + bias``; padding is zero *in the real domain* (the
    input is padded with ``x_zero_point``).
``q.ConvTranspose(x: i8, w: i8 [C, M/group, kh, kw], bias: i32?) {kernel_shape, strides,
pads, dilations, group, output_padding, x_zero_point} -> i32``
    ``conv_transpose(x - x_zero_point, w) + bias`` (2-D, explicit pads, which may be
    negative at the end: zero rows, + bias).
``q.Gemm(a: i8 [M,K], b: i8, bias: i32?) {transB, a_zero_point} -> i32``
    ``(a - a_zero_point) @ op(b) + bias``.
``q.MatMul(a: i8, b: i8) {a_zero_point, b_zero_point} -> i32``
    ``(a - a_zp) @ (b - b_zp)`` with numpy broadcasting of the batch dimensions.
``q.Requantize(acc: i32, multiplier: i32, shift: i32) {axis, zero_point, qmin, qmax} -> i8``
    ``clip(rescale(acc) + zero_point, qmin, qmax)`` with per-channel ``multiplier`` and
    ``shift`` (1-D along ``axis``, or scalars).  A fused ReLU is ``qmin = zero_point``,
    a fused ReLU6 also ``qmax = zero_point + round(6 / scale)``.
``q.Add(a: i8, b: i8) {a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift,
zero_point, qmin, qmax} -> i8``
    ``clip(((a - za) * Ma + (b - zb) * Mb + 2**(shift-1)) >> shift + zero_point, ...)``:
    both inputs are rescaled to the output scale with one shared shift and rounded once.
``q.Concat(x0, x1, ...: i8) {axis, zero_points, multipliers, shift, zero_point, qmin, qmax}``
    each input rescaled like ``q.Add``'s terms, then concatenated.
``q.Clip(x: i8) {qmin, qmax}``: a ReLU / ReLU6 / bit-width clamp that could not be fused.
``q.AveragePool(x: i8) {kernel_shape, strides, pads, ceil_mode, count_include_pad,
zero_point}`` and ``q.GlobalAveragePool(x: i8) {zero_point}``
    same scale and zero point out as in; ``zp + floor((2 * S + n) / (2 * n))`` where ``S``
    is the window's sum of ``x - zp`` over ``n`` counted pixels (round half up).
``q.Resize(x: i8 [N,C,H,W], mh: i32 [Ho,H], mw: i32 [Wo,W]) {shift, zero_point} -> i8``
    separable interpolation with integer weights (each row sums to ``2**(shift/2)``):
    ``zp + ((mh @ (x - zp) @ mw.T + 2**(shift-1)) >> shift)``, clipped to int8; same scale
    and zero point out as in.  `resize_matrices` builds ``mh``/``mw`` from an ONNX Resize
    (linear or cubic; any coordinate transform but tf_crop_and_resize).
Max pooling needs no op of its own: ONNX ``MaxPool`` on int8 is exact (same params), nor
does nearest ``Resize`` (pure data movement on int8).

ONNX ops registered here so that already-quantized models import
-------------------------------------------------------------------------------
``QuantizeLinear``, ``DequantizeLinear`` (opset 13 semantics, per-axis),
``DynamicQuantizeLinear``, ``ConvInteger``, ``MatMulInteger``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..ir import Node
from .conv_util import (conv_output_shape, has_input, input_dtype, input_shape, invalid,
                        normalize_axis, pool_output_shape, strided_window, window_params)
from .macs import conv_macs, conv_transpose_macs, gemm_macs, matmul_macs
from .registry import UnsupportedOpError, WeightLayer, register_op

__all__ = ["Q", "quantize_multiplier", "rescale", "qrange", "conv_int", "conv_transpose_int",
           "int_pool_sum", "resize_matrices", "RESIZE_FRAC_BITS"]

Q = "q"  # the domain of our integer ops

_I8 = np.dtype(np.int8)
_I32 = np.dtype(np.int32)
_F32 = np.dtype(np.float32)


# =====================================================================================
# fixed-point helpers (shared with the quantize pass)
# =====================================================================================

def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """The ``[qmin, qmax]`` range of ``bits``-bit values in an int8 container."""
    bits = int(bits)
    if not 1 <= bits <= 8:
        raise ValueError(f"bit width {bits} is outside 1..8")
    if symmetric:
        if bits == 1:
            return -1, 1  # binary: the sign
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def quantize_multiplier(real: Any, max_shift: int = 62) -> tuple[np.ndarray, np.ndarray]:
    """``real ~= M * 2**-shift`` with ``M`` in ``[2**30, 2**31)`` (int32) and ``1 <= shift
    <= max_shift``, elementwise.  Factors too small for ``max_shift`` become ``M = 0``."""
    real = np.asarray(real, dtype=np.float64)
    if np.any(real < 0) or not np.all(np.isfinite(real)):
        raise ValueError(f"rescale factors must be finite and >= 0, got {real}")
    mant, exp = np.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    m = np.round(mant * 2.0 ** 31).astype(np.int64)
    carry = m == 2 ** 31
    m = np.where(carry, 2 ** 30, m)
    exp = np.where(carry, exp + 1, exp)
    shift = 31 - exp.astype(np.int64)
    if np.any((shift < 1) & (real > 0)):
        raise ValueError(f"rescale factor {real.max():g} is too large for a fixed-point "
                         "multiplier (must be < 2**30)")
    tiny = (shift > max_shift) | (real == 0)
    m = np.where(tiny, 0, m)
    shift = np.where(tiny, 1, shift)
    return m.astype(np.int32), shift.astype(np.int32)


def shared_multipliers(reals: Sequence[float]) -> tuple[list[int], int]:
    """Int multipliers for several factors sharing one shift (``real_i ~= M_i * 2**-shift``,
    every ``M_i < 2**31``), for `q.Add` and `q.Concat`."""
    reals = [float(r) for r in reals]
    top = max(reals)
    if top <= 0:
        return [0] * len(reals), 1
    _, exp = np.frexp(top)
    shift = int(min(62, max(1, 31 - int(exp))))
    mults = [int(round(r * 2.0 ** shift)) for r in reals]
    if max(mults) >= 2 ** 31:
        shift -= 1
        mults = [int(round(r * 2.0 ** shift)) for r in reals]
    return mults, shift


def rescale(v: np.ndarray, multiplier: Any, shift: Any) -> np.ndarray:
    """``(v * M + 2**(shift-1)) >> shift`` in int64 (round half toward +inf)."""
    v = np.asarray(v, dtype=np.int64)
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    return (v * m + (np.int64(1) << (s - 1))) >> s


def conv_int(x: np.ndarray, w: np.ndarray, strides, pads, dilations, group: int) -> np.ndarray:
    """Exact integer convolution of (already zero-point-corrected) int arrays -> int64.

    Computed in float64 through the float kernel (numpy im2col + matmul): every product and
    partial sum of int8 ranges is an integer far below 2**53, so the result is exact. numpy
    only: the reference never depends on whether torch is installed."""
    from .nn import conv_nd

    y = conv_nd(x.astype(np.float64), w.astype(np.float64), None, strides, pads, dilations, group)
    return np.rint(y).astype(np.int64)


def _matmul_int(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.rint(np.matmul(a.astype(np.float64), b.astype(np.float64))).astype(np.int64)


def _as_int(value: Any) -> int:
    return int(np.asarray(value).reshape(-1)[0]) if np.ndim(value) else int(value)


def _expect(node: Node, index: int, dtypes: Sequence[Any], what: str) -> np.dtype:
    dtype = input_dtype(node, index)
    if dtype not in [np.dtype(d) for d in dtypes]:
        raise invalid(node, f"{what} (input {index}) has dtype {dtype}, expected "
                            f"{' or '.join(str(np.dtype(d)) for d in dtypes)}")
    return dtype


def _clip_range(node: Node) -> None:
    qmin, qmax = int(node.attrs.get("qmin", -128)), int(node.attrs.get("qmax", 127))
    if not -128 <= qmin <= qmax <= 127:
        raise invalid(node, f"qmin={qmin}, qmax={qmax} is not a range inside int8")


# =====================================================================================
# q.Quantize / q.Dequantize / q.Clip
# =====================================================================================

def _infer_quantize(node: Node):
    _expect(node, 0, [np.float32], "X")
    _clip_range(node)
    if not float(node.attrs.get("scale", 0)) > 0:
        raise invalid(node, f"scale must be > 0, got {node.attrs.get('scale')}")
    return [(input_shape(node, 0), _I8)]


@register_op("Quantize", infer=_infer_quantize, domain=Q)
def q_quantize(attrs, x):
    """float32 -> int8: clip(rint(x * float32(1/scale)) + zero_point, qmin, qmax)."""
    inv = np.float32(1.0 / float(attrs["scale"]))
    q = np.rint(x.astype(np.float32) * inv)
    q = np.clip(q, -1e9, 1e9).astype(np.int64) + int(attrs.get("zero_point", 0))
    return np.clip(q, int(attrs["qmin"]), int(attrs["qmax"])).astype(np.int8)


def _infer_dequantize(node: Node):
    _expect(node, 0, [np.int8, np.int32], "Q")
    return [(input_shape(node, 0), _F32)]


@register_op("Dequantize", infer=_infer_dequantize, domain=Q)
def q_dequantize(attrs, q):
    """int8/int32 -> float32: float32(q - zero_point) * float32(scale)."""
    v = (q.astype(np.int64) - int(attrs.get("zero_point", 0))).astype(np.float32)
    return v * np.float32(attrs["scale"])


def _infer_clip(node: Node):
    _expect(node, 0, [np.int8], "X")
    _clip_range(node)
    return [(input_shape(node, 0), _I8)]


@register_op("Clip", infer=_infer_clip, domain=Q)
def q_clip(attrs, x):
    """int8 clamp to [qmin, qmax] (an unfused ReLU/ReLU6 or a bit-width clamp)."""
    return np.clip(x, int(attrs["qmin"]), int(attrs["qmax"])).astype(np.int8)


# =====================================================================================
# q.Conv / q.Gemm / q.MatMul (int8 x int8 -> int32)
# =====================================================================================

def _int8_conv_operands(node: Node) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """X and W shapes of q.Conv / q.ConvTranspose: int8, 2-D (rank 4)."""
    _expect(node, 0, [np.int8], "X")
    _expect(node, 1, [np.int8], "W")
    x = input_shape(node, 0, "(X)")
    w = input_shape(node, 1, "(W)")
    if len(x) != 4 or len(w) != 4:
        raise invalid(node, f"q.{node.op_type} is 2-D: X {x}, W {w}")
    return x, w


def _infer_qconv(node: Node):
    x, w = _int8_conv_operands(node)
    group = int(node.attrs.get("group", 1))
    kernel, strides, pads, dilations = window_params(node.attrs, 2, w[2:])
    if list(kernel) != list(w[2:]):
        raise invalid(node, f"kernel_shape {kernel} does not match W {w}")
    if group < 1 or x[1] % group or w[0] % group or x[1] // group != w[1]:
        raise invalid(node, f"channels do not match: X {x}, W {w}, group={group}")
    if has_input(node, 2):
        _expect(node, 2, [np.int32], "bias")
        if input_shape(node, 2) != (w[0],):
            raise invalid(node, f"bias shape {input_shape(node, 2)} is not ({w[0]},)")
    out = conv_output_shape(x[2:], kernel, strides, pads, dilations)
    if any(o < 1 for o in out):
        raise invalid(node, f"output spatial size {out} is empty")
    return [((x[0], w[0], *out), _I32)]


@register_op("Conv", infer=_infer_qconv, domain=Q, macs=conv_macs,
             weight_layer=WeightLayer(out_axis=0, in_axis=1, grouped=True, bias_input=2))
def q_conv(attrs, x, w, bias=None):
    """int8 conv, int32 result: conv(x - x_zero_point, w) + bias (real-zero padding)."""
    _, strides, pads, dilations = window_params(attrs, 2, w.shape[2:])
    xz = x.astype(np.int64) - int(attrs.get("x_zero_point", 0))
    y = conv_int(xz, w.astype(np.int64), strides, pads, dilations, int(attrs.get("group", 1)))
    if bias is not None:
        y = y + bias.astype(np.int64).reshape(1, -1, 1, 1)
    return y.astype(np.int32)


def _qconvt_params(attrs, w_shape):
    kernel, strides, pads, dilations = window_params(attrs, 2, w_shape[2:])
    opad = [int(v) for v in (attrs.get("output_padding") or [0, 0])]
    return kernel, strides, pads, dilations, opad


def _infer_qconv_transpose(node: Node):
    x, w = _int8_conv_operands(node)
    if node.attrs.get("output_shape"):
        raise invalid(node, "output_shape must be resolved into pads")
    group = int(node.attrs.get("group", 1))
    kernel, strides, pads, dilations, opad = _qconvt_params(node.attrs, w)
    if list(kernel) != list(w[2:]):
        raise invalid(node, f"kernel_shape {kernel} does not match W {w}")
    if len(opad) != 2:
        raise invalid(node, f"output_padding {opad} is not 2-D")
    if group < 1 or x[1] != w[0] or x[1] % group:
        raise invalid(node, f"channels do not match: X {x}, W {w}, group={group}")
    if any(p < 0 for p in pads[:2]):
        raise invalid(node, f"negative begin pads {pads[:2]}")
    m = w[1] * group
    if has_input(node, 2):
        _expect(node, 2, [np.int32], "bias")
        if input_shape(node, 2) != (m,):
            raise invalid(node, f"bias shape {input_shape(node, 2)} is not ({m},)")
    from .conv_util import conv_transpose_output_shape

    out = conv_transpose_output_shape(x[2:], kernel, strides, pads, dilations, opad)
    if any(o < 1 for o in out):
        raise invalid(node, f"output spatial size {out} is empty")
    return [((x[0], m, *out), _I32)]


def conv_transpose_int(x: np.ndarray, w: np.ndarray, strides, pads, dilations, group: int,
                       output_padding) -> np.ndarray:
    """Exact integer transposed convolution of int arrays -> int64 (float64 inside: every
    product and partial sum of int8 ranges is an integer far below 2**53)."""
    from .nn import conv_transpose_nd

    y = conv_transpose_nd(x.astype(np.float64), w.astype(np.float64), None, strides, pads,
                          dilations, group, output_padding)
    return np.rint(y).astype(np.int64)


@register_op("ConvTranspose", infer=_infer_qconv_transpose, domain=Q, macs=conv_transpose_macs,
             weight_layer=WeightLayer(out_axis=1, in_axis=0, grouped=True, bias_input=2))
def q_conv_transpose(attrs, x, w, bias=None):
    """int8 transposed conv, int32 result: conv_transpose(x - x_zero_point, w) + bias."""
    _, strides, pads, dilations, opad = _qconvt_params(attrs, w.shape)
    xz = x.astype(np.int64) - int(attrs.get("x_zero_point", 0))
    y = conv_transpose_int(xz, w.astype(np.int64), strides, pads, dilations,
                           int(attrs.get("group", 1)), opad)
    if bias is not None:
        y = y + bias.astype(np.int64).reshape(1, -1, 1, 1)
    return y.astype(np.int32)


def _infer_qgemm(node: Node):
    _expect(node, 0, [np.int8], "A")
    _expect(node, 1, [np.int8], "B")
    a = input_shape(node, 0, "(A)")
    b = input_shape(node, 1, "(B)")
    if len(a) != 2 or len(b) != 2:
        raise invalid(node, f"q.Gemm needs 2-D A and B, got {a} and {b}")
    trans_b = int(node.attrs.get("transB", 0))
    k, n = (b[1], b[0]) if trans_b else (b[0], b[1])
    if a[1] != k:
        raise invalid(node, f"inner dimensions differ: A {a}, B {b}, transB={trans_b}")
    if has_input(node, 2):
        _expect(node, 2, [np.int32], "bias")
        if input_shape(node, 2) != (n,):
            raise invalid(node, f"bias shape {input_shape(node, 2)} is not ({n},)")
    return [((a[0], n), _I32)]


@register_op("Gemm", infer=_infer_qgemm, domain=Q, macs=gemm_macs,
             weight_layer=WeightLayer(out_axis=1, in_axis=0, transposed_by="transB",
                                      bias_input=2))
def q_gemm(attrs, a, b, bias=None):
    """int8 GEMM, int32 result: (a - a_zero_point) @ op(b) + bias."""
    bm = b.T if int(attrs.get("transB", 0)) else b
    y = _matmul_int(a.astype(np.int64) - int(attrs.get("a_zero_point", 0)), bm)
    if bias is not None:
        y = y + bias.astype(np.int64).reshape(1, -1)
    return y.astype(np.int32)


def _infer_qmatmul(node: Node):
    _expect(node, 0, [np.int8], "A")
    _expect(node, 1, [np.int8], "B")
    from .nn import matmul_shape

    return [(matmul_shape(input_shape(node, 0), input_shape(node, 1), node), _I32)]


@register_op("MatMul", infer=_infer_qmatmul, domain=Q, macs=matmul_macs,
             weight_layer=WeightLayer(weight_inputs=(0, 1), out_axis=1, in_axis=0))
def q_matmul(attrs, a, b):
    """int8 matmul (numpy broadcasting), int32 result: (a - a_zp) @ (b - b_zp)."""
    y = _matmul_int(a.astype(np.int64) - int(attrs.get("a_zero_point", 0)),
                    b.astype(np.int64) - int(attrs.get("b_zero_point", 0)))
    return y.astype(np.int32)


# =====================================================================================
# q.Requantize / q.Add / q.Concat
# =====================================================================================

def _param_shape(rank: int, axis: int, size: int) -> tuple[int, ...]:
    shape = [1] * rank
    shape[axis] = size
    return tuple(shape)


def _infer_requantize(node: Node):
    _expect(node, 0, [np.int32], "acc")
    _expect(node, 1, [np.int32], "multiplier")
    _expect(node, 2, [np.int32], "shift")
    _clip_range(node)
    x = input_shape(node, 0)
    m, s = input_shape(node, 1), input_shape(node, 2)
    if m != s or len(m) > 1:
        raise invalid(node, f"multiplier {m} and shift {s} must be equal scalars or 1-D")
    if len(m) == 1 and m[0] != 1:
        axis = normalize_axis(int(node.attrs.get("axis", 1)), len(x), node)
        if x[axis] != m[0]:
            raise invalid(node, f"{m[0]} multipliers for axis {axis} of size {x[axis]}")
    return [(x, _I8)]


def requantize_ref(acc, multiplier, shift, axis: int, zero_point: int, qmin: int, qmax: int):
    multiplier = np.asarray(multiplier).reshape(-1)
    shift = np.asarray(shift).reshape(-1)
    if multiplier.size > 1:
        shape = _param_shape(acc.ndim, axis % acc.ndim, multiplier.size)
        multiplier, shift = multiplier.reshape(shape), shift.reshape(shape)
    y = rescale(acc, multiplier, shift) + int(zero_point)
    return np.clip(y, qmin, qmax).astype(np.int8)


@register_op("Requantize", infer=_infer_requantize, domain=Q)
def q_requantize(attrs, acc, multiplier, shift):
    """int32 -> int8: clip(((acc*M + 2^(s-1)) >> s) + zero_point, qmin, qmax), per channel."""
    return requantize_ref(acc, multiplier, shift, int(attrs.get("axis", 1)),
                          int(attrs.get("zero_point", 0)), int(attrs["qmin"]), int(attrs["qmax"]))


def _infer_qadd(node: Node):
    _expect(node, 0, [np.int8], "A")
    _expect(node, 1, [np.int8], "B")
    _clip_range(node)
    from .registry import broadcast_shapes

    return [(broadcast_shapes(input_shape(node, 0), input_shape(node, 1), node=node), _I8)]


@register_op("Add", infer=_infer_qadd, domain=Q)
def q_add(attrs, a, b):
    """int8 + int8 -> int8, both rescaled to the output scale with one shared shift."""
    s = np.int64(int(attrs["shift"]))
    acc = ((a.astype(np.int64) - int(attrs["a_zero_point"])) * int(attrs["a_multiplier"])
           + (b.astype(np.int64) - int(attrs["b_zero_point"])) * int(attrs["b_multiplier"]))
    y = ((acc + (np.int64(1) << (s - 1))) >> s) + int(attrs["zero_point"])
    return np.clip(y, int(attrs["qmin"]), int(attrs["qmax"])).astype(np.int8)


def _infer_qconcat(node: Node):
    _clip_range(node)
    ins = [v for v in node.inputs if v is not None]
    if not ins:
        raise invalid(node, "q.Concat needs at least one input")
    for i in range(len(ins)):
        _expect(node, i, [np.int8], f"input {i}")
    n = len(ins)
    for key in ("zero_points", "multipliers"):
        if len(list(node.attrs.get(key, []))) != n:
            raise invalid(node, f"{key} must list one entry per input ({n})")
    rank = len(ins[0].shape)
    axis = normalize_axis(int(node.attrs.get("axis", 1)), rank, node)
    out = list(ins[0].shape)
    for v in ins[1:]:
        if len(v.shape) != rank or any(v.shape[i] != out[i] for i in range(rank) if i != axis):
            raise invalid(node, f"shapes {[v.shape for v in ins]} do not concatenate on {axis}")
        out[axis] += v.shape[axis]
    return [(tuple(out), _I8)]


@register_op("Concat", infer=_infer_qconcat, domain=Q)
def q_concat(attrs, *xs):
    """int8 concat; input i is rescaled: ((x - zp_i) * M_i + 2^(s-1)) >> s, + zero_point."""
    s = np.int64(int(attrs["shift"]))
    parts = []
    for x, zp, m in zip(xs, attrs["zero_points"], attrs["multipliers"]):
        y = (((x.astype(np.int64) - int(zp)) * int(m) + (np.int64(1) << (s - 1))) >> s)
        parts.append(np.clip(y + int(attrs["zero_point"]), int(attrs["qmin"]), int(attrs["qmax"])))
    return np.concatenate(parts, axis=int(attrs.get("axis", 1))).astype(np.int8)


# =====================================================================================
# pools
# =====================================================================================

def _infer_qavgpool(node: Node):
    _expect(node, 0, [np.int8], "X")
    x = input_shape(node, 0, "(X)")
    if len(x) != 4:
        raise invalid(node, f"q.AveragePool is 2-D, got input {x}")
    if not node.attrs.get("kernel_shape"):
        raise invalid(node, "kernel_shape is required")
    kernel, strides, pads, dilations = window_params(node.attrs, 2)
    if any(d != 1 for d in dilations):
        raise invalid(node, "dilations must be 1")
    out = pool_output_shape(x[2:], kernel, strides, pads, dilations,
                            bool(node.attrs.get("ceil_mode", 0)))
    if any(o < 1 for o in out):
        raise invalid(node, f"output spatial size {out} is empty")
    return [((x[0], x[1], *out), _I8)]


def int_pool_sum(x: np.ndarray, kernel, strides, pads, ceil_mode: bool, count_include_pad: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(window sums of int64 ``x`` with zero padding, per-position counts (1,1,H,W))."""
    from .nn import _pool_taps

    out_sp = pool_output_shape(x.shape[2:], kernel, strides, pads, [1, 1], ceil_mode)
    acc = np.zeros((*x.shape[:2], *out_sp), dtype=np.int64)
    for patch in _pool_taps(x, kernel, strides, pads, [1, 1], out_sp, 0, 0):
        acc += patch
    ones = np.ones((1, 1, *x.shape[2:]), dtype=np.int64)
    count = np.zeros((1, 1, *out_sp), dtype=np.int64)
    for patch in _pool_taps(ones, kernel, strides, pads, [1, 1], out_sp,
                            1 if count_include_pad else 0, 0):
        count += patch
    return acc, count


def round_div(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``floor((2*total + count) / (2*count))``: total/count rounded half toward +inf."""
    return np.floor_divide(2 * total + count, 2 * count)


@register_op("AveragePool", infer=_infer_qavgpool, domain=Q)
def q_average_pool(attrs, x):
    """int8 average pool, same scale/zero point: zp + round_half_up(sum(x - zp) / n)."""
    kernel, strides, pads, _ = window_params(attrs, 2)
    zp = int(attrs.get("zero_point", 0))
    acc, count = int_pool_sum(x.astype(np.int64), kernel, strides, pads,
                              bool(attrs.get("ceil_mode", 0)),
                              bool(attrs.get("count_include_pad", 0)))
    # zero padding of x is padding with "real" -zp*scale: correct by the counted pads
    taps_in = int_pool_sum(np.ones((1, 1, *x.shape[2:]), np.int64), kernel, strides, pads,
                           bool(attrs.get("ceil_mode", 0)), False)[0]
    acc = acc - zp * taps_in  # sum of (x - zp) over the real pixels; pads add 0
    return np.clip(round_div(acc, count) + zp, -128, 127).astype(np.int8)


def _infer_qgap(node: Node):
    _expect(node, 0, [np.int8], "X")
    x = input_shape(node, 0, "(X)")
    if len(x) < 3:
        raise invalid(node, f"input rank {len(x)} < 3")
    return [((x[0], x[1], *([1] * (len(x) - 2))), _I8)]


@register_op("GlobalAveragePool", infer=_infer_qgap, domain=Q)
def q_global_average_pool(attrs, x):
    """int8 global average pool: zp + round_half_up(sum(x - zp) / (H*W))."""
    zp = int(attrs.get("zero_point", 0))
    axes = tuple(range(2, x.ndim))
    n = int(np.prod(x.shape[2:]))
    total = np.sum(x.astype(np.int64) - zp, axis=axes, keepdims=True)
    return np.clip(round_div(total, np.int64(n)) + zp, -128, 127).astype(np.int8)


# =====================================================================================
# q.Resize
# =====================================================================================

RESIZE_FRAC_BITS = 8  # interpolation weights in units of 2**-8 (per axis)


def _integer_rows(m: np.ndarray, frac_bits: int) -> np.ndarray:
    """``round(m * 2**frac_bits)`` with every row corrected to sum to exactly
    ``2**frac_bits`` (the correction goes to the row's largest weight)."""
    one = 1 << frac_bits
    q = np.rint(m * one).astype(np.int64)
    for r in range(q.shape[0]):
        q[r, int(np.argmax(np.abs(m[r])))] += one - int(q[r].sum())
    return q


def resize_matrices(attrs, in_shape, scales=None, sizes=None,
                    frac_bits: int = RESIZE_FRAC_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Integer interpolation matrices ``(mh [Ho,H], mw [Wo,W])`` of a 4-D ONNX Resize that
    scales only H and W: the float kernel's own per-axis weights (``nn._resize_axis`` on an
    identity, sampling where `resize_util.source_coords` says), rounded to ``frac_bits``
    bits.  Raises ValueError for what it cannot express (tf_crop_and_resize, resized N or C)."""
    from .nn import _nonempty, _resize_axis, resize_output_shape

    if attrs.get("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        raise ValueError("tf_crop_and_resize is not a fixed interpolation matrix")
    scales, sizes = _nonempty(scales), _nonempty(sizes)
    out_shape = resize_output_shape(tuple(in_shape), scales, sizes)
    if len(in_shape) != 4 or tuple(out_shape[:2]) != tuple(in_shape[:2]):
        raise ValueError(f"only H and W of a 4-D tensor may be resized ({in_shape} -> {out_shape})")
    if scales is not None:
        scale_list = [float(v) for v in np.asarray(scales, dtype=np.float32).reshape(-1)]
    else:
        scale_list = [o / i if i else 1.0 for o, i in zip(out_shape, in_shape)]
    if scale_list[0] != 1.0 or scale_list[1] != 1.0:
        raise ValueError(f"scales {scale_list} resize N or C")
    mats = []
    for axis in (2, 3):
        n_in, n_out = int(in_shape[axis]), int(out_shape[axis])
        eye = np.eye(n_in, dtype=np.float64)
        if n_out == n_in and scale_list[axis] == 1.0 and \
                attrs.get("coordinate_transformation_mode") != "tf_half_pixel_for_nn":
            m = eye
        else:
            m = _resize_axis(eye, 0, n_out, scale_list[axis], attrs, 0.0, 1.0)[0]
        mats.append(_integer_rows(m, frac_bits).astype(np.int32))
    return mats[0], mats[1]


def _infer_qresize(node: Node):
    _expect(node, 0, [np.int8], "X")
    _expect(node, 1, [np.int32], "mh")
    _expect(node, 2, [np.int32], "mw")
    x = input_shape(node, 0, "(X)")
    mh, mw = input_shape(node, 1), input_shape(node, 2)
    if len(x) != 4 or len(mh) != 2 or len(mw) != 2 or mh[1] != x[2] or mw[1] != x[3]:
        raise invalid(node, f"X {x} needs mh [Ho, {x[2] if len(x) == 4 else 'H'}] and mw "
                            f"[Wo, {x[3] if len(x) == 4 else 'W'}], got {mh} and {mw}")
    shift = int(node.attrs.get("shift", 2 * RESIZE_FRAC_BITS))
    if not 1 <= shift <= 40:
        raise invalid(node, f"shift={shift} is outside 1..40")
    return [((x[0], x[1], mh[0], mw[0]), _I8)]


@register_op("Resize", infer=_infer_qresize, domain=Q)
def q_resize(attrs, x, mh, mw):
    """int8 resize: zp + round_half_up(mh @ (x - zp) @ mw.T / 2**shift), same scale."""
    zp = int(attrs.get("zero_point", 0))
    s = np.int64(int(attrs.get("shift", 2 * RESIZE_FRAC_BITS)))
    xc = x.astype(np.int64) - zp
    acc = np.matmul(np.matmul(mh.astype(np.int64), xc), mw.astype(np.int64).T)
    y = ((acc + (np.int64(1) << (s - 1))) >> s) + zp
    return np.clip(y, -128, 127).astype(np.int8)


# =====================================================================================
# ONNX integer ops (import of already-quantized models)
# =====================================================================================

_QTYPES = (np.dtype(np.int8), np.dtype(np.uint8))


def _qlimits(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _per_axis(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    param = np.asarray(param)
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    return param.reshape(_param_shape(rank, axis, param.size))


def _infer_qlinear(node: Node):
    _expect(node, 0, [np.float32, np.int32], "X")
    dtype = np.dtype(input_dtype(node, 2) if has_input(node, 2) else np.uint8)
    if dtype not in _QTYPES:
        raise UnsupportedOpError(f"node '{node.name}' (QuantizeLinear): output dtype {dtype} "
                                 "is not implemented (int8/uint8 are)")
    return [(input_shape(node, 0), dtype)]


@register_op("QuantizeLinear", infer=_infer_qlinear, foldable=False)
def quantize_linear(attrs, x, y_scale, y_zero_point=None):
    """ONNX QuantizeLinear: saturate(rint(x / y_scale) + y_zero_point), per tensor or axis."""
    dtype = np.dtype(y_zero_point.dtype) if y_zero_point is not None else np.dtype(np.uint8)
    axis = int(attrs.get("axis", 1)) % max(x.ndim, 1)
    scale = _per_axis(y_scale, x.ndim, axis).astype(np.float32)
    zp = _per_axis(y_zero_point if y_zero_point is not None else np.zeros((), dtype),
                   x.ndim, axis).astype(np.int64)
    q = np.rint(x.astype(np.float32) / scale)
    lo, hi = _qlimits(dtype)
    return np.clip(np.clip(q, -1e9, 1e9).astype(np.int64) + zp, lo, hi).astype(dtype)


def _infer_dqlinear(node: Node):
    dtype = input_dtype(node, 0)
    if dtype not in (*_QTYPES, _I32):
        raise UnsupportedOpError(f"node '{node.name}' (DequantizeLinear): input dtype {dtype} "
                                 "is not implemented (int8/uint8/int32 are)")
    return [(input_shape(node, 0), _F32)]


@register_op("DequantizeLinear", infer=_infer_dqlinear, foldable=False)
def dequantize_linear(attrs, x, x_scale, x_zero_point=None):
    """ONNX DequantizeLinear: (x - x_zero_point) * x_scale, per tensor or axis."""
    axis = int(attrs.get("axis", 1)) % max(x.ndim, 1)
    scale = _per_axis(x_scale, x.ndim, axis).astype(np.float32)
    zp = _per_axis(x_zero_point if x_zero_point is not None else np.zeros((), np.int64),
                   x.ndim, axis).astype(np.int64)
    return ((x.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)


def _infer_dynq(node: Node):
    _expect(node, 0, [np.float32], "X")
    return [(input_shape(node, 0), np.dtype(np.uint8)), ((), _F32), ((), np.dtype(np.uint8))]


@register_op("DynamicQuantizeLinear", infer=_infer_dynq)
def dynamic_quantize_linear(attrs, x):
    """ONNX DynamicQuantizeLinear: uint8, scale = (max(x,0) - min(x,0)) / 255."""
    x = x.astype(np.float32)
    lo = np.float32(min(float(x.min()) if x.size else 0.0, 0.0))
    hi = np.float32(max(float(x.max()) if x.size else 0.0, 0.0))
    scale = np.float32((hi - lo) / np.float32(255.0))
    if scale == 0:
        zp = np.float32(0.0)
    else:
        zp = np.float32(np.clip(np.rint(np.float32(0.0) - lo / scale), 0, 255))
    if scale == 0:
        y = np.zeros(x.shape, np.uint8)
    else:
        y = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)
    return y, np.array(scale, np.float32), np.array(zp, np.uint8)


def _infer_conv_integer(node: Node):
    x = input_shape(node, 0, "(X)")
    w = input_shape(node, 1, "(W)")
    for i in (0, 1):
        if input_dtype(node, i) not in _QTYPES:
            raise invalid(node, f"input {i} has dtype {input_dtype(node, i)}, expected int8/uint8")
    if len(x) < 3 or len(w) != len(x):
        raise invalid(node, f"X {x} and W {w} must have the same rank >= 3")
    nd = len(x) - 2
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise invalid(node, "auto_pad must be resolved to explicit pads")
    group = int(node.attrs.get("group", 1))
    kernel, strides, pads, dilations = window_params(node.attrs, nd, w[2:])
    if group < 1 or x[1] % group or w[0] % group or x[1] // group != w[1]:
        raise invalid(node, f"channels do not match: X {x}, W {w}, group={group}")
    if has_input(node, 3) and int(np.prod(input_shape(node, 3))) not in (1, w[0]):
        raise invalid(node, f"w_zero_point shape {input_shape(node, 3)} is neither scalar "
                            f"nor per output channel ({w[0]},)")
    out = conv_output_shape(x[2:], kernel, strides, pads, dilations)
    return [((x[0], w[0], *out), _I32)]


@register_op("ConvInteger", infer=_infer_conv_integer, macs=conv_macs)
def conv_integer(attrs, x, w, x_zero_point=None, w_zero_point=None):
    """ONNX ConvInteger: conv(x - x_zp, w - w_zp) in int32 (zero padding of x - x_zp)."""
    nd = x.ndim - 2
    _, strides, pads, dilations = window_params(attrs, nd, w.shape[2:])
    xz = x.astype(np.int64) - (0 if x_zero_point is None else _as_int(x_zero_point))
    wz = w.astype(np.int64)
    if w_zero_point is not None:
        wz = wz - np.asarray(w_zero_point, np.int64).reshape(-1, *([1] * (w.ndim - 1)))
    return conv_int(xz, wz, strides, pads, dilations, int(attrs.get("group", 1))).astype(np.int32)


def _infer_matmul_integer(node: Node):
    from .nn import matmul_shape

    for i in (0, 1):
        if input_dtype(node, i) not in _QTYPES:
            raise invalid(node, f"input {i} has dtype {input_dtype(node, i)}, expected int8/uint8")
    if has_input(node, 3) and int(np.prod(input_shape(node, 3))) not in (1, input_shape(node, 1)[-1]):
        raise invalid(node, f"b_zero_point shape {input_shape(node, 3)} is neither scalar nor "
                            "per column")
    if has_input(node, 2) and int(np.prod(input_shape(node, 2))) != 1:
        raise invalid(node, "a_zero_point must be a scalar (per-row is not supported)")
    return [(matmul_shape(input_shape(node, 0), input_shape(node, 1), node), _I32)]


@register_op("MatMulInteger", infer=_infer_matmul_integer, macs=matmul_macs)
def matmul_integer(attrs, a, b, a_zero_point=None, b_zero_point=None):
    """ONNX MatMulInteger: (a - a_zp) @ (b - b_zp) in int32."""
    az = a.astype(np.int64) - (0 if a_zero_point is None else _as_int(a_zero_point))
    bz = b.astype(np.int64)
    if b_zero_point is not None:
        bz = bz - np.asarray(b_zero_point, np.int64).reshape(-1)
    return _matmul_int(az, bz).astype(np.int32)

