"""TVM lowerings of the elementwise ops (`compiler/ops/elementwise.py`): activations,
unary math, binary arithmetic/comparison/logic, Pow and the variadic Sum/Min/Max/Mean.
"""
from __future__ import annotations

import numpy as np
from tvm.relax import op as R

from ..checks import nonzero_check
from .core import (LoweringError, _arg, _attr, _dtype_str, _in, _is_float, _sanitize,
                   _unsupported, register_lowering)

__all__: list[str] = []


@register_lowering("Relu")
def _lower_relu(ctx, node, args):
    # NaN must propagate (ONNX/onnxruntime).  TVM lowers max(a, b) to
    # select(a > b, a, b), which returns b when either is NaN: with the constant first
    # a NaN x is returned as is (R.nn.relu(x) = max(x, 0) turned NaN into 0).  Still a
    # plain elementwise maximum, so layout conversion and fusion see through it.
    if node.inputs[0].dtype.kind == "f":
        return R.maximum(ctx.scalar(0, node.inputs[0].dtype), args[0])
    return R.nn.relu(args[0])


@register_lowering("Clip")
def _lower_clip(ctx, node, args):
    dtype = node.inputs[0].dtype
    y = args[0]
    lo = _in(node, 1)
    hi = _in(node, 2)
    # the bound first: max/min lower to select(a > b, a, b), so a NaN x propagates (see
    # _lower_relu)
    for value, arg, fn, what in ((lo, _arg(args, 1), R.maximum, "min"),
                                 (hi, _arg(args, 2), R.minimum, "max")):
        if value is None:
            continue
        bound = ctx.scalar(value.const.reshape(()), dtype) if value.const is not None else arg
        y = ctx.emit(fn(bound, y))
    if lo is None and hi is None:
        # opset < 11 attributes (the importer should have turned them into inputs)
        if "min" in node.attrs:
            y = ctx.emit(R.maximum(ctx.scalar(node.attrs["min"], dtype), y))
        if "max" in node.attrs:
            y = ctx.emit(R.minimum(ctx.scalar(node.attrs["max"], dtype), y))
    return y


def _leaky(ctx, x, slope, dtype, slope_in_unit: bool):
    """``x`` for ``x >= 0``, ``slope * x`` below (LeakyRelu, PRelu) without a compare and
    select: a ``where(x < 0, ...)`` makes a bool tensor, and Relax's ``ConvertLayout``
    unpacks it (a bool ``layout_transform``, which TVM then fails to legalize: "Buffer
    te_layout_transform has elements of type T.bool, but the transformation fills padding
    with ... float32"), so a model with PRelu (MTCNN) or LeakyRelu lost the packed conv
    layout entirely (issue #16).  Arithmetic only, it stays packed and fuses into the
    conv's kernel.  With every slope in [0, 1] (known at compile time) it is
    ``max(slope * x, x)``: exactly the same values (``x`` second, so a NaN ``x`` is
    returned, see `_lower_relu`).  Otherwise ``max(0, x) + slope * min(0, x)``: also the
    same values (each term is exact and the other one is +-0) except for a non-finite
    slope and ``x >= 0`` (``inf * 0`` is NaN where ONNX gives ``x``)."""
    if slope_in_unit:
        return R.maximum(ctx.emit(R.multiply(x, slope)), x)
    zero = ctx.scalar(0, dtype)
    pos = ctx.emit(R.maximum(zero, x))
    neg = ctx.emit(R.multiply(ctx.emit(R.minimum(zero, x)), slope))
    return R.add(pos, neg)


@register_lowering("LeakyRelu")
def _lower_leaky_relu(ctx, node, args):
    alpha = float(_attr(node, "alpha", 0.01))
    dtype = node.inputs[0].dtype
    return _leaky(ctx, args[0], ctx.scalar(alpha, dtype), dtype, 0.0 <= alpha <= 1.0)


@register_lowering("PRelu")
def _lower_prelu(ctx, node, args):
    dtype = node.inputs[0].dtype
    slope = node.inputs[1].const
    unit = slope is not None and bool(np.all((slope >= 0) & (slope <= 1)))
    return _leaky(ctx, args[0], args[1], dtype, unit)


@register_lowering("Sigmoid")
def _lower_sigmoid(ctx, node, args):
    return R.sigmoid(args[0])


@register_lowering("Tanh")
def _lower_tanh(ctx, node, args):
    return R.tanh(args[0])


def _hard_sigmoid(ctx, x, dtype, alpha, beta):
    y = ctx.emit(R.add(ctx.emit(R.multiply(x, ctx.scalar(alpha, dtype))), ctx.scalar(beta, dtype)))
    y = ctx.emit(R.minimum(ctx.scalar(1, dtype), y))  # bound first: NaN propagates
    return ctx.emit(R.maximum(ctx.scalar(0, dtype), y))


@register_lowering("HardSigmoid")
def _lower_hard_sigmoid(ctx, node, args):
    return _hard_sigmoid(ctx, args[0], node.inputs[0].dtype, float(_attr(node, "alpha", 0.2)),
                         float(_attr(node, "beta", 0.5)))


@register_lowering("HardSwish")
def _lower_hard_swish(ctx, node, args):
    gate = _hard_sigmoid(ctx, args[0], node.inputs[0].dtype, 1.0 / 6.0, 0.5)
    return R.multiply(args[0], gate)


_UNARY = {"Floor": R.floor, "Ceil": R.ceil, "Sqrt": R.sqrt, "Neg": R.negative, "Abs": R.abs,
          "Exp": R.exp, "Log": R.log, "Erf": R.erf, "Round": R.round,
          "Sin": R.sin, "Cos": R.cos}


def _make_unary(fn):
    return lambda ctx, node, args: fn(args[0])


for _op, _fn in _UNARY.items():
    register_lowering(_op)(_make_unary(_fn))


@register_lowering("Sign")
def _lower_sign(ctx, node, args):
    # Sign(NaN) is NaN in onnxruntime; TVM's sign gives 0
    y = ctx.emit(R.sign(args[0]))
    if node.inputs[0].dtype.kind != "f":
        return y
    return R.where(ctx.emit(R.isnan(args[0])), args[0], y)


@register_lowering("Reciprocal")
def _lower_reciprocal(ctx, node, args):
    return R.divide(ctx.scalar(1, node.inputs[0].dtype), args[0])


@register_lowering("Softplus")
def _lower_softplus(ctx, node, args):
    return R.nn.softplus(args[0])


@register_lowering("Gelu")
def _lower_gelu(ctx, node, args):
    """ONNX Gelu (opset 20): ``approximate="none"`` is Relax's erf GELU, ``"tanh"`` its tanh
    approximation (the same formula as ONNX's)."""
    mode = _attr(node, "approximate", "none")
    if mode == "none":
        return R.nn.gelu(args[0])
    if mode == "tanh":
        return R.nn.gelu_tanh(args[0])
    raise _unsupported(node, f"approximate={mode!r}")


@register_lowering("Elu")
def _lower_elu(ctx, node, args):
    dtype = node.inputs[0].dtype
    alpha = float(_attr(node, "alpha", 1.0))
    x = args[0]
    em1 = ctx.emit(R.subtract(ctx.emit(R.exp(x)), ctx.scalar(1, dtype)))
    neg = ctx.emit(R.multiply(em1, ctx.scalar(alpha, dtype)))
    return R.where(ctx.emit(R.less(x, ctx.scalar(0, dtype))), neg, x)


# ----------------------------------------------------------------------------------
# elementwise binary / variadic
# ----------------------------------------------------------------------------------

def _lower_div(ctx, node, args):
    # R.divide on integers truncates toward zero (C semantics), which is ONNX's Div.
    dtype = node.inputs[0].dtype
    if dtype.kind not in "iu":
        return R.divide(args[0], args[1])
    a, b = args[0], args[1]
    divisor = node.inputs[1]
    if divisor.const is None:
        # x / 0 is undefined in ONNX and onnxruntime refuses it ("Integer division by
        # zero"), as the interpreter does: the built code fails at run time naming the
        # node (a constant zero divisor is refused at import, compiler/ops/elementwise.py)
        b = nonzero_check(
            ctx, b, divisor.shape, _dtype_str(divisor.dtype),
            f"node '{node.name}' ({node.op_type}): integer division by zero (the divisor "
            f"'{divisor.name}' has a zero element; onnxruntime refuses it too)",
            _sanitize(f"nonzero_{node.name}"))
    # x / 0 and INT_MIN / -1 trap (SIGFPE) in the generated code: the division itself
    # divides by 1 there (never a signal, even if a check were bypassed), returning 0
    # for x / 0 and -x (wrapping) for x / -1.
    zero = ctx.emit(R.equal(b, ctx.scalar(0, dtype)))
    unsafe = zero
    if dtype.kind == "i":
        minus_one = ctx.emit(R.equal(b, ctx.scalar(-1, dtype)))
        unsafe = ctx.emit(R.logical_or(zero, minus_one))
    safe_b = ctx.emit(R.where(unsafe, ctx.scalar(1, dtype), b))
    q = ctx.emit(R.divide(a, safe_b))
    if dtype.kind == "i":
        q = ctx.emit(R.where(minus_one, ctx.emit(R.subtract(ctx.scalar(0, dtype), a)), q))
    return R.where(zero, ctx.scalar(0, dtype), q)


_BINARY = {"Add": R.add, "Sub": R.subtract, "Mul": R.multiply,
           "Equal": R.equal, "Less": R.less, "Greater": R.greater,
           "LessOrEqual": R.less_equal, "GreaterOrEqual": R.greater_equal,
           "And": R.logical_and, "Or": R.logical_or, "Xor": R.logical_xor}


def _make_binary(fn):
    return lambda ctx, node, args: fn(args[0], args[1])


for _op, _fn in _BINARY.items():
    register_lowering(_op)(_make_binary(_fn))
register_lowering("Div")(_lower_div)


@register_lowering("Pow")
def _lower_pow(ctx, node, args):
    xv, yv = node.inputs[0], node.inputs[1]
    dtype = xv.dtype
    x, y = args
    if yv.const is not None and yv.const.size == 1:
        e = float(yv.const.reshape(()))
        if e == 1.0:
            return R.multiply(x, ctx.scalar(1, dtype))
        if e == 2.0:
            return R.multiply(x, x)
    if _is_float(dtype):
        if yv.dtype != dtype:
            y = ctx.emit(R.astype(y, _dtype_str(dtype)))
        return R.power(x, y)
    # integer base: computed in double and truncated back, like onnxruntime
    xf = ctx.emit(R.astype(x, "float64"))
    yf = ctx.emit(R.astype(y, "float64"))
    return R.astype(ctx.emit(R.power(xf, yf)), _dtype_str(dtype))


def _variadic(fn):
    nan_aware = fn in (R.maximum, R.minimum)

    def lower(ctx, node, args):
        present = [a for a in args if a is not None]
        if not present:
            raise LoweringError(f"node '{node.name}' ({node.op_type}) has no inputs")
        y = present[0]
        if len(present) == 1:
            return y
        step = fn
        if nan_aware and node.inputs[0].dtype.kind == "f":
            step = lambda a, b: _nan_propagating(ctx, fn, a, b)  # noqa: E731
        for a in present[1:-1]:
            y = ctx.emit(step(y, a))
        return step(y, present[-1])
    return lower


def _nan_propagating(ctx, fn, a, b):
    """``fn(a, b)`` (max or min) that is NaN when either operand is (ONNX/onnxruntime):
    TVM's select(a > b, a, b) drops a NaN ``a``; ``a + b`` is NaN exactly then."""
    either = ctx.emit(R.logical_or(ctx.emit(R.isnan(a)), ctx.emit(R.isnan(b))))
    return R.where(either, ctx.emit(R.add(a, b)), ctx.emit(fn(a, b)))


register_lowering("Sum")(_variadic(R.add))
register_lowering("Min")(_variadic(R.minimum))
register_lowering("Max")(_variadic(R.maximum))


@register_lowering("Mean")
def _lower_mean(ctx, node, args):
    present = [a for a in args if a is not None]
    total = _variadic(R.add)(ctx, node, present)
    if len(present) == 1:
        return total
    return R.divide(ctx.emit(total), ctx.scalar(len(present), node.output.dtype))
