"""Layout and data-movement ops: Concat, Split, Slice, Flatten, Reshape, Transpose,
Squeeze, Unsqueeze, Pad, Identity, Dropout (ONNX opset-17 semantics)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..ir import Node
from .conv_util import (has_input, input_dtype, input_shape, invalid, normalize_axis, prod,
                        unsupported)
from .registry import UnsupportedOpError, const_input, register_op

__all__ = ["reshape_shape", "slice_params", "split_sizes"]


def _ints(array) -> list[int]:
    return [int(v) for v in np.asarray(array).reshape(-1)]


# -- Identity / Dropout -------------------------------------------------------------------

def _infer_identity(node: Node):
    return [(input_shape(node, 0), input_dtype(node, 0))]


@register_op("Identity", infer=_infer_identity, identity_at_inference=True,
             layout_preserving=True, int8_passthrough=True)
def identity(attrs, x):
    """Copy of the input."""
    return np.array(x, copy=True)


def _infer_dropout(node: Node):
    if len(node.outputs) > 1:
        raise unsupported(node, "outputs", len(node.outputs),
                          "the Dropout mask output is not implemented")
    if has_input(node, 2):
        mode = node.inputs[2].const
        if mode is None:
            raise unsupported(node, "training_mode", node.inputs[2].name,
                              "training_mode must be a constant false")
        if bool(np.asarray(mode).reshape(-1)[0]):
            raise unsupported(node, "training_mode", True, "only inference is implemented")
    return [(input_shape(node, 0), input_dtype(node, 0))]


@register_op("Dropout", infer=_infer_dropout, identity_at_inference=True,
             layout_preserving=True, int8_passthrough=True)
def dropout(attrs, x, ratio=None, training_mode=None):
    """Inference Dropout: the identity."""
    if training_mode is not None and bool(np.asarray(training_mode).reshape(-1)[0]):
        raise UnsupportedOpError("Dropout with training_mode=True is not supported")
    return np.array(x, copy=True)


# -- Concat / Split -----------------------------------------------------------------------------

def _infer_concat(node: Node):
    if not node.inputs:
        raise invalid(node, "needs at least one input")
    shapes = [input_shape(node, i) for i in range(len(node.inputs))]
    rank = len(shapes[0])
    axis = normalize_axis(node.attrs.get("axis", 0), rank, node)
    dtype = input_dtype(node, 0)
    total = 0
    for i, s in enumerate(shapes):
        if len(s) != rank or any(a != b for j, (a, b) in enumerate(zip(s, shapes[0]))
                                 if j != axis):
            raise invalid(node, f"input shapes {shapes} do not agree off axis {axis}")
        if input_dtype(node, i) != dtype:
            raise invalid(node, "inputs have different dtypes")
        total += s[axis]
    out = list(shapes[0])
    out[axis] = total
    return [(tuple(out), dtype)]


@register_op("Concat", infer=_infer_concat, integer_counterpart="q.Concat")
def concat(attrs, *inputs):
    """Concatenation along ``axis``."""
    axis = normalize_axis(attrs.get("axis", 0), inputs[0].ndim)
    return np.concatenate(inputs, axis=axis)


def split_sizes(dim: int, split: Sequence[int] | None, num_outputs: int | None,
                node: Node | None = None, *, uneven: bool = False) -> list[int]:
    """Sizes of the Split pieces: ``split`` if given, else ``num_outputs`` equal parts.

    With ``uneven`` (an explicit ``num_outputs`` attribute, the opset-18 form) a length
    that does not divide evenly gives ``ceil(dim / n)``-sized pieces and a smaller last
    one; otherwise it is an error, as in opset 13-17."""
    if split is not None and len(split):
        sizes = [int(v) for v in split]
        if sum(sizes) != dim or any(v < 0 for v in sizes):
            raise invalid(node, f"split {sizes} does not sum to the axis length {dim}")
        if num_outputs is not None and len(sizes) != num_outputs:
            raise invalid(node, f"split {sizes} has {len(sizes)} parts for "
                          f"{num_outputs} outputs")
        return sizes
    if not num_outputs:
        raise invalid(node, "Split without a split input needs the number of outputs "
                      "(attrs['num_outputs'] for the kernel)")
    if dim % num_outputs:
        if not uneven:
            raise invalid(node, f"axis length {dim} does not split into {num_outputs} "
                          "equal parts")
        chunk = -(-dim // num_outputs)
        sizes = [min(chunk, max(0, dim - i * chunk)) for i in range(num_outputs)]
        if sizes[-1] == 0:
            raise invalid(node, f"axis length {dim} cannot be split into {num_outputs} "
                          "non-empty parts")
        return sizes
    return [dim // num_outputs] * num_outputs


def _infer_split(node: Node):
    x = input_shape(node, 0)
    axis = normalize_axis(node.attrs.get("axis", 0), len(x), node)
    split = const_input(node, 1, "split")
    n_out = len(node.outputs)
    explicit = node.attrs.get("num_outputs")
    if explicit is not None and int(explicit) != n_out:
        raise invalid(node, f"num_outputs={explicit} but the node has {n_out} outputs")
    sizes = split_sizes(x[axis], None if split is None else _ints(split), n_out, node,
                        uneven=explicit is not None)
    dtype = input_dtype(node, 0)
    return [(tuple(s if i == axis else d for i, d in enumerate(x)), dtype) for s in sizes]


@register_op("Split", infer=_infer_split, int8_passthrough=True)
def split(attrs, x, split_=None):
    """Split along ``axis`` by the ``split`` input, else into ``attrs['num_outputs']``
    parts.  The kernel cannot see the node's output count, so without a split input
    the caller must put it in ``num_outputs`` (the opset-18 attribute; with it, an
    uneven length gives ceil-sized pieces and a smaller last one, as in opset 18)."""
    axis = normalize_axis(attrs.get("axis", 0), x.ndim)
    num = attrs.get("num_outputs")
    sizes = split_sizes(x.shape[axis], None if split_ is None else _ints(split_),
                        None if num is None else int(num), uneven=num is not None)
    bounds = np.cumsum(sizes)[:-1]
    return tuple(p.copy() for p in np.split(x, bounds, axis=axis))


# -- Slice ----------------------------------------------------------------------------------------

def slice_params(shape: Sequence[int], starts, ends, axes=None, steps=None,
                 node: Node | None = None) -> list[tuple[int, int, int, int]]:
    """Per-axis ``(axis, start, stop, step)`` with ONNX clamping, plus output lengths.

    Returns a list of ``(axis, start, step, length)``."""
    rank = len(shape)
    starts = _ints(starts)
    ends = _ints(ends)
    axes = list(range(len(starts))) if axes is None else _ints(axes)
    steps = [1] * len(starts) if steps is None else _ints(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise invalid(node, "starts, ends, axes and steps must have the same length")
    axes = [normalize_axis(a, rank, node, "axes") for a in axes]
    if len(set(axes)) != len(axes):
        raise invalid(node, f"repeated axes {axes}")
    result = []
    for axis, start, end, step in zip(axes, starts, ends, steps):
        dim = int(shape[axis])
        if step == 0:
            raise invalid(node, "slice step cannot be 0")
        if start < 0:
            start += dim
        if end < 0:
            end += dim
        if step > 0:
            start = min(max(start, 0), dim)
            end = min(max(end, 0), dim)
            length = max(0, -(-(end - start) // step))
        else:
            start = min(max(start, 0), dim - 1)
            end = min(max(end, -1), dim - 1)
            length = max(0, -(-(start - end) // -step))
        result.append((axis, start, step, length))
    return result


def _infer_slice(node: Node):
    x = input_shape(node, 0)
    starts = const_input(node, 1, "starts")
    ends = const_input(node, 2, "ends")
    if starts is None or ends is None:
        raise invalid(node, "starts and ends are required")
    params = slice_params(x, starts, ends, const_input(node, 3, "axes"),
                          const_input(node, 4, "steps"), node)
    out = list(x)
    for axis, _, _, length in params:
        out[axis] = length
    return [(tuple(out), input_dtype(node, 0))]


@register_op("Slice", infer=_infer_slice, int8_passthrough=True)
def slice_(attrs, x, starts, ends, axes=None, steps=None):
    """Opset-13 Slice (negative / clamped bounds, negative steps, optional axes)."""
    index: list[Any] = [slice(None)] * x.ndim
    for axis, start, step, length in slice_params(x.shape, starts, ends, axes, steps):
        if length == 0:
            index[axis] = slice(0, 0)
        else:
            stop = start + (length - 1) * step + (1 if step > 0 else -1)
            index[axis] = slice(start, stop if stop >= 0 else None, step)
    return x[tuple(index)].copy()


# -- Flatten / Reshape / Transpose / Squeeze / Unsqueeze ---------------------------------

def _infer_flatten(node: Node):
    x = input_shape(node, 0)
    axis = int(node.attrs.get("axis", 1))
    if not -len(x) <= axis <= len(x):
        raise invalid(node, f"axis {axis} out of range for rank {len(x)}")
    axis = axis + len(x) if axis < 0 else axis
    return [((prod(x[:axis]), prod(x[axis:])), input_dtype(node, 0))]


@register_op("Flatten", infer=_infer_flatten, int8_passthrough=True)
def flatten(attrs, x):
    """2-D reshape: dims before ``axis`` and from ``axis`` on."""
    axis = int(attrs.get("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    return np.array(x.reshape(prod(x.shape[:axis]), prod(x.shape[axis:])), copy=True)


def reshape_shape(in_shape: Sequence[int], target, allowzero: int = 0,
                  node: Node | None = None) -> tuple[int, ...]:
    """Resolve a Reshape target: 0 copies the input dim (unless allowzero), -1 infers."""
    target = _ints(target)
    out = []
    infer_at = None
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                raise invalid(node, f"shape {target}: 0 at {i} has no input dim to copy")
            out.append(int(in_shape[i]))
        elif d == -1:
            if infer_at is not None:
                raise invalid(node, f"shape {target} has more than one -1")
            infer_at = i
            out.append(1)
        elif d < 0:
            raise invalid(node, f"shape {target} has a negative dim")
        else:
            out.append(d)
    total = prod(in_shape)
    if infer_at is not None:
        rest = prod(out)
        if rest == 0 or total % rest:
            raise invalid(node, f"cannot reshape {tuple(in_shape)} to {target}")
        out[infer_at] = total // rest
    if prod(out) != total:
        raise invalid(node, f"cannot reshape {tuple(in_shape)} ({total} elements) to "
                      f"{tuple(out)}")
    return tuple(out)


def _infer_reshape(node: Node):
    x = input_shape(node, 0)
    target = const_input(node, 1, "shape")
    if target is None:
        raise invalid(node, "shape input is required")
    return [(reshape_shape(x, target, int(node.attrs.get("allowzero", 0)), node),
             input_dtype(node, 0))]


@register_op("Reshape", infer=_infer_reshape, int8_passthrough=True)
def reshape(attrs, x, shape):
    """Reshape with ONNX 0 / -1 / allowzero rules."""
    return np.array(x.reshape(reshape_shape(x.shape, shape, int(attrs.get("allowzero", 0)))),
                    copy=True)


def _perm(attrs, rank: int, node: Node | None = None) -> list[int]:
    perm = attrs.get("perm")
    if perm is None or len(perm) == 0 and rank != 0:
        return list(range(rank))[::-1]
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(rank)):
        raise invalid(node, f"perm {perm} is not a permutation of rank {rank}")
    return perm


def _infer_transpose(node: Node):
    x = input_shape(node, 0)
    perm = _perm(node.attrs, len(x), node)
    return [(tuple(x[p] for p in perm), input_dtype(node, 0))]


@register_op("Transpose", infer=_infer_transpose, int8_passthrough=True)
def transpose(attrs, x):
    """Permute axes by ``perm`` (default: reverse)."""
    return np.transpose(x, _perm(attrs, x.ndim)).copy()


def _squeeze_shape(shape, axes, node: Node | None = None):
    if axes is None or np.asarray(axes).size == 0:
        return tuple(d for d in shape if d != 1)
    axes = {normalize_axis(a, len(shape), node, "axes") for a in _ints(axes)}
    for a in axes:
        if shape[a] != 1:
            raise invalid(node, f"cannot squeeze axis {a} of size {shape[a]}")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _infer_squeeze(node: Node):
    x = input_shape(node, 0)
    return [(_squeeze_shape(x, const_input(node, 1, "axes"), node), input_dtype(node, 0))]


@register_op("Squeeze", infer=_infer_squeeze, int8_passthrough=True)
def squeeze(attrs, x, axes=None):
    """Remove size-1 axes (the ``axes`` input, or all of them)."""
    return np.array(x.reshape(_squeeze_shape(x.shape, axes)), copy=True)


def _unsqueeze_shape(shape, axes, node: Node | None = None):
    if axes is None:
        raise invalid(node, "Unsqueeze needs the axes input")
    rank = len(shape) + np.asarray(axes).size
    norm = [normalize_axis(a, rank, node, "axes") for a in _ints(axes)]
    if len(set(norm)) != len(norm):
        raise invalid(node, f"repeated axes {norm}")
    dims = iter(shape)
    return tuple(1 if i in norm else next(dims) for i in range(rank))


def _infer_unsqueeze(node: Node):
    x = input_shape(node, 0)
    return [(_unsqueeze_shape(x, const_input(node, 1, "axes"), node), input_dtype(node, 0))]


@register_op("Unsqueeze", infer=_infer_unsqueeze, int8_passthrough=True)
def unsqueeze(attrs, x, axes):
    """Insert size-1 axes at the (output-rank) positions of the ``axes`` input."""
    return np.array(x.reshape(_unsqueeze_shape(x.shape, axes)), copy=True)


# -- Pad ----------------------------------------------------------------------------------------

_PAD_MODES = ("constant", "reflect", "edge")


def _pad_widths(rank: int, pads, node: Node | None = None) -> list[tuple[int, int]]:
    pads = _ints(pads)
    if len(pads) != 2 * rank:
        raise invalid(node, f"pads {pads} must have 2 * rank = {2 * rank} entries")
    return [(pads[i], pads[rank + i]) for i in range(rank)]


def _infer_pad(node: Node):
    mode = node.attrs.get("mode", "constant")
    if mode not in _PAD_MODES:
        raise unsupported(node, "mode", mode)
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        raise unsupported(node, "axes input", node.inputs[3].name, "opset-18 Pad form")
    x = input_shape(node, 0)
    pads = const_input(node, 1, "pads")
    if pads is None:
        raise invalid(node, "pads input is required")
    widths = _pad_widths(len(x), pads, node)
    out = tuple(d + a + b for d, (a, b) in zip(x, widths))
    if any(d < 0 for d in out):
        raise invalid(node, f"pads {_ints(pads)} crop {x} below zero")
    if mode != "constant":
        for d, (a, b) in zip(x, widths):
            if (a > 0 or b > 0) and d == 0:
                raise invalid(node, f"{mode} padding of an empty axis")
    return [(out, input_dtype(node, 0))]


@register_op("Pad", infer=_infer_pad)
def pad(attrs, x, pads, constant_value=None, axes=None):
    """Opset-13 Pad: constant / reflect / edge; negative pads crop."""
    mode = attrs.get("mode", "constant")
    if mode not in _PAD_MODES:
        raise UnsupportedOpError(f"Pad mode={mode!r} is not supported")
    if axes is not None:
        raise UnsupportedOpError("Pad with an axes input (opset 18) is not supported")
    widths = _pad_widths(x.ndim, pads)
    crop = tuple(slice(max(0, -a), x.shape[i] - max(0, -b)) for i, (a, b) in enumerate(widths))
    x = x[crop]
    grow = [(max(0, a), max(0, b)) for a, b in widths]
    if mode == "constant":
        value = 0 if constant_value is None or np.asarray(constant_value).size == 0 \
            else np.asarray(constant_value).reshape(-1)[0]
        return np.pad(x, grow, mode="constant", constant_values=np.asarray(value, x.dtype))
    if mode == "reflect":
        for i, (a, b) in enumerate(grow):
            if (a or b) and x.shape[i] < 2:
                # numpy and ONNX agree only for length >= 2; length 1 repeats the edge
                grow_i = [(0, 0)] * x.ndim
                grow_i[i] = (a, b)
                x = np.pad(x, grow_i, mode="edge")
                grow[i] = (0, 0)
        return np.pad(x, grow, mode="reflect")
    return np.pad(x, grow, mode="edge")
