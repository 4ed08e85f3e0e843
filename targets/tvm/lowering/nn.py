"""TVM lowerings of the ops in `compiler/ops/nn.py`: convolutions, BatchNormalization,
MatMul/Gemm, Softmax, pooling, reductions and ArgMax/ArgMin.  (Resize, also in
``compiler/ops/nn.py``, has its own module: `targets.tvm.lowering.resize`.)
"""
from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax import op as R

from compiler.ir import Node
from compiler.ops.conv_util import resolve_auto_pad_transpose

from .core import (LowerContext, LoweringError, _attr, _const_operand, _dtype_str, _in, _ints,
                   _is_int, _norm_axis, _relax_pads, _shape, _shape_of, _spatial_attrs,
                   _unsupported, register_lowering)

__all__: list[str] = []


# ----------------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------------

_CONV = {1: ("conv1d", "NCW", "OIW"), 2: ("conv2d", "NCHW", "OIHW"),
         3: ("conv3d", "NCDHW", "OIDHW")}
_CONVT = {1: ("conv1d_transpose", "NCW", "IOW"), 2: ("conv2d_transpose", "NCHW", "IOHW"),
          3: ("conv3d_transpose", "NCDHW", "IODHW")}


def _bias_add(ctx: LowerContext, node: Node, y: relax.Expr, bias_index: int, rank: int,
              args: list) -> relax.Expr:
    bias = _in(node, bias_index)
    if bias is None:
        return y
    shape = (1, _shape(node, bias)[0]) + (1,) * rank
    if bias.const is not None:
        b = ctx.weight(bias.const.reshape(shape), bias.name + "_bcast", key=("bias", id(bias)))
    else:
        b = ctx.emit(R.reshape(args[bias_index], shape))
    return R.add(ctx.emit(y), b)


def _conv_shapes(node: Node, supported: dict, what: str) -> tuple[list, list, int, list]:
    """X and W shapes, spatial rank and kernel of a Conv/ConvTranspose, checked."""
    x_shape = _shape(node, node.inputs[0])
    w_shape = _shape(node, node.inputs[1])
    rank = len(x_shape) - 2
    if rank not in supported:
        raise _unsupported(node, f"a {rank}-D {what}")
    kernel = _ints(_attr(node, "kernel_shape")) or list(w_shape[2:])
    if list(kernel) != list(w_shape[2:]):
        raise _unsupported(node, f"kernel_shape={kernel} differing from the weight shape {w_shape}")
    return x_shape, w_shape, rank, kernel


@register_lowering("Conv")
def _lower_conv(ctx: LowerContext, node: Node, args: list) -> relax.Expr:
    x_shape, w_shape, rank, kernel = _conv_shapes(node, _CONV, "convolution")
    strides, dilations, pads = _spatial_attrs(node, x_shape[2:], kernel)
    group = int(_attr(node, "group", 1))
    name, data_layout, kernel_layout = _CONV[rank]
    y = getattr(R.nn, name)(args[0], args[1], strides=strides, padding=_relax_pads(pads),
                            dilation=dilations, groups=group, data_layout=data_layout,
                            kernel_layout=kernel_layout,
                            out_dtype=_dtype_str(node.output.dtype or node.inputs[0].dtype))
    return _bias_add(ctx, node, y, 2, rank, args)


@register_lowering("ConvTranspose")
def _lower_conv_transpose(ctx: LowerContext, node: Node, args: list) -> relax.Expr:
    x_shape, w_shape, rank, kernel = _conv_shapes(node, _CONVT, "transposed convolution")
    strides = _ints(_attr(node, "strides")) or [1] * rank
    dilations = _ints(_attr(node, "dilations")) or [1] * rank
    pads = _ints(_attr(node, "pads")) or [0] * (2 * rank)
    out_pad = _ints(_attr(node, "output_padding")) or [0] * rank
    output_shape = _ints(_attr(node, "output_shape"))
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    if output_shape or auto_pad not in ("", "NOTSET"):
        # the IR's rule (compiler.ops.conv_util), shared with the reference kernel
        pads = [int(p) for p in resolve_auto_pad_transpose(
            "NOTSET" if output_shape else auto_pad, x_shape[2:], kernel, strides, dilations,
            out_pad, output_shape or None, pads)]
    group = int(_attr(node, "group", 1))
    if any(p < 0 for p in pads[:rank]):
        raise _unsupported(node, f"negative begin pads {pads[:rank]}")
    # The output spans [begin, natural + output_padding - end) of the unpadded result;
    # rows past `natural` are zeros.  Relax wants output_padding < stride, so give it
    # only the crop and extend with zeros ourselves.
    end_pads = [max(0, pads[rank + i] - out_pad[i]) for i in range(rank)]
    extend = [max(0, out_pad[i] - pads[rank + i]) for i in range(rank)]
    name, data_layout, kernel_layout = _CONVT[rank]
    y = getattr(R.nn, name)(args[0], args[1], strides=strides,
                            padding=list(pads[:rank]) + end_pads, output_padding=[0] * rank,
                            dilation=dilations, groups=group, data_layout=data_layout,
                            kernel_layout=kernel_layout,
                            out_dtype=_dtype_str(node.output.dtype or node.inputs[0].dtype))
    if any(extend):
        width = [0, 0, 0, 0] + [v for e in extend for v in (0, e)]
        y = R.nn.pad(ctx.emit(y), width, "constant", 0.0)
    return _bias_add(ctx, node, y, 2, rank, args)


# ----------------------------------------------------------------------------------
# normalization
# ----------------------------------------------------------------------------------

@register_lowering("BatchNormalization")
def _lower_batchnorm(ctx: LowerContext, node: Node, args: list) -> relax.Expr:
    if int(_attr(node, "training_mode", 0)):
        raise _unsupported(node, "training_mode=1")
    if len(node.outputs) > 1:
        raise _unsupported(node, "the running mean/var outputs (training mode)")
    x = node.inputs[0]
    rank = len(_shape(node, x))
    channels = _shape(node, x)[1] if rank > 1 else 1
    bshape = (1, channels) + (1,) * (rank - 2)
    eps = float(_attr(node, "epsilon", 1e-5))
    dtype = x.dtype
    consts = [v.const if v is not None else None for v in node.inputs[1:5]]
    if all(c is not None for c in consts):
        scale, bias, mean, var = (c.astype(np.float64) for c in consts)
        mul = scale / np.sqrt(var + eps)
        add = bias - mean * mul
        mul_c = ctx.weight(mul.astype(dtype).reshape(bshape), node.name + "_scale")
        add_c = ctx.weight(add.astype(dtype).reshape(bshape), node.name + "_shift")
        return R.add(ctx.emit(R.multiply(args[0], mul_c)), add_c)
    scale, bias, mean, var = (ctx.emit(R.reshape(a, bshape)) for a in args[1:5])
    denom = ctx.emit(R.sqrt(ctx.emit(R.add(var, ctx.scalar(eps, dtype)))))
    norm = ctx.emit(R.divide(ctx.emit(R.subtract(args[0], mean)), denom))
    return R.add(ctx.emit(R.multiply(norm, scale)), bias)


# ----------------------------------------------------------------------------------
# linear algebra
# ----------------------------------------------------------------------------------

@register_lowering("MatMul")
def _lower_matmul(ctx, node, args):
    return R.matmul(args[0], args[1], out_dtype=_dtype_str(node.output.dtype))


@register_lowering("Gemm")
def _lower_gemm(ctx, node, args):
    alpha = float(_attr(node, "alpha", 1.0))
    beta = float(_attr(node, "beta", 1.0))
    trans_a = int(_attr(node, "transA", 0))
    trans_b = int(_attr(node, "transB", 0))
    dtype = node.output.dtype
    a, b = args[0], args[1]
    if trans_a:
        a = ctx.emit(R.permute_dims(a, [1, 0]))
    bv = node.inputs[1]
    if trans_b:
        if bv.const is not None:
            b = ctx.weight(np.ascontiguousarray(bv.const.T), bv.name + "_T", key=("T", id(bv)))
        else:
            b = ctx.emit(R.permute_dims(b, [1, 0]))
    y = R.matmul(a, b, out_dtype=_dtype_str(dtype))
    if alpha != 1.0:
        y = R.multiply(ctx.emit(y), ctx.scalar(alpha, dtype))
    cv = _in(node, 2)
    if cv is None or beta == 0.0:
        return y
    if cv.const is not None:
        c = ctx.weight((cv.const * np.asarray(beta, cv.const.dtype)).astype(cv.const.dtype),
                       cv.name, key=("gemmC", id(cv), beta))
    else:
        c = args[2] if beta == 1.0 else ctx.emit(R.multiply(args[2], ctx.scalar(beta, dtype)))
    return R.add(ctx.emit(y), c)


@register_lowering("Softmax", "LogSoftmax")
def _lower_softmax(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    axis = _norm_axis(int(_attr(node, "axis", -1)), rank, node)
    fn = R.nn.softmax if node.op_type == "Softmax" else R.nn.log_softmax
    return fn(args[0], axis=axis)


# ----------------------------------------------------------------------------------
# pooling and reductions
# ----------------------------------------------------------------------------------

@register_lowering("MaxPool", "AveragePool")
def _lower_pool(ctx, node, args):
    if len(node.outputs) > 1 and (node.outputs[1].uses or node.outputs[1].is_graph_output):
        raise _unsupported(node, "the Indices output of MaxPool")
    x_shape = _shape(node, node.inputs[0])
    rank = len(x_shape) - 2
    if rank not in (1, 2, 3):
        raise _unsupported(node, f"{rank}-D pooling")
    kernel = _ints(_attr(node, "kernel_shape"))
    if len(kernel) != rank:
        raise LoweringError(f"node '{node.name}': kernel_shape {kernel} for {rank}-D pooling")
    strides, dilations, pads = _spatial_attrs(node, x_shape[2:], kernel)
    ceil_mode = bool(int(_attr(node, "ceil_mode", 0)))
    count_include_pad = bool(int(_attr(node, "count_include_pad", 0)))
    is_max = node.op_type == "MaxPool"
    # TOPI pools match onnxruntime also in ceil_mode (a last window starting in the end
    # padding is dropped; count_include_pad divides by the window clipped to input+pads);
    # the output-shape check after lowering guards the shape rule.
    fn = getattr(R.nn, f"{'max' if is_max else 'avg'}_pool{rank}d")
    layout = {1: "NCW", 2: "NCHW", 3: "NCDHW"}[rank]
    y = fn(args[0], pool_size=kernel, strides=strides, padding=_relax_pads(pads),
           dilation=dilations, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
           layout=layout)
    outs = [y]
    if len(node.outputs) > 1:
        outs.append(None)
    return outs


@register_lowering("GlobalAveragePool")
def _lower_global_avg_pool(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    return R.mean(args[0], axis=list(range(2, rank)), keepdims=True)


@register_lowering("GlobalMaxPool")
def _lower_global_max_pool(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    return R.max(args[0], axis=list(range(2, rank)), keepdims=True)


_REDUCE = {"ReduceMean": R.mean, "ReduceMax": R.max, "ReduceSum": R.sum, "ReduceMin": R.min,
           "ReduceProd": R.prod}


@register_lowering(*_REDUCE)
def _lower_reduce(ctx, node, args):
    shape = _shape(node, node.inputs[0])
    rank = len(shape)
    keepdims = bool(int(_attr(node, "keepdims", 1)))
    if _in(node, 1) is not None:
        axes = _ints(_const_operand(node, 1, "axes"))
    else:
        axes = _ints(_attr(node, "axes"))
    if not axes:
        if int(_attr(node, "noop_with_empty_axes", 0)):
            return args[0]
        axes = list(range(rank))
    axes = sorted({_norm_axis(a, rank, node) for a in axes})
    if node.op_type == "ReduceMean" and _is_int(node.inputs[0].dtype):
        raise _unsupported(node, "integer ReduceMean")
    if any(shape[a] == 0 for a in axes):
        raise _unsupported(node, "reducing an empty axis")
    x = args[0]
    if node.inputs[0].dtype == np.bool_:
        if node.op_type not in ("ReduceMax", "ReduceMin"):
            raise _unsupported(node, "a bool input")
        x = ctx.emit(R.astype(x, "uint8"))  # TOPI has no bool max/min
        y = ctx.emit(_REDUCE[node.op_type](x, axis=axes, keepdims=keepdims))
        return R.astype(y, "bool")
    return _REDUCE[node.op_type](x, axis=axes, keepdims=keepdims)


@register_lowering("ArgMax", "ArgMin")
def _lower_argmax(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    if int(_attr(node, "select_last_index", 0)):
        raise _unsupported(node, "select_last_index=1")
    axis = _norm_axis(int(_attr(node, "axis", 0)), rank, node)
    keepdims = bool(int(_attr(node, "keepdims", 1)))
    fn = R.argmax if node.op_type == "ArgMax" else R.argmin
    y = ctx.emit(fn(args[0], axis=axis, keepdims=keepdims))
    if _shape_of(y) is not None and y.ty.dtype != _dtype_str(node.output.dtype):
        return R.astype(y, _dtype_str(node.output.dtype))
    return y
