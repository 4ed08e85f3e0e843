"""TVM lowerings of the elementwise ops (`compiler/ops/elementwise.py`): activations,
unary math, binary arithmetic/comparison/logic, Pow and the variadic Sum/Min/Max/Mean.
"""
from __future__ import annotations

from tvm.relax import op as R

from .core import (LoweringError, _arg, _attr, _dtype_str, _in, _is_float, _unsupported,
                   register_lowering)

__all__: list[str] = []


@register_lowering("Relu")
def _lower_relu(ctx, node, args):
    return R.nn.relu(args[0])


@register_lowering("Clip")
def _lower_clip(ctx, node, args):
    dtype = node.inputs[0].dtype
    y = args[0]
    lo = _in(node, 1)
    hi = _in(node, 2)
    for value, arg, fn, what in ((lo, _arg(args, 1), R.maximum, "min"),
                                 (hi, _arg(args, 2), R.minimum, "max")):
        if value is None:
            continue
        bound = ctx.scalar(value.const.reshape(()), dtype) if value.const is not None else arg
        y = ctx.emit(fn(y, bound))
    if lo is None and hi is None:
        # opset < 11 attributes (the importer should have turned them into inputs)
        if "min" in node.attrs:
            y = ctx.emit(R.maximum(y, ctx.scalar(node.attrs["min"], dtype)))
        if "max" in node.attrs:
            y = ctx.emit(R.minimum(y, ctx.scalar(node.attrs["max"], dtype)))
    return y


@register_lowering("LeakyRelu")
def _lower_leaky_relu(ctx, node, args):
    alpha = float(_attr(node, "alpha", 0.01))
    dtype = node.inputs[0].dtype
    x = args[0]
    neg = ctx.emit(R.multiply(x, ctx.scalar(alpha, dtype)))
    return R.where(ctx.emit(R.less(x, ctx.scalar(0, dtype))), neg, x)


@register_lowering("PRelu")
def _lower_prelu(ctx, node, args):
    dtype = node.inputs[0].dtype
    x = args[0]
    neg = ctx.emit(R.multiply(x, args[1]))
    return R.where(ctx.emit(R.less(x, ctx.scalar(0, dtype))), neg, x)


@register_lowering("Sigmoid")
def _lower_sigmoid(ctx, node, args):
    return R.sigmoid(args[0])


@register_lowering("Tanh")
def _lower_tanh(ctx, node, args):
    return R.tanh(args[0])


def _hard_sigmoid(ctx, x, dtype, alpha, beta):
    y = ctx.emit(R.add(ctx.emit(R.multiply(x, ctx.scalar(alpha, dtype))), ctx.scalar(beta, dtype)))
    y = ctx.emit(R.minimum(y, ctx.scalar(1, dtype)))
    return ctx.emit(R.maximum(y, ctx.scalar(0, dtype)))


@register_lowering("HardSigmoid")
def _lower_hard_sigmoid(ctx, node, args):
    return _hard_sigmoid(ctx, args[0], node.inputs[0].dtype, float(_attr(node, "alpha", 0.2)),
                         float(_attr(node, "beta", 0.5)))


@register_lowering("HardSwish")
def _lower_hard_swish(ctx, node, args):
    gate = _hard_sigmoid(ctx, args[0], node.inputs[0].dtype, 1.0 / 6.0, 0.5)
    return R.multiply(args[0], gate)


_UNARY = {"Floor": R.floor, "Ceil": R.ceil, "Sqrt": R.sqrt, "Neg": R.negative, "Abs": R.abs,
          "Exp": R.exp, "Log": R.log, "Sign": R.sign, "Erf": R.erf, "Round": R.round,
          "Sin": R.sin, "Cos": R.cos}


def _make_unary(fn):
    return lambda ctx, node, args: fn(args[0])


for _op, _fn in _UNARY.items():
    register_lowering(_op)(_make_unary(_fn))


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
    return R.divide(args[0], args[1])


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
    def lower(ctx, node, args):
        present = [a for a in args if a is not None]
        if not present:
            raise LoweringError(f"node '{node.name}' ({node.op_type}) has no inputs")
        y = present[0]
        if len(present) == 1:
            return y
        for a in present[1:-1]:
            y = ctx.emit(fn(y, a))
        return fn(y, present[-1])
    return lower


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
