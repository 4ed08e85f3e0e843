"""Ops of exporters' shape arithmetic: Shape, ConstantOfShape, Range, Cast, CastLike,
Gather, Expand, Tile, Where, the comparisons and the logical ops (ONNX opset-17
semantics).

Shape, ConstantOfShape and Range are ``shape_only``: they must fold to constants before
a graph is lowered to a backend.  The comparisons and logical ops are ordinary ops.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..ir import Node
from .conv_util import input_dtype, input_shape, invalid, normalize_axis, unsupported
from .registry import broadcast_shapes, const_input, register_op

__all__ = ["onnx_to_np_dtype", "SUPPORTED_DTYPES"]

#: dtypes the numpy kernels support (others, e.g. bfloat16/float8/int4/string, are not)
SUPPORTED_DTYPES = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
    np.uint64, np.float16, np.float32, np.float64))


def onnx_to_np_dtype(to: int, node: Node | None = None) -> np.dtype:
    """numpy dtype of an ONNX TensorProto data type; Unsupported if numpy lacks it."""
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(to)))
    except Exception:  # noqa: BLE001 - unknown enum value
        dtype = None
    if dtype is None or dtype not in SUPPORTED_DTYPES:
        name = onnx.TensorProto.DataType.Name(int(to)) \
            if int(to) in onnx.TensorProto.DataType.values() else str(to)
        raise unsupported(node, "to", f"{to} ({name})",
                          "only bool, (u)int8-64 and float16/32/64 are supported")
    return dtype


def _ints(array) -> list[int]:
    return [int(v) for v in np.asarray(array).reshape(-1)]


# -- Shape / ConstantOfShape / Range -------------------------------------------------------

def _shape_bounds(rank: int, attrs) -> tuple[int, int]:
    start = int(attrs.get("start", 0))
    end = attrs.get("end")
    end = rank if end is None else int(end)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return start, end


def _infer_shape(node: Node):
    x = input_shape(node, 0)
    start, end = _shape_bounds(len(x), node.attrs)
    return [((max(0, end - start),), np.dtype(np.int64))]


@register_op("Shape", infer=_infer_shape, shape_only=True)
def shape(attrs, x):
    """The input's shape as int64 (optionally sliced by start/end)."""
    start, end = _shape_bounds(x.ndim, attrs)
    return np.array(x.shape[start:end], dtype=np.int64)


def _cos_value(attrs) -> np.ndarray:
    value = attrs.get("value")
    if value is None:
        return np.zeros((), dtype=np.float32)
    value = np.asarray(value)
    if value.size != 1:
        raise invalid(None, f"ConstantOfShape value must have one element, has {value.size}")
    return value.reshape(())


def _infer_constant_of_shape(node: Node):
    dims = const_input(node, 0, "shape")
    if dims is None:
        raise invalid(node, "the shape input is required")
    dims = _ints(dims)
    if any(d < 0 for d in dims):
        raise invalid(node, f"negative dims in {dims}")
    value = _cos_value(node.attrs)
    if value.dtype not in SUPPORTED_DTYPES:
        raise unsupported(node, "value dtype", str(value.dtype))
    return [(tuple(dims), value.dtype)]


@register_op("ConstantOfShape", infer=_infer_constant_of_shape, shape_only=True)
def constant_of_shape(attrs, dims):
    """A tensor of shape ``input`` filled with ``value`` (default float32 0)."""
    value = _cos_value(attrs)
    return np.full(tuple(_ints(dims)), value, dtype=value.dtype)


def _range_count(start, limit, delta) -> int:
    start, limit, delta = (np.asarray(v).reshape(()).item() for v in (start, limit, delta))
    if delta == 0:
        raise invalid(None, "Range delta cannot be 0")
    return max(int(np.ceil((limit - start) / delta)), 0)


def _infer_range(node: Node):
    values = [const_input(node, i, what) for i, what in enumerate(("start", "limit", "delta"))]
    if any(v is None for v in values):
        raise invalid(node, "start, limit and delta are required")
    dtype = input_dtype(node, 0)
    if any(np.asarray(v).size != 1 for v in values):
        raise invalid(node, "start, limit and delta must be scalars")
    return [((_range_count(*values),), dtype)]


@register_op("Range", infer=_infer_range, shape_only=True)
def range_(attrs, start, limit, delta):
    """``start + i * delta`` for ``i < max(ceil((limit - start) / delta), 0)``."""
    n = _range_count(start, limit, delta)
    dtype = np.asarray(start).dtype
    s = np.asarray(start).reshape(()).astype(dtype)
    d = np.asarray(delta).reshape(()).astype(dtype)
    return (s + np.arange(n).astype(dtype) * d).astype(dtype)


# -- Cast ----------------------------------------------------------------------------------

def _infer_cast(node: Node):
    if "to" not in node.attrs:
        raise invalid(node, "attribute 'to' is required")
    src = input_dtype(node, 0)
    if src not in SUPPORTED_DTYPES:
        raise unsupported(node, "input dtype", str(src))
    return [(input_shape(node, 0), onnx_to_np_dtype(node.attrs["to"], node))]


@register_op("Cast", infer=_infer_cast, layout_preserving=True)
def cast(attrs, x):
    """Convert to the TensorProto dtype ``to`` (float -> int truncates toward zero)."""
    dtype = onnx_to_np_dtype(attrs["to"])
    with np.errstate(all="ignore"):
        return np.array(x, dtype=dtype, copy=True)


def _infer_cast_like(node: Node):
    src = input_dtype(node, 0)
    target = input_dtype(node, 1)
    input_shape(node, 1, "(target_type)")
    for what, dtype in (("input dtype", src), ("target_type dtype", target)):
        if dtype not in SUPPORTED_DTYPES:
            raise unsupported(node, what, str(dtype),
                              "only bool, (u)int8-64 and float16/32/64 are supported")
    return [(input_shape(node, 0), target)]


@register_op("CastLike", infer=_infer_cast_like)
def cast_like(attrs, x, target_type):
    """Cast ``input`` to the dtype of ``target_type`` (whose values are not read)."""
    with np.errstate(all="ignore"):
        return np.array(x, dtype=target_type.dtype, copy=True)


# -- Gather / Expand / Tile / Where -------------------------------------------------------

def _infer_gather(node: Node):
    data = input_shape(node, 0)
    idx = input_shape(node, 1, "(indices)")
    if input_dtype(node, 1).kind not in "iu":
        raise invalid(node, "indices must be an integer tensor")
    if not data:
        raise invalid(node, "data must have rank >= 1")
    axis = normalize_axis(node.attrs.get("axis", 0), len(data), node)
    return [((*data[:axis], *idx, *data[axis + 1:]), input_dtype(node, 0))]


@register_op("Gather", infer=_infer_gather)
def gather(attrs, data, indices):
    """``take`` along ``axis``; negative indices count from the end."""
    axis = normalize_axis(attrs.get("axis", 0), data.ndim)
    dim = data.shape[axis]
    idx = np.asarray(indices).astype(np.int64)
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise invalid(None, f"Gather index out of range for axis of size {dim}")
    idx = np.where(idx < 0, idx + dim, idx)
    return np.take(data, idx, axis=axis)


def _infer_expand(node: Node):
    x = input_shape(node, 0)
    target = const_input(node, 1, "shape")
    if target is None:
        raise invalid(node, "the shape input is required")
    return [(broadcast_shapes(x, _ints(target), node=node), input_dtype(node, 0))]


@register_op("Expand", infer=_infer_expand)
def expand(attrs, x, shape_):
    """Bidirectional broadcast of ``x`` with ``shape``."""
    out = np.broadcast_shapes(x.shape, tuple(_ints(shape_)))
    return np.array(np.broadcast_to(x, out), copy=True)


def _infer_tile(node: Node):
    x = input_shape(node, 0)
    repeats = const_input(node, 1, "repeats")
    if repeats is None:
        raise invalid(node, "the repeats input is required")
    repeats = _ints(repeats)
    if len(repeats) != len(x) or any(r < 0 for r in repeats):
        raise invalid(node, f"repeats {repeats} do not match rank {len(x)}")
    return [(tuple(d * r for d, r in zip(x, repeats)), input_dtype(node, 0))]


@register_op("Tile", infer=_infer_tile)
def tile(attrs, x, repeats):
    """Repeat ``x`` ``repeats[i]`` times along each axis."""
    return np.tile(x, _ints(repeats)) if x.ndim else np.array(x, copy=True)


def _infer_where(node: Node):
    c = input_shape(node, 0, "(condition)")
    x = input_shape(node, 1, "(X)")
    y = input_shape(node, 2, "(Y)")
    if input_dtype(node, 0) != np.bool_:
        raise invalid(node, "condition must be bool")
    return [(broadcast_shapes(c, x, y, node=node), input_dtype(node, 1))]


@register_op("Where", infer=_infer_where)
def where(attrs, cond, x, y):
    """``x`` where ``condition`` else ``y`` (broadcasting)."""
    return np.asarray(np.where(cond, x, y)).astype(x.dtype, copy=False)


# -- comparisons / logic -------------------------------------------------------------------

def _infer_compare(node: Node):
    a = input_shape(node, 0)
    b = input_shape(node, 1)
    if input_dtype(node, 0) != input_dtype(node, 1):
        raise invalid(node, f"inputs have different dtypes {input_dtype(node, 0)} and "
                      f"{input_dtype(node, 1)}")
    return [(broadcast_shapes(a, b, node=node), np.dtype(np.bool_))]


def _infer_logical(node: Node):
    for i in (0, 1):
        if input_dtype(node, i) != np.bool_:
            raise invalid(node, f"{node.op_type} takes bool tensors, input {i} is "
                          f"{input_dtype(node, i)}")
    return _infer_compare(node)


def _register_compare(op_type: str, fn, doc: str, infer=_infer_compare) -> None:
    def kernel(attrs, a, b):
        return np.asarray(fn(a, b), dtype=np.bool_)

    kernel.__name__ = op_type.lower()
    kernel.__doc__ = doc
    register_op(op_type, infer=infer)(kernel)


_register_compare("Equal", np.equal, "a == b (broadcasting) -> bool")
_register_compare("Less", np.less, "a < b (broadcasting) -> bool")
_register_compare("Greater", np.greater, "a > b (broadcasting) -> bool")
_register_compare("LessOrEqual", np.less_equal, "a <= b (broadcasting) -> bool")
_register_compare("GreaterOrEqual", np.greater_equal, "a >= b (broadcasting) -> bool")
_register_compare("And", np.logical_and, "logical a and b (bool, broadcasting)", _infer_logical)
_register_compare("Or", np.logical_or, "logical a or b (bool, broadcasting)", _infer_logical)
_register_compare("Xor", np.logical_xor, "logical a xor b (bool, broadcasting)",
                  _infer_logical)


def _infer_not(node: Node):
    if input_dtype(node, 0) != np.bool_:
        raise invalid(node, "Not takes a bool tensor")
    return [(input_shape(node, 0), np.dtype(np.bool_))]


@register_op("Not", infer=_infer_not)
def not_(attrs, x):
    """Logical not."""
    return np.logical_not(x)
