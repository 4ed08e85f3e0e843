"""Relax lowering of the integer ops of `compiler.ops.quant` (domain ``q`` and the ONNX
integer ops), bit-exact against their numpy kernels.

Storage is int8, products accumulate in int32 (``R.nn.conv2d``/``R.matmul`` with
``out_dtype="int32"``), rescaling is an int64 multiply by a fixed-point multiplier,
an add of ``2**(shift-1)`` and an arithmetic right shift, then clip and cast.  Zero-point
corrections are folded into the int32 bias at compile time (``bias - zp * sum(w)``), and
an input with a non-zero zero point is padded with that zero point, so padding stays a
real zero; an int8 conv input is shifted to uint8 (``x + 128``, padded with
``zp + 128``, ``(zp + 128) * sum(w)`` folded into the bias), the operand of x86's
dot-product instruction, unless the target convolves signed data (NEON,
``LowerContext.int8_conv_data``).  The only float arithmetic is in ``q.Quantize``/``q.Dequantize`` (and the
ONNX Quantize/DequantizeLinear), where it is the same IEEE float32 operation as in numpy
(a multiply or divide, then round-half-to-even).
"""
from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax import op as R

from compiler.ops.conv_util import pool_output_shape, window_params
from compiler.ops.quant import conv_transpose_int, int_pool_sum

from .core import LowerContext, _shape, _unsupported, register_lowering

__all__: list[str] = []


def _i64(ctx: LowerContext, array, name: str) -> relax.Expr:
    return ctx.weight(np.asarray(array, dtype=np.int64), name)


def _clamp(ctx: LowerContext, y: relax.Var, lo: int, hi: int) -> relax.Expr:
    """``min(max(y, lo), hi)`` on an integer tensor.  Not ``R.clip``: Relax's layout
    conversion does not see through it, so every clip would unpack a packed (NCHWc)
    activation and pack it again; maximum/minimum with scalars keep it packed."""
    dtype = str(y.ty.dtype)
    y = ctx.emit(R.maximum(y, ctx.scalar(int(lo), dtype)))
    return R.minimum(y, ctx.scalar(int(hi), dtype))


def _clip_cast(ctx: LowerContext, y: relax.Var, qmin: int, qmax: int, dtype: str = "int8"):
    return R.astype(ctx.emit(_clamp(ctx, y, qmin, qmax)), dtype)


def _param_shape(rank: int, axis: int, size: int) -> tuple[int, ...]:
    shape = [1] * rank
    shape[axis] = size
    return tuple(shape)


# -- q.Quantize / q.Dequantize / q.Clip -------------------------------------------------

@register_lowering("q.Quantize")
def _q_quantize(ctx, node, args):
    a = node.attrs
    inv = np.float32(1.0 / float(a["scale"]))
    zp, qmin, qmax = int(a.get("zero_point", 0)), int(a["qmin"]), int(a["qmax"])
    r = ctx.emit(R.round(R.multiply(args[0], ctx.scalar(inv, np.float32))))
    r = ctx.emit(R.clip(r, float(qmin - zp), float(qmax - zp)))
    r = ctx.emit(R.astype(r, "int32"))
    if zp:
        r = ctx.emit(R.add(r, ctx.scalar(zp, np.int32)))
    return R.astype(r, "int8")


@register_lowering("q.Dequantize")
def _q_dequantize(ctx, node, args):
    zp = int(node.attrs.get("zero_point", 0))
    v = ctx.emit(R.astype(args[0], "int32"))
    if zp:
        v = ctx.emit(R.subtract(v, ctx.scalar(zp, np.int32)))
    v = ctx.emit(R.astype(v, "float32"))
    return R.multiply(v, ctx.scalar(np.float32(node.attrs["scale"]), np.float32))


@register_lowering("q.Clip")
def _q_clip(ctx, node, args):
    return _clamp(ctx, args[0], node.attrs["qmin"], node.attrs["qmax"])


# -- q.Conv / q.Gemm / q.MatMul ---------------------------------------------------------

@register_lowering("q.Conv")
def _q_conv(ctx, node, args):
    a = node.attrs
    w_value = node.inputs[1]
    if w_value.const is None:
        raise _unsupported(node, "a run-time weight")
    w = w_value.const
    _, strides, pads, dilations = window_params(a, 2, w.shape[2:])
    group = int(a.get("group", 1))
    zp = int(a.get("x_zero_point", 0))
    x = args[0]
    shift = 0
    if node.inputs[0].dtype == np.int8 and ctx.int8_conv_data == "uint8":
        # Convolve x + 128 (exactly uint8) instead of x: sum((x + 128) w) - (128 + zp) sum(w)
        # = sum((x - zp) w), so the correction goes into the int32 bias and padding uses
        # zp + 128, the same real zero.  The shift fuses into the producer's epilogue, and
        # u8 x s8 is the operand pair of dot-product instructions (VNNI's vpdpbusd): no
        # separate pack kernel and no zero-point correction kernel at run time.  With
        # zp = -128 (a ReLU's output, the usual case) the correction and the padding
        # value are both 0.
        x = ctx.emit(R.astype(ctx.emit(R.add(ctx.emit(R.astype(x, "int16")),
                                              ctx.scalar(128, np.int16))), "uint8"))
        shift = 128
    pad_value = zp + shift
    if pad_value and any(pads):
        x = ctx.emit(R.nn.pad(x, [0, 0, 0, 0, pads[0], pads[2], pads[1], pads[3]],
                              "constant", pad_value))
        pads = [0, 0, 0, 0]
    y = ctx.emit(R.nn.conv2d(x, ctx.value_const(w_value), strides=strides, padding=pads,
                             dilation=dilations, groups=group, data_layout="NCHW",
                             kernel_layout="OIHW", out_dtype="int32"))
    bias = np.zeros(w.shape[0], np.int64)
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        if node.inputs[2].const is None:
            raise _unsupported(node, "a run-time bias")
        bias = bias + node.inputs[2].const.astype(np.int64)
    if pad_value:
        bias = bias - pad_value * w.astype(np.int64).reshape(w.shape[0], -1).sum(axis=1)
    if not bias.any() and len(node.inputs) <= 2:
        return y
    return R.add(y, ctx.weight(bias.astype(np.int32).reshape(1, -1, 1, 1), node.name + "_bias"))


@register_lowering("q.ConvTranspose")
def _q_conv_transpose(ctx, node, args):
    """int8 x int8 -> int32 transposed conv; the zero point's contribution
    ``conv_transpose(zp, w)`` (position-dependent at the borders) is a compile-time int32
    constant subtracted with the bias, so the input stays int8."""
    a = node.attrs
    w_value = node.inputs[1]
    if w_value.const is None:
        raise _unsupported(node, "a run-time weight")
    w = w_value.const
    x_shape = _shape(node, node.inputs[0])
    _, strides, pads, dilations = window_params(a, 2, w.shape[2:])
    opad = [int(v) for v in (a.get("output_padding") or [0, 0])]
    group = int(a.get("group", 1))
    zp = int(a.get("x_zero_point", 0))
    # as the float lowering: Relax gets only the crop; output rows past the natural size
    # (output_padding beyond the end pad) are zeros appended here
    end_pads = [max(0, pads[2 + i] - opad[i]) for i in range(2)]
    extend = [max(0, opad[i] - pads[2 + i]) for i in range(2)]
    y = ctx.emit(R.nn.conv2d_transpose(args[0], ctx.value_const(w_value), strides=strides,
                                       padding=list(pads[:2]) + end_pads,
                                       output_padding=[0, 0], dilation=dilations, groups=group,
                                       data_layout="NCHW", kernel_layout="IOHW",
                                       out_dtype="int32"))
    if any(extend):
        y = ctx.emit(R.nn.pad(y, [0, 0, 0, 0, 0, extend[0], 0, extend[1]], "constant", 0))
    out_shape = _shape(node, node.output)
    const = np.zeros((1, *out_shape[1:]), np.int64)
    if zp:
        ones = np.full((1, *x_shape[1:]), zp, np.int64)
        const = const - conv_transpose_int(ones, w.astype(np.int64), strides, pads, dilations,
                                           group, opad)
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    if has_bias:
        if node.inputs[2].const is None:
            raise _unsupported(node, "a run-time bias")
        const = const + node.inputs[2].const.astype(np.int64).reshape(1, -1, 1, 1)
    if not const.any() and not has_bias:
        return y
    if zp:
        return R.add(y, ctx.weight(const.astype(np.int32), node.name + "_bias"))
    return R.add(y, ctx.weight(const[:, :, :1, :1].astype(np.int32), node.name + "_bias"))


@register_lowering("q.Gemm")
def _q_gemm(ctx, node, args):
    b_value = node.inputs[1]
    if b_value.const is None:
        raise _unsupported(node, "a run-time B")
    b = b_value.const
    if int(node.attrs.get("transB", 0)):
        b = np.ascontiguousarray(b.T)
    zp = int(node.attrs.get("a_zero_point", 0))
    y = ctx.emit(R.matmul(args[0], ctx.weight(b, b_value.name + "_kn"), out_dtype="int32"))
    bias = np.zeros(b.shape[1], np.int64)
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    if has_bias:
        if node.inputs[2].const is None:
            raise _unsupported(node, "a run-time bias")
        bias = bias + node.inputs[2].const.astype(np.int64)
    if zp:
        bias = bias - zp * b.astype(np.int64).sum(axis=0)
    if not bias.any() and not has_bias:
        return y
    return R.add(y, ctx.weight(bias.astype(np.int32).reshape(1, -1), node.name + "_bias"))


def _centered_i32(ctx, expr, zp):
    v = ctx.emit(R.astype(expr, "int32"))
    if zp:
        v = ctx.emit(R.subtract(v, ctx.scalar(int(zp), np.int32)))
    return v


@register_lowering("q.MatMul")
def _q_matmul(ctx, node, args):
    a = _centered_i32(ctx, args[0], node.attrs.get("a_zero_point", 0))
    b = _centered_i32(ctx, args[1], node.attrs.get("b_zero_point", 0))
    return R.matmul(a, b, out_dtype="int32")


# -- q.Requantize / q.Add / q.Concat ----------------------------------------------------

def _rescale(ctx, v64, mult, shift):
    """(v * M + 2**(shift-1)) >> shift on int64 expressions/constants."""
    mult = np.asarray(mult, np.int64)
    shift = np.asarray(shift, np.int64)
    y = ctx.emit(R.multiply(v64, _i64(ctx, mult, "mult")))
    y = ctx.emit(R.add(y, _i64(ctx, np.left_shift(np.int64(1), shift - 1), "round")))
    return ctx.emit(R.right_shift(y, _i64(ctx, shift, "shift")))


#: ``q.Requantize`` rescales in int64 (the product of an int32 accumulator and a 31-bit
#: multiplier); lowered op by op, the ``astype(int64)`` is a full-size tensor twice the
#: accumulator's bytes, and TVM's untuned CPU pipeline does not fuse it away.  Above this
#: many int64 bytes the rescale runs on groups of channels (each group sliced, rescaled,
#: cast to int8, then the int8 groups concatenated): the same per-element integer
#: operations, so bit-identical, with only one group's int64 alive.  On DeepLab at
#: 256x256 the int8 arena's peak was int32 acc (6 MiB) + its int64 copy (12 MiB) at the
#: 128x128x96 stem.  Only for unfused builds (``LowerContext.fused`` false): with
#: FuseOps the whole rescale runs in the conv's kernel epilogue, int64 and int32 never
#: stored, while the slices between conv and rescale would stop that fusion (the conv's
#: int32 output stored at full size, then one kernel per group: 38 % + 28 % of
#: mtcnn_pnet's tuned int8 time).
REQUANT_GROUP_BYTES = 1 << 20


def _requantize(ctx, acc, mult, shift, zp: int, qmin: int, qmax: int):
    y = _rescale(ctx, ctx.emit(R.astype(acc, "int64")), mult, shift)
    if zp:
        y = ctx.emit(R.add(y, ctx.scalar(zp, np.int64)))
    return _clip_cast(ctx, y, qmin, qmax)


@register_lowering("q.Requantize")
def _q_requantize(ctx, node, args):
    a = node.attrs
    m_value, s_value = node.inputs[1], node.inputs[2]
    if m_value.const is None or s_value.const is None:
        raise _unsupported(node, "run-time multipliers")
    mult = m_value.const.astype(np.int64).reshape(-1)
    shift = s_value.const.astype(np.int64).reshape(-1)
    shape = _shape(node, node.inputs[0])
    rank = len(shape)
    axis = int(a.get("axis", 1)) % rank if rank else 0
    zp, qmin, qmax = int(a.get("zero_point", 0)), a["qmin"], a["qmax"]

    def params(lo: int, hi: int):
        if mult.size > 1:
            pshape = _param_shape(rank, axis, hi - lo)
            return mult[lo:hi].reshape(pshape), shift[lo:hi].reshape(pshape)
        return mult.reshape(()), shift.reshape(())

    channels = int(shape[1]) if rank >= 2 else 1
    nbytes = int(np.prod(shape, dtype=np.int64)) * 8
    if (ctx.fused or nbytes <= REQUANT_GROUP_BYTES or channels < 2
            or (mult.size > 1 and axis != 1)):
        return _requantize(ctx, args[0], *params(0, mult.size), zp, qmin, qmax)
    groups = min(channels, -(-nbytes // REQUANT_GROUP_BYTES))
    step = -(-channels // groups)
    parts = []
    for lo in range(0, channels, step):
        hi = min(channels, lo + step)
        part = ctx.emit(R.strided_slice(args[0], axes=[1], begin=[lo], end=[hi]))
        parts.append(ctx.emit(_requantize(ctx, part, *(params(lo, hi) if mult.size > 1
                                                         else params(0, 1)),
                                          zp, qmin, qmax)))
    return R.concat(parts, axis=1)


def _centered_i64(ctx, expr, zp):
    v = ctx.emit(R.astype(expr, "int64"))
    if int(zp):
        v = ctx.emit(R.subtract(v, ctx.scalar(int(zp), np.int64)))
    return v


@register_lowering("q.Add")
def _q_add(ctx, node, args):
    a = node.attrs
    ta = ctx.emit(R.multiply(_centered_i64(ctx, args[0], a["a_zero_point"]),
                             ctx.scalar(int(a["a_multiplier"]), np.int64)))
    tb = ctx.emit(R.multiply(_centered_i64(ctx, args[1], a["b_zero_point"]),
                             ctx.scalar(int(a["b_multiplier"]), np.int64)))
    s = int(a["shift"])
    y = ctx.emit(R.add(ctx.emit(R.add(ta, tb)), ctx.scalar(1 << (s - 1), np.int64)))
    y = ctx.emit(R.right_shift(y, ctx.scalar(s, np.int64)))
    y = ctx.emit(R.add(y, ctx.scalar(int(a["zero_point"]), np.int64)))
    return _clip_cast(ctx, y, a["qmin"], a["qmax"])


@register_lowering("q.Concat")
def _q_concat(ctx, node, args):
    a = node.attrs
    s = int(a["shift"])
    parts = []
    for x, zp, m in zip(args, a["zero_points"], a["multipliers"]):
        if int(zp) == int(a["zero_point"]) and int(m) == (1 << s) and \
                int(a["qmin"]) == -128 and int(a["qmax"]) == 127:
            parts.append(x)  # same scale and zero point: nothing to do
            continue
        y = ctx.emit(R.multiply(_centered_i64(ctx, x, zp), ctx.scalar(int(m), np.int64)))
        y = ctx.emit(R.add(y, ctx.scalar(1 << (s - 1), np.int64)))
        y = ctx.emit(R.right_shift(y, ctx.scalar(s, np.int64)))
        y = ctx.emit(R.add(y, ctx.scalar(int(a["zero_point"]), np.int64)))
        parts.append(ctx.emit(_clip_cast(ctx, y, a["qmin"], a["qmax"])))
    return R.concat(parts, axis=int(a.get("axis", 1)))


# -- pools --------------------------------------------------------------------------------

def _round_div_zp(ctx, total32, count, zp):
    """zp + floor((2*total + count) / (2*count)), clipped to int8."""
    count = np.asarray(count, np.int64)
    num = ctx.emit(R.add(ctx.emit(R.multiply(total32, ctx.scalar(2, np.int64))),
                         _i64(ctx, count, "count")))
    y = ctx.emit(R.floor_divide(num, _i64(ctx, 2 * count, "count2")))
    if zp:
        y = ctx.emit(R.add(y, ctx.scalar(zp, np.int64)))
    return _clip_cast(ctx, y, -128, 127)


@register_lowering("q.AveragePool")
def _q_avgpool(ctx, node, args):
    a = node.attrs
    x_shape = _shape(node, node.inputs[0])
    kernel, strides, pads, dilations = window_params(a, 2)
    ceil_mode = bool(a.get("ceil_mode", 0))
    zp = int(a.get("zero_point", 0))
    out_sp = pool_output_shape(x_shape[2:], kernel, strides, pads, dilations, ceil_mode)
    # window sums by a depthwise conv with ones (zero padding); a ceil_mode overhang
    # becomes extra zero padding at the end
    end = [pads[2 + i] + max(0, (out_sp[i] - 1) * strides[i] + kernel[i]
                              - (x_shape[2 + i] + pads[i] + pads[2 + i])) for i in range(2)]
    c = x_shape[1]
    ones = np.ones((c, 1, *kernel), np.int8)
    acc = ctx.emit(R.nn.conv2d(args[0], ctx.weight(ones, node.name + "_ones"), strides=strides,
                               padding=[pads[0], pads[1], end[0], end[1]], groups=c,
                               out_dtype="int32"))
    acc = ctx.emit(R.astype(acc, "int64"))
    unit = np.ones((1, 1, *x_shape[2:]), np.int64)
    taps_in = int_pool_sum(unit, kernel, strides, pads, ceil_mode, False)[0]
    count = int_pool_sum(unit, kernel, strides, pads, ceil_mode,
                         bool(a.get("count_include_pad", 0)))[1]
    if zp:
        acc = ctx.emit(R.subtract(acc, _i64(ctx, zp * taps_in, "zp_taps")))
    return _round_div_zp(ctx, acc, count, zp)


@register_lowering("q.GlobalAveragePool")
def _q_gap(ctx, node, args):
    x_shape = _shape(node, node.inputs[0])
    zp = int(node.attrs.get("zero_point", 0))
    n = int(np.prod(x_shape[2:]))
    total = ctx.emit(R.sum(ctx.emit(R.astype(args[0], "int64")),
                           axis=list(range(2, len(x_shape))), keepdims=True))
    if zp:
        total = ctx.emit(R.subtract(total, ctx.scalar(zp * n, np.int64)))
    return _round_div_zp(ctx, total, np.int64(n), zp)


# -- q.Resize -------------------------------------------------------------------------------

@register_lowering("q.Resize")
def _q_resize(ctx, node, args):
    mh_value, mw_value = node.inputs[1], node.inputs[2]
    if mh_value.const is None or mw_value.const is None:
        raise _unsupported(node, "run-time interpolation matrices")
    zp = int(node.attrs.get("zero_point", 0))
    s = int(node.attrs.get("shift", 16))
    x = _centered_i64(ctx, args[0], zp)
    mh = _i64(ctx, mh_value.const, node.name + "_mh")
    mwt = _i64(ctx, np.ascontiguousarray(mw_value.const.T), node.name + "_mwt")
    y = ctx.emit(R.matmul(mh, x, out_dtype="int64"))  # (Ho,H) @ (N,C,H,W) -> (N,C,Ho,W)
    y = ctx.emit(R.matmul(y, mwt, out_dtype="int64"))  # -> (N,C,Ho,Wo)
    y = ctx.emit(R.add(y, ctx.scalar(1 << (s - 1), np.int64)))
    y = ctx.emit(R.right_shift(y, ctx.scalar(s, np.int64)))
    if zp:
        y = ctx.emit(R.add(y, ctx.scalar(zp, np.int64)))
    return _clip_cast(ctx, y, -128, 127)


# -- ONNX integer ops -----------------------------------------------------------------------

def _axis_expr(ctx, node, args, index, rank, axis, dtype):
    """Scale / zero point operand ``index`` broadcastable against the data (None if absent)."""
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None:
        return None
    if value.const is not None:
        arr = np.asarray(value.const)
        arr = arr.reshape(()) if arr.size == 1 else arr.reshape(_param_shape(rank, axis, arr.size))
        return ctx.weight(arr.astype(dtype), value.name)
    expr = args[index]
    if str(np.dtype(value.dtype)) != str(np.dtype(dtype)):
        expr = ctx.emit(R.astype(expr, str(np.dtype(dtype))))
    if value.size > 1:
        expr = ctx.emit(R.reshape(expr, _param_shape(rank, axis, value.size)))
    return expr


@register_lowering("QuantizeLinear")
def _quantize_linear(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    axis = int(node.attrs.get("axis", 1)) % max(rank, 1)
    out = str(node.output.dtype)
    lo, hi = (0, 255) if out == "uint8" else (-128, 127)
    if node.inputs[0].dtype != np.float32:
        raise _unsupported(node, f"input dtype {node.inputs[0].dtype}")
    scale = _axis_expr(ctx, node, args, 1, rank, axis, np.float32)
    zp = _axis_expr(ctx, node, args, 2, rank, axis, np.int32)
    r = ctx.emit(R.round(R.divide(args[0], scale)))
    r = ctx.emit(R.clip(r, -1e9, 1e9))
    r = ctx.emit(R.astype(r, "int32"))
    if zp is not None:
        r = ctx.emit(R.add(r, zp))
    return _clip_cast(ctx, r, lo, hi, out)


@register_lowering("DequantizeLinear")
def _dequantize_linear(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    axis = int(node.attrs.get("axis", 1)) % max(rank, 1)
    scale = _axis_expr(ctx, node, args, 1, rank, axis, np.float32)
    zp = _axis_expr(ctx, node, args, 2, rank, axis, np.int32)
    v = ctx.emit(R.astype(args[0], "int32"))
    if zp is not None:
        v = ctx.emit(R.subtract(v, zp))
    v = ctx.emit(R.astype(v, "float32"))
    return R.multiply(v, scale)


@register_lowering("DynamicQuantizeLinear")
def _dynamic_quantize_linear(ctx, node, args):
    x = args[0]
    zero = ctx.scalar(0.0, np.float32)
    lo = ctx.emit(R.minimum(ctx.emit(R.min(x)), zero))
    hi = ctx.emit(R.maximum(ctx.emit(R.max(x)), zero))
    scale = ctx.emit(R.divide(ctx.emit(R.subtract(hi, lo)), ctx.scalar(255.0, np.float32)))
    zpf = ctx.emit(R.clip(ctx.emit(R.round(ctx.emit(R.subtract(
        zero, ctx.emit(R.divide(lo, scale)))))), 0.0, 255.0))
    y = ctx.emit(R.add(ctx.emit(R.round(ctx.emit(R.divide(x, scale)))), zpf))
    y = ctx.emit(R.clip(y, 0.0, 255.0))
    return [R.astype(y, "uint8"), scale, R.astype(zpf, "uint8")]


def _zp_centered(ctx, node, args, index, data_index, shape=None):
    v = ctx.emit(R.astype(args[data_index], "int32"))
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None:
        return v
    if value.const is not None:
        zp = np.asarray(value.const, np.int32)
        if not zp.any():
            return v
        zp_e = ctx.weight(zp.reshape(shape) if shape is not None and zp.size > 1
                          else zp.reshape(()) if zp.size == 1 else zp, "zp")
    else:
        zp_e = ctx.emit(R.astype(args[index], "int32"))
        if shape is not None and value.size > 1:
            zp_e = ctx.emit(R.reshape(zp_e, shape))
    return ctx.emit(R.subtract(v, zp_e))


@register_lowering("ConvInteger")
def _conv_integer(ctx, node, args):
    x_shape = _shape(node, node.inputs[0])
    w_shape = _shape(node, node.inputs[1])
    if len(x_shape) != 4:
        raise _unsupported(node, f"a {len(x_shape) - 2}-D ConvInteger")
    _, strides, pads, dilations = window_params(node.attrs, 2, w_shape[2:])
    x = _zp_centered(ctx, node, args, 2, 0)
    w = _zp_centered(ctx, node, args, 3, 1, shape=(w_shape[0], 1, 1, 1))
    return R.nn.conv2d(x, w, strides=strides, padding=pads, dilation=dilations,
                       groups=int(node.attrs.get("group", 1)), out_dtype="int32")


@register_lowering("MatMulInteger")
def _matmul_integer(ctx, node, args):
    a = _zp_centered(ctx, node, args, 2, 0)
    b = _zp_centered(ctx, node, args, 3, 1)
    return R.matmul(a, b, out_dtype="int32")
