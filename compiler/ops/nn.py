"""Neural-network ops: Conv, ConvTranspose, pooling, BatchNormalization, Gemm, MatMul,
Softmax, LogSoftmax, Resize, the Reduce* ops and ArgMax/ArgMin (ONNX opset-17
semantics)."""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..ir import Node
from .conv_util import (compute_dtype, conv_output_shape, conv_transpose_output_shape,
                        has_input, input_dtype, input_shape, invalid, normalize_axis,
                        pool_output_shape, prod, resolve_auto_pad_transpose,
                        strided_window, unsupported, window_params)
from .macs import conv_macs, conv_transpose_macs, gemm_macs, matmul_macs
from .registry import (OpValidationError, UnsupportedOpError, WeightLayer, const_input,
                       register_op)
from .resize_util import COORD_MODES, NEAREST_MODES, nearest_index, source_coords

_FLOATS = (np.float16, np.float32, np.float64)


def _check_auto_pad(node: Node) -> None:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", ""):
        raise unsupported(node, "auto_pad", auto_pad,
                          "the importer must resolve auto_pad into explicit pads")


def _kernel_auto_pad(attrs: dict[str, Any]) -> None:
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", ""):
        raise UnsupportedOpError(f"auto_pad={auto_pad!r} must be resolved to explicit pads "
                                 "before the kernel runs")


def _window(node: Node, nd: int, kernel=None):
    try:
        return window_params(node.attrs, nd, kernel)
    except OpValidationError as exc:
        raise invalid(node, str(exc)) from None


def _float_input(node: Node, index: int = 0) -> np.dtype:
    dtype = input_dtype(node, index)
    if dtype.type not in _FLOATS:
        raise invalid(node, f"input {index} has dtype {dtype}, expected a float type")
    return dtype


# =====================================================================================
# Conv
# =====================================================================================

def _conv_operands(node: Node) -> tuple[tuple[int, ...], tuple[int, ...], np.dtype]:
    """X and W shapes and the float dtype shared by Conv and ConvTranspose, checked."""
    _check_auto_pad(node)
    x = input_shape(node, 0, "(X)")
    w = input_shape(node, 1, "(W)")
    dtype = _float_input(node)
    for i, what in ((1, "W"), (2, "B")):
        if has_input(node, i) and input_dtype(node, i) != dtype:
            # ONNX types X, W and B with one T; onnxruntime refuses the model otherwise
            raise invalid(node, f"{what} is {input_dtype(node, i)} but X is {dtype}; ONNX "
                          f"requires one float type for X, W and B (cast the weights)")
    if len(x) < 3 or len(w) != len(x):
        raise invalid(node, f"X {x} and W {w} must have the same rank >= 3")
    return x, w, dtype


def _infer_conv(node: Node):
    x, w, dtype = _conv_operands(node)
    nd = len(x) - 2
    group = int(node.attrs.get("group", 1))
    kernel, strides, pads, dilations = _window(node, nd, w[2:])
    if list(kernel) != list(w[2:]):
        raise invalid(node, f"kernel_shape {kernel} does not match W {w}")
    if group < 1 or x[1] % group or w[0] % group or x[1] // group != w[1]:
        raise invalid(node, f"channels do not match: X {x}, W {w}, group={group}")
    if has_input(node, 2) and input_shape(node, 2) != (w[0],):
        raise invalid(node, f"bias shape {input_shape(node, 2)} is not ({w[0]},)")
    out = conv_output_shape(x[2:], kernel, strides, pads, dilations)
    if any(o < 1 for o in out):
        raise invalid(node, f"output spatial size {out} is empty")
    return [((x[0], w[0], *out), dtype)]


def conv_nd(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides, pads, dilations,
            group: int) -> np.ndarray:
    """N-D grouped convolution: im2col + batched matmul; per-tap multiply-add when each
    group has a single input channel (depthwise)."""
    out_dtype = x.dtype
    ct = compute_dtype(x.dtype)
    x = x.astype(ct, copy=False)
    w = w.astype(ct, copy=False)
    n, c = x.shape[:2]
    nd = x.ndim - 2
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    g = int(group)
    mg = m // g
    if any(pads):
        x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[nd + i]) for i in range(nd)])
    out_sp = conv_output_shape(x.shape[2:], kernel, strides, [0] * (2 * nd), dilations)
    ntaps = prod(kernel)
    if cg == 1 and ntaps > 1:
        # depthwise (or one input channel per group): one vectorised multiply-add per tap
        acc = np.zeros((n, g, mg, *out_sp), dtype=ct)
        wg = w.reshape(g, mg, *kernel)
        xg = x.reshape(n, g, 1, *x.shape[2:])
        for tap in itertools.product(*[range(k) for k in kernel]):
            offs = [t * d for t, d in zip(tap, dilations)]
            patch = strided_window(xg, offs, strides, out_sp, first_axis=3)
            coeff = wg[(slice(None), slice(None), *tap)].reshape(1, g, mg, *([1] * nd))
            acc += patch * coeff
        y = acc.reshape(n, m, *out_sp)
    elif ntaps == 1 and all(s == 1 for s in strides):
        y = np.matmul(w.reshape(g, mg, cg), x.reshape(n, g, cg, -1)).reshape(n, m, *out_sp)
    else:
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
        win = np.lib.stride_tricks.sliding_window_view(x, eff, axis=tuple(range(2, 2 + nd)))
        index = (slice(None), slice(None)) + tuple(slice(0, o * s, s) for o, s in
                                                 zip(out_sp, strides)) \
            + tuple(slice(None, None, d) for d in dilations)
        win = win[index]  # (N, C, *O, *K)
        win = win.reshape(n, g, cg, *out_sp, *kernel)
        perm = (0, 1, 2, *range(3 + nd, 3 + 2 * nd), *range(3, 3 + nd))
        cols = win.transpose(perm).reshape(n, g, cg * ntaps, prod(out_sp))
        y = np.matmul(w.reshape(g, mg, cg * ntaps), cols).reshape(n, m, *out_sp)
    if b is not None:
        y = y + b.astype(ct, copy=False).reshape(1, m, *([1] * nd))
    return y.astype(out_dtype, copy=False)


@register_op("Conv", infer=_infer_conv, window=True, macs=conv_macs, integer_counterpart="q.Conv",
             weight_layer=WeightLayer(out_axis=0, in_axis=1, grouped=True, bias_input=2))
def conv(attrs, x, w, b=None):
    """N-D convolution with groups, strides, dilations and explicit pads."""
    _kernel_auto_pad(attrs)
    nd = x.ndim - 2
    _, strides, pads, dilations = window_params(attrs, nd, w.shape[2:])
    return conv_nd(x, w, b, strides, pads, dilations, int(attrs.get("group", 1)))


# =====================================================================================
# ConvTranspose
# =====================================================================================

def transpose_params(attrs: dict[str, Any], in_spatial, w_shape):
    """ConvTranspose window, pads and output padding from ``attrs`` (shared with quantize)."""
    nd = len(in_spatial)
    kernel, strides, pads, dilations = window_params(attrs, nd, w_shape[2:])
    output_padding = [int(v) for v in (attrs.get("output_padding") or [0] * nd)]
    output_shape = attrs.get("output_shape")
    if output_shape:
        pads = resolve_auto_pad_transpose("NOTSET", in_spatial, kernel, strides, dilations,
                                          output_padding, output_shape, pads)
    return kernel, strides, pads, dilations, output_padding


def _infer_conv_transpose(node: Node):
    x, w, dtype = _conv_operands(node)
    group = int(node.attrs.get("group", 1))
    if group < 1 or x[1] != w[0] or x[1] % group:
        raise invalid(node, f"channels do not match: X {x}, W {w}, group={group}")
    _window(node, len(x) - 2, w[2:])
    kernel, strides, pads, dilations, opad = transpose_params(node.attrs, x[2:], w)
    if list(kernel) != list(w[2:]):
        raise invalid(node, f"kernel_shape {kernel} does not match W {w}")
    m = w[1] * group
    if has_input(node, 2) and input_shape(node, 2) != (m,):
        raise invalid(node, f"bias shape {input_shape(node, 2)} is not ({m},)")
    out = conv_transpose_output_shape(x[2:], kernel, strides, pads, dilations, opad)
    if any(o < 1 for o in out):
        raise invalid(node, f"output spatial size {out} is empty")
    return [((x[0], m, *out), dtype)]


def conv_transpose_nd(x, w, b, strides, pads, dilations, group, output_padding):
    """Grouped N-D transposed convolution: matmul to columns, then col2im by taps.

    Negative pads (from an ``output_shape`` larger than the natural size) extend the
    output with zeros (+ bias)."""
    out_dtype = x.dtype
    ct = compute_dtype(x.dtype)
    x = x.astype(ct, copy=False)
    w = w.astype(ct, copy=False)
    n, c = x.shape[:2]
    nd = x.ndim - 2
    in_sp = x.shape[2:]
    g = int(group)
    cg = c // g
    mg = w.shape[1]
    kernel = w.shape[2:]
    m = mg * g
    ntaps = prod(kernel)
    wt = w.reshape(g, cg, mg * ntaps).transpose(0, 2, 1)  # (G, Mg*K, Cg)
    cols = np.matmul(wt, x.reshape(n, g, cg, prod(in_sp)))  # (N, G, Mg*K, S)
    cols = cols.reshape(n, g, mg, *kernel, *in_sp)
    full = [strides[i] * (in_sp[i] - 1) + (kernel[i] - 1) * dilations[i] + 1
            + output_padding[i] for i in range(nd)]
    acc = np.zeros((n, g, mg, *full), dtype=ct)
    for tap in itertools.product(*[range(k) for k in kernel]):
        offs = [t * d for t, d in zip(tap, dilations)]
        strided_window(acc, offs, strides, in_sp, first_axis=3)[...] += \
            cols[(slice(None), slice(None), slice(None), *tap)]
    y = acc.reshape(n, m, *full)
    # apply pads: positive crops, negative extends with zeros
    grow = [(max(0, -pads[i]), max(0, -pads[nd + i])) for i in range(nd)]
    if any(a or e for a, e in grow):
        y = np.pad(y, [(0, 0), (0, 0)] + grow)
    crop = tuple(slice(max(0, pads[i]), y.shape[2 + i] - max(0, pads[nd + i]))
                 for i in range(nd))
    y = y[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + b.astype(ct, copy=False).reshape(1, m, *([1] * nd))
    return np.ascontiguousarray(y).astype(out_dtype, copy=False)


@register_op("ConvTranspose", infer=_infer_conv_transpose, window=True, macs=conv_transpose_macs,
             integer_counterpart="q.ConvTranspose",
             weight_layer=WeightLayer(out_axis=1, in_axis=0, grouped=True, bias_input=2))
def conv_transpose(attrs, x, w, b=None):
    """N-D transposed convolution (groups, dilations, output_padding, output_shape)."""
    _kernel_auto_pad(attrs)
    _, strides, pads, dilations, opad = transpose_params(attrs, x.shape[2:], w.shape)
    return conv_transpose_nd(x, w, b, strides, pads, dilations, int(attrs.get("group", 1)),
                             opad)


# =====================================================================================
# Pooling
# =====================================================================================

def _pool_params(attrs: dict[str, Any], nd: int):
    if not attrs.get("kernel_shape"):
        raise OpValidationError("pooling needs kernel_shape")
    kernel, strides, pads, dilations = window_params(attrs, nd)
    return kernel, strides, pads, dilations, bool(attrs.get("ceil_mode", 0))


def _infer_pool(node: Node):
    _check_auto_pad(node)
    x = input_shape(node, 0, "(X)")
    dtype = input_dtype(node, 0)
    if len(x) < 3:
        raise invalid(node, f"input rank {len(x)} < 3")
    nd = len(x) - 2
    if not node.attrs.get("kernel_shape"):
        raise invalid(node, "kernel_shape is required")
    kernel, strides, pads, dilations = _window(node, nd)
    ceil_mode = bool(node.attrs.get("ceil_mode", 0))
    if node.op_type == "AveragePool" and dtype.type not in _FLOATS:
        raise invalid(node, f"AveragePool input has dtype {dtype}, expected a float type")
    if node.op_type == "MaxPool" and dtype.kind not in "fiu":
        raise invalid(node, f"MaxPool input has dtype {dtype}")
    if len(node.outputs) > 1:
        raise unsupported(node, "outputs", len(node.outputs),
                          "the MaxPool Indices output is not implemented")
    out = pool_output_shape(x[2:], kernel, strides, pads, dilations, ceil_mode)
    if any(o < 1 for o in out):
        raise invalid(node, f"output spatial size {out} is empty")
    return [((x[0], x[1], *out), dtype)]


def _pool_taps(x: np.ndarray, kernel, strides, pads, dilations, out_sp, pad_value,
               overhang_value):
    """Yield, for every kernel tap, the strided view of the padded input it reads.

    ``pads`` are filled with ``pad_value``; the extra end region a ceil_mode window
    may overhang with ``overhang_value``."""
    nd = x.ndim - 2
    in_sp = x.shape[2:]
    widths = [(pads[i], pads[nd + i]) for i in range(nd)]
    if any(a or b for a, b in widths):
        x = np.pad(x, [(0, 0), (0, 0)] + widths, constant_values=pad_value)
    over = []
    for i in range(nd):
        need = (out_sp[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        over.append((0, max(0, need - (in_sp[i] + pads[i] + pads[nd + i]))))
    if any(e for _, e in over):
        x = np.pad(x, [(0, 0), (0, 0)] + over, constant_values=overhang_value)
    for tap in itertools.product(*[range(k) for k in kernel]):
        offs = [t * d for t, d in zip(tap, dilations)]
        yield strided_window(x, offs, strides, out_sp)


def max_pool_nd(x, kernel, strides, pads, dilations, ceil_mode):
    if x.dtype.kind == "f":
        low = -np.inf
    elif x.dtype.kind in "iu":
        low = np.iinfo(x.dtype).min
    else:
        raise UnsupportedOpError(f"MaxPool on dtype {x.dtype}")
    out_sp = pool_output_shape(x.shape[2:], kernel, strides, pads, dilations, ceil_mode)
    y = None
    for patch in _pool_taps(x, kernel, strides, pads, dilations, out_sp, low, low):
        if y is None:
            y = patch.copy()
        else:
            np.maximum(y, patch, out=y)
    return y


@register_op("MaxPool", infer=_infer_pool, window=True, layout_preserving=True,
             int8_passthrough=True)
def max_pool(attrs, x):
    """N-D max pooling (pads, strides, dilations, ceil_mode); Y output only."""
    _kernel_auto_pad(attrs)
    nd = x.ndim - 2
    kernel, strides, pads, dilations, ceil_mode = _pool_params(attrs, nd)
    return max_pool_nd(x, kernel, strides, pads, dilations, ceil_mode)


def average_pool_nd(x, kernel, strides, pads, dilations, ceil_mode, count_include_pad):
    out_dtype = x.dtype
    ct = compute_dtype(x.dtype)
    x = x.astype(ct, copy=False)
    out_sp = pool_output_shape(x.shape[2:], kernel, strides, pads, dilations, ceil_mode)
    acc = np.zeros((*x.shape[:2], *out_sp), dtype=ct)
    for patch in _pool_taps(x, kernel, strides, pads, dilations, out_sp, 0, 0):
        acc += patch
    # divisor: the window's pixels inside the input (count_include_pad=0) or inside the
    # explicitly padded input (=1); the ceil_mode overhang never counts.
    ones = np.ones((1, 1, *x.shape[2:]), dtype=ct)
    count = np.zeros((1, 1, *out_sp), dtype=ct)
    for patch in _pool_taps(ones, kernel, strides, pads, dilations, out_sp,
                            1 if count_include_pad else 0, 0):
        count += patch
    return (acc / count).astype(out_dtype, copy=False)


@register_op("AveragePool", infer=_infer_pool, window=True, layout_preserving=True,
             integer_counterpart="q.AveragePool")
def average_pool(attrs, x):
    """N-D average pooling (count_include_pad, ceil_mode, pads, strides)."""
    _kernel_auto_pad(attrs)
    nd = x.ndim - 2
    kernel, strides, pads, dilations, ceil_mode = _pool_params(attrs, nd)
    return average_pool_nd(x, kernel, strides, pads, dilations, ceil_mode,
                           int(attrs.get("count_include_pad", 0)))


def _infer_global_pool(node: Node):
    x = input_shape(node, 0, "(X)")
    if len(x) < 3:
        raise invalid(node, f"input rank {len(x)} < 3")
    return [((x[0], x[1], *([1] * (len(x) - 2))), input_dtype(node, 0))]


@register_op("GlobalAveragePool", infer=_infer_global_pool, layout_preserving=True,
             integer_counterpart="q.GlobalAveragePool")
def global_average_pool(attrs, x):
    """Mean over the spatial axes (float16 accumulated in float32), keepdims."""
    axes = tuple(range(2, x.ndim))
    ct = compute_dtype(x.dtype)
    return np.mean(x.astype(ct, copy=False), axis=axes, keepdims=True).astype(x.dtype)


@register_op("GlobalMaxPool", infer=_infer_global_pool, layout_preserving=True)
def global_max_pool(attrs, x):
    """Max over the spatial axes, keepdims."""
    return np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)


# =====================================================================================
# BatchNormalization (inference form)
# =====================================================================================

def _infer_batch_norm(node: Node):
    if int(node.attrs.get("training_mode", 0)) != 0:
        raise unsupported(node, "training_mode", node.attrs["training_mode"],
                          "only the inference form is implemented")
    if len(node.outputs) > 1:
        raise unsupported(node, "outputs", len(node.outputs),
                          "running mean/var outputs exist only in training mode")
    x = input_shape(node, 0, "(X)")
    dtype = _float_input(node)
    if len(x) < 2:
        raise invalid(node, f"input rank {len(x)} < 2")
    for i, what in enumerate(("scale", "B", "mean", "var"), start=1):
        if input_shape(node, i, f"({what})") != (x[1],):
            raise invalid(node, f"{what} shape {input_shape(node, i)} is not ({x[1]},)")
    return [(x, dtype)]


@register_op("BatchNormalization", infer=_infer_batch_norm, layout_preserving=True)
def batch_normalization(attrs, x, scale, bias, mean, var):
    """``(x - mean) / sqrt(var + epsilon) * scale + B`` along axis 1."""
    if int(attrs.get("training_mode", 0)) != 0:
        raise UnsupportedOpError("BatchNormalization training_mode=1 is not supported")
    ct = compute_dtype(x.dtype)
    eps = ct.type(attrs.get("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mul = scale.astype(ct) / np.sqrt(var.astype(ct) + eps)
    add = bias.astype(ct) - mean.astype(ct) * mul
    y = x.astype(ct, copy=False) * mul.reshape(shape) + add.reshape(shape)
    return y.astype(x.dtype, copy=False)


# =====================================================================================
# Gemm / MatMul / Softmax
# =====================================================================================

def _infer_gemm(node: Node):
    a = input_shape(node, 0, "(A)")
    b = input_shape(node, 1, "(B)")
    if len(a) != 2 or len(b) != 2:
        raise invalid(node, f"A {a} and B {b} must be 2-D")
    if node.attrs.get("transA", 0):
        a = a[::-1]
    if node.attrs.get("transB", 0):
        b = b[::-1]
    if a[1] != b[0]:
        raise invalid(node, f"inner dimensions do not match: {a} x {b}")
    out = (a[0], b[1])
    if has_input(node, 2):
        c = input_shape(node, 2, "(C)")
        try:
            ok = len(c) <= 2 and tuple(np.broadcast_shapes(c, out)) == out
        except ValueError:
            ok = False
        if not ok:
            raise invalid(node, f"C {c} does not broadcast to {out}")
    return [(out, input_dtype(node, 0))]


@register_op("Gemm", infer=_infer_gemm, macs=gemm_macs, integer_counterpart="q.Gemm",
             weight_layer=WeightLayer(out_axis=1, in_axis=0, transposed_by="transB",
                                      bias_input=2))
def gemm(attrs, a, b, c=None):
    """``alpha * op(A) @ op(B) + beta * C``."""
    dtype = a.dtype
    ct = compute_dtype(dtype) if dtype.kind == "f" else dtype
    a = a.astype(ct, copy=False)
    b = b.astype(ct, copy=False)
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    y = a @ b
    alpha = attrs.get("alpha", 1.0)
    beta = attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = y * ct.type(alpha)
    if c is not None and beta != 0.0:
        y = y + (c.astype(ct) if beta == 1.0 else c.astype(ct) * ct.type(beta))
    return np.asarray(y).astype(dtype, copy=False)


def matmul_shape(a, b, node: Node | None = None):
    """numpy matmul shape rule (1-D operands promoted and the added dim removed)."""
    if len(a) == 0 or len(b) == 0:
        raise invalid(node, "MatMul operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else tuple(a)
    b2 = (*b, 1) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        raise invalid(node, f"inner dimensions do not match: {tuple(a)} x {tuple(b)}")
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        raise invalid(node, f"batch dims of {tuple(a)} and {tuple(b)} do not broadcast") \
            from None
    out = [*batch, a2[-2], b2[-1]]
    if len(b) == 1:
        out.pop(-1)
    if len(a) == 1:
        out.pop(-2 if len(b) != 1 else -1)
    return tuple(int(d) for d in out)


def _infer_matmul(node: Node):
    return [(matmul_shape(input_shape(node, 0), input_shape(node, 1), node),
             input_dtype(node, 0))]


@register_op("MatMul", infer=_infer_matmul, macs=matmul_macs, integer_counterpart="q.MatMul",
             weight_layer=WeightLayer(out_axis=1, in_axis=0))
def matmul(attrs, a, b):
    """numpy.matmul semantics (batched, broadcasting, 1-D operands)."""
    dtype = a.dtype
    ct = compute_dtype(dtype) if dtype.kind == "f" else dtype
    return np.asarray(np.matmul(a.astype(ct, copy=False), b.astype(ct, copy=False))
                      ).astype(dtype, copy=False)


def _infer_softmax(node: Node):
    x = input_shape(node, 0)
    normalize_axis(node.attrs.get("axis", -1), len(x), node)
    return [(x, _float_input(node))]


@register_op("Softmax", infer=_infer_softmax)
def softmax(attrs, x):
    """Opset-13 Softmax along ``axis``."""
    ct = compute_dtype(x.dtype)
    axis = normalize_axis(attrs.get("axis", -1), x.ndim)
    xc = x.astype(ct, copy=False)
    e = np.exp(xc - np.max(xc, axis=axis, keepdims=True))
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(x.dtype, copy=False)


@register_op("LogSoftmax", infer=_infer_softmax)
def log_softmax(attrs, x):
    """Opset-13 LogSoftmax along ``axis``: x - max - log(sum(exp(x - max)))."""
    ct = compute_dtype(x.dtype)
    axis = normalize_axis(attrs.get("axis", -1), x.ndim)
    xc = x.astype(ct, copy=False)
    shifted = xc - np.max(xc, axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        out = shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return out.astype(x.dtype, copy=False)


# =====================================================================================
# Resize (opset 13: X, roi, scales, sizes)
# =====================================================================================

_RESIZE_MODES = ("nearest", "linear", "cubic")


def _check_resize_attrs(attrs: dict[str, Any], node: Node | None) -> None:
    mode = attrs.get("mode", "nearest")
    if mode not in _RESIZE_MODES:
        raise unsupported(node, "mode", mode)
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    if ctm not in COORD_MODES:
        raise unsupported(node, "coordinate_transformation_mode", ctm)
    nearest = attrs.get("nearest_mode", "round_prefer_floor")
    if mode == "nearest" and nearest not in NEAREST_MODES:
        raise unsupported(node, "nearest_mode", nearest)
    for name in ("antialias", "axes", "keep_aspect_ratio_policy"):
        if name in attrs and attrs[name] not in (0, None, "stretch"):
            raise unsupported(node, name, attrs[name], "opset-18 Resize attribute")


def _nonempty(array):
    if array is None:
        return None
    array = np.asarray(array)
    return array if array.size else None


def resize_output_shape(in_shape, scales, sizes, node: Node | None = None):
    """``sizes`` if given, else ``floor(in * scale)`` (computed in float64 like the
    ONNX reference implementation)."""
    rank = len(in_shape)
    if sizes is not None and scales is not None:
        raise invalid(node, "only one of scales and sizes may be given")
    if sizes is not None:
        sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(sizes) != rank:
            raise invalid(node, f"sizes {sizes} do not match input rank {rank}")
        return tuple(sizes)
    if scales is None:
        raise invalid(node, "one of scales and sizes must be given")
    scales = [float(v) for v in np.asarray(scales, dtype=np.float32).reshape(-1)]
    if len(scales) != rank:
        raise invalid(node, f"scales {scales} do not match input rank {rank}")
    if any(s <= 0 for s in scales):
        raise invalid(node, f"scales {scales} must be positive")
    return tuple(int(np.floor(d * s)) for d, s in zip(in_shape, scales))


def _infer_resize(node: Node):
    _check_resize_attrs(node.attrs, node)
    x = input_shape(node, 0, "(X)")
    dtype = input_dtype(node, 0)
    scales = _nonempty(const_input(node, 2, "scales"))
    sizes = _nonempty(const_input(node, 3, "sizes"))
    if node.attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        roi = node.inputs[1] if has_input(node, 1) else None
        if roi is None or roi.shape is None or prod(roi.shape) != 2 * len(x):
            raise invalid(node, "tf_crop_and_resize needs an roi input of 2 * rank values")
    if node.attrs.get("mode", "nearest") != "nearest" and dtype.kind not in "fiu":
        raise invalid(node, f"dtype {dtype} cannot be interpolated")
    return [(resize_output_shape(x, scales, sizes, node), dtype)]


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys cubic weights for taps at offsets -1, 0, 1, 2 (t = fractional part)."""
    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _resize_axis(x: np.ndarray, axis: int, out_len: int, scale: float, attrs, roi_s, roi_e):
    in_len = x.shape[axis]
    mode = attrs.get("mode", "nearest")
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    coords = source_coords(ctm, out_len, in_len, scale, roi_s, roi_e)
    if mode == "nearest":
        idx = nearest_index(coords, attrs.get("nearest_mode", "round_prefer_floor"), in_len)
        idx = idx.astype(np.intp)[None, :]
        weights = np.ones((1, out_len))
    elif mode == "linear":
        lo = np.floor(coords)
        t = coords - lo
        lo = lo.astype(np.intp)
        idx = np.stack([lo, lo + 1])
        weights = np.stack([1 - t, t])
    else:
        lo = np.floor(coords)
        t = coords - lo
        lo = lo.astype(np.intp)
        idx = np.stack([lo - 1, lo, lo + 1, lo + 2])
        weights = _cubic_weights(t, float(attrs.get("cubic_coeff_a", -0.75))).T
        if attrs.get("exclude_outside", 0):
            weights = np.where((idx < 0) | (idx >= in_len), 0.0, weights)
            total = weights.sum(axis=0, keepdims=True)
            weights = weights / np.where(total == 0, 1.0, total)
    idx = np.clip(idx, 0, in_len - 1)
    ct = x.dtype
    shape = [1] * x.ndim
    shape[axis] = out_len
    result = None
    for k in range(idx.shape[0]):
        w = weights[k]
        if mode != "nearest" and not np.any(w):
            continue
        gathered = np.take(x, idx[k], axis=axis)
        term = gathered if mode == "nearest" else gathered * w.astype(ct).reshape(shape)
        result = term if result is None else result + term
    if result is None:
        result = np.zeros([out_len if i == axis else d for i, d in enumerate(x.shape)], ct)
    outside = None
    if ctm == "tf_crop_and_resize":
        outside = ((coords < 0) | (coords > in_len - 1)).reshape(shape)
    return result, outside


@register_op("Resize", infer=_infer_resize, integer_counterpart="q.Resize")
def resize(attrs, x, roi=None, scales=None, sizes=None):
    """Opset-13 Resize: nearest (4 rounding modes) / N-D linear / cubic, with the
    half_pixel, pytorch_half_pixel, asymmetric, align_corners, tf_half_pixel_for_nn and
    tf_crop_and_resize coordinate transforms."""
    _check_resize_attrs(attrs, None)
    scales = _nonempty(scales)
    sizes = _nonempty(sizes)
    out_shape = resize_output_shape(x.shape, scales, sizes)
    if scales is not None:
        scale_list = [float(s) for s in np.asarray(scales, dtype=np.float32).reshape(-1)]
    else:
        scale_list = [o / i if i else 1.0 for o, i in zip(out_shape, x.shape)]
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    mode = attrs.get("mode", "nearest")
    rank = x.ndim
    roi = _nonempty(roi)
    if ctm == "tf_crop_and_resize":
        if roi is None or roi.size != 2 * rank:
            raise OpValidationError("tf_crop_and_resize needs roi of length 2 * rank")
        roi = np.asarray(roi, dtype=np.float64).reshape(-1)
    out_dtype = x.dtype
    if mode == "nearest":
        y = x
    else:
        y = x.astype(compute_dtype(x.dtype) if x.dtype.kind == "f" else np.float64, copy=False)
    outside_mask = None
    for axis in range(rank):
        if (out_shape[axis] == x.shape[axis] and scale_list[axis] == 1.0
                and ctm not in ("tf_crop_and_resize", "tf_half_pixel_for_nn")):
            continue
        rs, re = (roi[axis], roi[rank + axis]) if roi is not None and \
            ctm == "tf_crop_and_resize" else (0.0, 1.0)
        y, outside = _resize_axis(y, axis, out_shape[axis], scale_list[axis], attrs, rs, re)
        if outside is not None:
            outside_mask = outside if outside_mask is None else (outside_mask | outside)
    if outside_mask is not None and outside_mask.any():
        y = np.where(outside_mask, y.dtype.type(attrs.get("extrapolation_value", 0.0)), y)
    if out_dtype.kind in "iu" and mode != "nearest":
        y = np.rint(y)
    return np.array(y, dtype=out_dtype, copy=True)  # never alias the input


# =====================================================================================
# Reductions
# =====================================================================================

def _reduce_axes(attrs, rank: int, axes_input, node: Node | None, op_type: str):
    """Sorted, normalised reduction axes; ``()`` means "no reduction" (ReduceSum's
    noop_with_empty_axes).  ReduceSum reads the axes input, the others the attribute."""
    if op_type == "ReduceSum":
        axes = None if axes_input is None else [int(a) for a in np.asarray(axes_input).reshape(-1)]
        if not axes:
            if int(attrs.get("noop_with_empty_axes", 0)):
                return ()
            return tuple(range(rank))
    else:
        axes = attrs.get("axes")
        if axes is None or len(axes) == 0:
            return tuple(range(rank))
    norm = sorted({normalize_axis(a, rank, node, "axes") for a in axes})
    return tuple(norm)


def _make_reduce(op_type: str, fn):
    def infer(node: Node):
        x = input_shape(node, 0)
        dtype = input_dtype(node, 0)
        axes_in = const_input(node, 1, "axes") if op_type == "ReduceSum" else None
        if op_type != "ReduceSum" and len(node.inputs) > 1 and node.inputs[1] is not None:
            raise unsupported(node, "axes input", node.inputs[1].name,
                              f"opset-18 form; in opset 17 {op_type} takes an axes attribute")
        axes = _reduce_axes(node.attrs, len(x), axes_in, node, op_type)
        keep = int(node.attrs.get("keepdims", 1))
        if keep:
            out = tuple(1 if i in axes else d for i, d in enumerate(x))
        else:
            out = tuple(d for i, d in enumerate(x) if i not in axes)
        return [(out, dtype)]

    def kernel(attrs, x, axes=None):
        axes_t = _reduce_axes(attrs, x.ndim, axes, None, op_type)
        keep = bool(int(attrs.get("keepdims", 1)))
        if not axes_t:
            return np.array(x, copy=True)
        return np.asarray(fn(x, axes_t, keep)).astype(x.dtype, copy=False)

    kernel.__name__ = op_type.lower()
    kernel.__doc__ = f"{op_type} over ``axes`` (all axes when empty), ``keepdims``."
    register_op(op_type, infer=infer)(kernel)


def _mean(x, axes, keep):
    ct = compute_dtype(x.dtype) if x.dtype.kind == "f" else np.float64
    return np.mean(x.astype(ct, copy=False), axis=axes, keepdims=keep)


def _max(x, axes, keep):
    if x.size == 0:
        shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if keep else \
            [d for i, d in enumerate(x.shape) if i not in axes]
        low = -np.inf if x.dtype.kind == "f" else (np.iinfo(x.dtype).min
                                                   if x.dtype.kind in "iu" else False)
        return np.full(shape, low, dtype=x.dtype)
    return np.max(x, axis=axes, keepdims=keep)


def _min(x, axes, keep):
    if x.size == 0:
        shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if keep else \
            [d for i, d in enumerate(x.shape) if i not in axes]
        high = np.inf if x.dtype.kind == "f" else (np.iinfo(x.dtype).max
                                                   if x.dtype.kind in "iu" else True)
        return np.full(shape, high, dtype=x.dtype)
    return np.min(x, axis=axes, keepdims=keep)


_make_reduce("ReduceMean", _mean)
_make_reduce("ReduceMax", _max)
_make_reduce("ReduceMin", _min)


def _acc_dtype(dtype: np.dtype) -> np.dtype:
    return compute_dtype(dtype) if dtype.kind == "f" else dtype


_make_reduce("ReduceSum", lambda x, a, k: np.sum(x, axis=a, keepdims=k,
                                                  dtype=_acc_dtype(x.dtype)))
_make_reduce("ReduceProd", lambda x, a, k: np.prod(x, axis=a, keepdims=k,
                                                   dtype=_acc_dtype(x.dtype)))


# =====================================================================================
# ArgMax / ArgMin
# =====================================================================================

def _infer_arg(node: Node):
    x = input_shape(node, 0)
    dtype = input_dtype(node, 0)
    if dtype.kind not in "fiu":
        raise invalid(node, f"input dtype {dtype} is not supported (numeric tensors only)")
    if not x:
        raise invalid(node, "the input must have rank >= 1")
    axis = normalize_axis(node.attrs.get("axis", 0), len(x), node)
    if x[axis] == 0:
        raise invalid(node, f"axis {axis} of input shape {x} is empty")
    for name in ("keepdims", "select_last_index"):
        if int(node.attrs.get(name, 0)) not in (0, 1):
            raise invalid(node, f"{name} must be 0 or 1")
    if int(node.attrs.get("keepdims", 1)):
        out = tuple(1 if i == axis else d for i, d in enumerate(x))
    else:
        out = tuple(d for i, d in enumerate(x) if i != axis)
    return [(out, np.dtype(np.int64))]


def _make_arg(op_type: str, fn):
    def kernel(attrs, x):
        axis = normalize_axis(attrs.get("axis", 0), x.ndim)
        keep = bool(int(attrs.get("keepdims", 1)))
        if int(attrs.get("select_last_index", 0)):
            flipped = np.flip(x, axis=axis)
            idx = x.shape[axis] - 1 - fn(flipped, axis=axis)
        else:
            idx = fn(x, axis=axis)
        idx = np.asarray(idx, dtype=np.int64)
        return np.expand_dims(idx, axis) if keep else idx

    kernel.__name__ = op_type.lower()
    kernel.__doc__ = (f"Index (int64) of the {op_type[3:].lower()}imum along ``axis`` (the "
                      "first one, or the last with ``select_last_index``), ``keepdims``.")
    register_op(op_type, infer=_infer_arg)(kernel)


_make_arg("ArgMax", np.argmax)
_make_arg("ArgMin", np.argmin)
