"""Elementwise ops: activations, unary math, broadcasting binary/variadic arithmetic
(ONNX opset-17 semantics; outputs keep the input dtype)."""
from __future__ import annotations

import math
from functools import reduce
from typing import Callable

import numpy as np

from ..ir import Node
from .conv_util import compute_dtype, has_input, input_dtype, input_shape, invalid, unsupported
from .registry import broadcast_shapes, register_op

__all__ = ["div_values", "pow_values"]


def _float_attr(x: np.ndarray, value: float):
    """An attribute scalar in x's dtype (so float32 math matches onnxruntime)."""
    return x.dtype.type(value) if x.dtype.kind == "f" else value


def _same(result, dtype) -> np.ndarray:
    return np.asarray(result).astype(dtype, copy=False)


# -- unary ---------------------------------------------------------------------------

def _unary_infer(kinds: str, unimplemented: str = ""):
    """Input dtype kinds the op takes; ``unimplemented`` kinds are legal ONNX that this
    compiler does not implement (UnsupportedOpError rather than a validation error)."""
    def infer(node: Node):
        shape = input_shape(node, 0)
        dtype = input_dtype(node, 0)
        if dtype.kind in unimplemented:
            raise unsupported(node, "input dtype", str(dtype),
                              f"only {node.op_type} of float tensors is implemented")
        if dtype.kind not in kinds:
            raise invalid(node, f"input dtype {dtype} is not supported")
        return [(shape, dtype)]
    return infer


def _register_unary(op_type: str, fn: Callable[[np.ndarray], np.ndarray], kinds: str,
                    doc: str, unimplemented: str = "", **traits) -> None:
    def kernel(attrs, x):
        with np.errstate(all="ignore"):
            return _same(fn(x), x.dtype)

    kernel.__name__ = op_type.lower()
    kernel.__doc__ = doc
    register_op(op_type, infer=_unary_infer(kinds, unimplemented), elementwise="unary",
                **traits)(kernel)


def _sigmoid(x):
    one = x.dtype.type(1)
    return one / (one + np.exp(-x))


def _hard_swish(x):
    t = x * x.dtype.type(1.0 / 6.0) + x.dtype.type(0.5)
    return x * np.clip(t, 0, 1)


def _relu(x):
    return np.maximum(x, x.dtype.type(0))


_FLOAT = "f"
_SIGNED = "fi"
_NUMERIC = "fiu"

_register_unary("Relu", _relu, _SIGNED, "max(x, 0)", integer_counterpart="q.Clip")
_register_unary("Sigmoid", _sigmoid, _FLOAT, "1 / (1 + exp(-x))")
_register_unary("HardSwish", _hard_swish, _FLOAT, "x * max(0, min(1, x / 6 + 0.5))")
_register_unary("Tanh", np.tanh, _FLOAT, "tanh(x)")
_register_unary("Floor", np.floor, _FLOAT, "floor(x)")
_register_unary("Ceil", np.ceil, _FLOAT, "ceil(x)")
_register_unary("Sqrt", np.sqrt, _FLOAT, "sqrt(x)")
_register_unary("Exp", np.exp, _FLOAT, "exp(x)")
_register_unary("Log", np.log, _FLOAT, "natural log")
_register_unary("Neg", np.negative, _SIGNED, "-x")
_register_unary("Abs", np.abs, _NUMERIC, "|x|")


_erf_f64 = np.frompyfunc(math.erf, 1, 1)


def _erf(x):
    return np.asarray(_erf_f64(x.astype(np.float64)), dtype=np.float64)


def _softplus(x):
    ct = compute_dtype(x.dtype)
    return np.logaddexp(ct.type(0), x.astype(ct, copy=False))


def _reciprocal(x):
    return x.dtype.type(1) / x


_register_unary("Sign", np.sign, _NUMERIC, "-1, 0 or 1 by the sign of x")
_register_unary("Erf", _erf, _FLOAT, "Gauss error function (computed in float64)",
                unimplemented="iu")
_register_unary("Sin", np.sin, _FLOAT, "sin(x)")
_register_unary("Cos", np.cos, _FLOAT, "cos(x)")
_register_unary("Round", np.rint, _FLOAT, "round half to even")
_register_unary("Reciprocal", _reciprocal, _FLOAT, "1 / x")
_register_unary("Softplus", _softplus, _FLOAT, "log(exp(x) + 1), computed stably")


# -- parametrised activations -------------------------------------------------------------

@register_op("LeakyRelu", infer=_unary_infer(_FLOAT), elementwise="unary")
def leaky_relu(attrs, x):
    """x if x >= 0 else alpha * x."""
    alpha = _float_attr(x, attrs.get("alpha", 0.01))
    return _same(np.where(x >= 0, x, x * alpha), x.dtype)


@register_op("HardSigmoid", infer=_unary_infer(_FLOAT), elementwise="unary")
def hard_sigmoid(attrs, x):
    """max(0, min(1, alpha * x + beta))."""
    alpha = _float_attr(x, attrs.get("alpha", 0.2))
    beta = _float_attr(x, attrs.get("beta", 0.5))
    return _same(np.clip(x * alpha + beta, 0, 1), x.dtype)


@register_op("Elu", infer=_unary_infer(_FLOAT), elementwise="unary")
def elu(attrs, x):
    """x if x >= 0 else alpha * (exp(x) - 1)."""
    ct = compute_dtype(x.dtype)
    xc = x.astype(ct, copy=False)
    alpha = ct.type(attrs.get("alpha", 1.0))
    with np.errstate(all="ignore"):
        return _same(np.where(xc >= 0, xc, alpha * np.expm1(xc)), x.dtype)


_GELU_MODES = ("none", "tanh")


def _infer_gelu(node: Node):
    mode = node.attrs.get("approximate", "none")
    if mode not in _GELU_MODES:
        raise invalid(node, f"approximate={mode!r} is not one of {_GELU_MODES}")
    return _unary_infer(_FLOAT)(node)


@register_op("Gelu", infer=_infer_gelu, opset=20, elementwise="unary")
def gelu(attrs, x):
    """0.5 x (1 + erf(x / sqrt 2)); ``approximate="tanh"``: 0.5 x (1 + tanh(sqrt(2/pi)
    (x + 0.044715 x^3))).  ONNX opset 20; computed in float64, rounded once."""
    xd = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if attrs.get("approximate", "none") == "tanh":
            inner = math.sqrt(2.0 / math.pi) * (xd + 0.044715 * xd ** 3)
            y = 0.5 * xd * (1.0 + np.tanh(inner))
        else:
            y = 0.5 * xd * (1.0 + _erf(xd / math.sqrt(2.0)))
    return _same(y, x.dtype)


def _infer_prelu(node: Node):
    x = input_shape(node, 0)
    slope = input_shape(node, 1, "(slope)")
    if broadcast_shapes(x, slope, node=node) != tuple(x):
        raise invalid(node, f"slope {slope} does not broadcast to X {x}")
    return [(x, input_dtype(node, 0))]


@register_op("PRelu", infer=_infer_prelu, elementwise="broadcast")
def prelu(attrs, x, slope):
    """x if x >= 0 else slope * x (slope broadcast to x)."""
    return _same(np.where(x < 0, x * slope.astype(x.dtype, copy=False), x), x.dtype)


def _infer_clip(node: Node):
    x = input_shape(node, 0)
    for i in (1, 2):
        if has_input(node, i) and int(np.prod(input_shape(node, i))) != 1:
            raise invalid(node, f"input {i} (min/max) must be a scalar")
    return [(x, input_dtype(node, 0))]


@register_op("Clip", infer=_infer_clip, elementwise="unary", integer_counterpart="q.Clip")
def clip(attrs, x, lo=None, hi=None):
    """min(max(x, min), max) with optional scalar bounds (opset-11+ form)."""
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo, dtype=x.dtype).reshape(()))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi, dtype=x.dtype).reshape(()))
    return np.array(y, dtype=x.dtype, copy=True) if y is x else _same(y, x.dtype)


# -- binary / variadic ------------------------------------------------------------------

def _infer_broadcast(node: Node):
    shapes = [input_shape(node, i) for i in range(len(node.inputs))]
    if not shapes:
        raise invalid(node, "needs at least one input")
    dtypes = {input_dtype(node, i) for i in range(len(node.inputs))}
    if len(dtypes) > 1:
        raise invalid(node, f"inputs have different dtypes {sorted(map(str, dtypes))}")
    return [(broadcast_shapes(*shapes, node=node), input_dtype(node, 0))]


def div_values(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: true division for floats, truncation toward zero for integers."""
    if a.dtype.kind in "iu":
        if np.any(np.asarray(b) == 0):
            # undefined in ONNX; onnxruntime fails with "Integer division by zero": so do we
            raise invalid(None, "integer division by zero (onnxruntime refuses it too); "
                          "check the divisor input")
        with np.errstate(all="ignore"):
            q = np.floor_divide(a, b)
            if a.dtype.kind == "i":
                r = a - q * b
                q = q + ((r != 0) & ((a < 0) != (b < 0))).astype(q.dtype)
        return _same(q, a.dtype)
    with np.errstate(all="ignore"):
        return _same(np.true_divide(a, b), a.dtype)


def _register_binary(op_type: str, fn, doc: str, infer=_infer_broadcast, **traits) -> None:
    def kernel(attrs, a, b):
        with np.errstate(all="ignore"):
            return _same(fn(a, b), a.dtype)

    kernel.__name__ = op_type.lower()
    kernel.__doc__ = doc
    register_op(op_type, infer=infer, elementwise="broadcast", **traits)(kernel)


_register_binary("Add", np.add, "a + b (numpy broadcasting)", integer_counterpart="q.Add")
_register_binary("Sub", np.subtract, "a - b (numpy broadcasting)")
_register_binary("Mul", np.multiply, "a * b (numpy broadcasting)")


def _infer_div(node: Node):
    """Broadcasting, and a constant integer divisor with a zero refused here (at import
    and compile time): the interpreter and the built code would refuse every run."""
    out = _infer_broadcast(node)
    divisor = node.inputs[1]
    if (divisor is not None and divisor.const is not None and divisor.const.dtype.kind in "iu"
            and np.any(divisor.const == 0)):
        raise invalid(node, f"integer division by zero: the divisor '{divisor.name}' is a "
                      "constant with a zero element (onnxruntime refuses it at run time)")
    return out


_register_binary("Div", div_values, "a / b; integer division truncates toward zero",
                 infer=_infer_div)


def _infer_pow(node: Node):
    x = input_shape(node, 0)
    y = input_shape(node, 1)
    return [(broadcast_shapes(x, y, node=node), input_dtype(node, 0))]


def pow_values(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ONNX Pow: result has the base's dtype; any exponent dtype."""
    with np.errstate(all="ignore"):
        if x.dtype.kind == "f":
            return _same(np.power(x, y.astype(x.dtype, copy=False)), x.dtype)
        if y.dtype.kind in "iu" and not np.any(y < 0):
            return _same(np.power(x, y.astype(x.dtype, copy=False)), x.dtype)
        return _same(np.power(x.astype(np.float64), y.astype(np.float64)), x.dtype)


@register_op("Pow", infer=_infer_pow, elementwise="broadcast")
def pow_(attrs, x, y):
    """x ** y (broadcasting); output dtype is x's."""
    return pow_values(x, y)


def _register_variadic(op_type: str, fn, doc: str) -> None:
    def kernel(attrs, *inputs):
        arrays = [a for a in inputs if a is not None]
        with np.errstate(all="ignore"):
            if len(arrays) == 1:
                return np.array(arrays[0], copy=True)
            return _same(reduce(fn, arrays), arrays[0].dtype)

    kernel.__name__ = op_type.lower()
    kernel.__doc__ = doc
    register_op(op_type, infer=_infer_broadcast, elementwise="broadcast")(kernel)


_register_variadic("Min", np.minimum, "elementwise minimum of all inputs (broadcasting)")
_register_variadic("Max", np.maximum, "elementwise maximum of all inputs (broadcasting)")
_register_variadic("Sum", np.add, "elementwise sum of all inputs (broadcasting)")


def _infer_mean(node: Node):
    result = _infer_broadcast(node)
    if result[0][1].kind != "f":
        raise invalid(node, f"input dtype {result[0][1]} is not supported (Mean takes floats)")
    return result


@register_op("Mean", infer=_infer_mean, elementwise="broadcast")
def mean(attrs, *inputs):
    """Elementwise mean of all inputs (broadcasting): their sum divided by their count."""
    arrays = [a for a in inputs if a is not None]
    dtype = arrays[0].dtype
    if len(arrays) == 1:
        return np.array(arrays[0], copy=True)
    ct = compute_dtype(dtype)
    with np.errstate(all="ignore"):
        total = reduce(np.add, [a.astype(ct, copy=False) for a in arrays])
        return _same(total / ct.type(len(arrays)), dtype)
