"""TVM lowerings of the data-movement ops of `compiler/ops/tensor.py`: Identity, Dropout,
Reshape/Flatten/Squeeze/Unsqueeze, Transpose, Concat, Split, Slice and Pad.
"""
from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax import op as R

from .core import (LoweringError, _attr, _const_operand, _dtype_str, _in, _ints, _norm_axis,
                   _out_shape, _shape, _shape_of, _unsupported, register_lowering)

__all__: list[str] = []


# ----------------------------------------------------------------------------------
# shape manipulation
# ----------------------------------------------------------------------------------

@register_lowering("Identity")
def _lower_identity(ctx, node, args):
    return args[0]


@register_lowering("Dropout")
def _lower_dropout(ctx, node, args):
    training = _in(node, 2)
    if training is not None:
        if training.const is None:
            raise _unsupported(node, "a run-time training_mode input")
        if bool(np.asarray(training.const).reshape(())):
            raise _unsupported(node, "training_mode=True")
    outs: list = [args[0]]
    if len(node.outputs) > 1:
        outs.append(R.ones(_out_shape(node, 1), "bool"))
    return outs


def _reshape_to_output(ctx, node, args):
    shape = _out_shape(node)
    if _shape_of(args[0]) == tuple(shape):
        return args[0]
    return R.reshape(args[0], shape)


for _op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
    register_lowering(_op)(_reshape_to_output)


@register_lowering("Transpose")
def _lower_transpose(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    perm = _ints(_attr(node, "perm")) or list(range(rank - 1, -1, -1))
    return R.permute_dims(args[0], perm)


@register_lowering("Concat")
def _lower_concat(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    axis = _norm_axis(int(_attr(node, "axis")), rank, node)
    parts = [a for a, v in zip(args, node.inputs) if a is not None and 0 not in _shape(node, v)]
    if not parts:
        return R.zeros(_out_shape(node), _dtype_str(node.output.dtype))
    if len(parts) == 1:
        return parts[0]
    return R.concat(parts, axis=axis)


@register_lowering("Split")
def _lower_split(ctx, node, args):
    shape = _shape(node, node.inputs[0])
    axis = _norm_axis(int(_attr(node, "axis", 0)), len(shape), node)
    sizes = [_shape(node, out)[axis] for out in node.outputs]
    split = _in(node, 1)
    if split is not None:
        given = _ints(_const_operand(node, 1, "split"))
        if given != sizes:
            raise LoweringError(f"node '{node.name}' (Split): split {given} disagrees with the "
                                f"output shapes {sizes}")
    if sum(sizes) != shape[axis]:
        raise LoweringError(f"node '{node.name}' (Split): output sizes {sizes} do not add up to "
                            f"{shape[axis]}")
    if len(sizes) == 1:
        return [args[0]]
    indices = list(np.cumsum(sizes)[:-1])
    parts = ctx.emit(R.split(args[0], [int(i) for i in indices], axis=axis))
    return [relax.TupleGetItem(parts, i) for i in range(len(sizes))]


@register_lowering("Slice")
def _lower_slice(ctx, node, args):
    shape = _shape(node, node.inputs[0])
    rank = len(shape)
    starts = _ints(_const_operand(node, 1, "starts"))
    ends = _ints(_const_operand(node, 2, "ends"))
    axes = _ints(_const_operand(node, 3, "axes")) if _in(node, 3) is not None \
        else list(range(len(starts)))
    steps = _ints(_const_operand(node, 4, "steps")) if _in(node, 4) is not None \
        else [1] * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)):
        raise LoweringError(f"node '{node.name}' (Slice): starts/ends/axes/steps lengths differ")
    x = args[0]
    fwd_axes, fwd_begin, fwd_end, fwd_step = [], [], [], []
    flip_axes = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _norm_axis(axis, rank, node)
        dim = shape[axis]
        if step == 0:
            raise LoweringError(f"node '{node.name}' (Slice): step 0")
        # ONNX clamping (opset 17)
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start = min(max(start, 0), dim)
            end = min(max(end, 0), dim)
        else:
            start = min(max(start, 0), dim - 1)
            end = min(max(end, -1), dim - 1)
            # x[start:end:step] (step<0) == flip(x)[dim-1-start : dim-1-end : -step]
            flip_axes.append(axis)
            start, end, step = dim - 1 - start, dim - 1 - end, -step
        end = max(end, start)
        fwd_axes.append(axis)
        fwd_begin.append(start)
        fwd_end.append(end)
        fwd_step.append(step)
    for axis in sorted(set(flip_axes)):
        x = ctx.emit(R.flip(x, axis))
    if all(b == 0 and e == shape[a] and s == 1
           for a, b, e, s in zip(fwd_axes, fwd_begin, fwd_end, fwd_step)):
        return x
    return R.strided_slice(x, fwd_axes, fwd_begin, fwd_end, fwd_step, assume_inbound=True)


# ----------------------------------------------------------------------------------
# Pad
# ----------------------------------------------------------------------------------

@register_lowering("Pad")
def _lower_pad(ctx, node, args):
    shape = _shape(node, node.inputs[0])
    rank = len(shape)
    mode = _attr(node, "mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = _ints(_const_operand(node, 1, "pads")) if _in(node, 1) is not None \
        else _ints(_attr(node, "pads"))
    if _in(node, 3) is not None:
        axes = [_norm_axis(a, rank, node) for a in _ints(_const_operand(node, 3, "axes"))]
    else:
        axes = list(range(rank))
    if len(pads) != 2 * len(axes):
        raise LoweringError(f"node '{node.name}' (Pad): {len(pads)} pads for {len(axes)} axes")
    before = [0] * rank
    after = [0] * rank
    for i, axis in enumerate(axes):
        before[axis] = pads[i]
        after[axis] = pads[len(axes) + i]
    value = 0.0
    cv = _in(node, 2)
    if cv is not None:
        value = np.asarray(_const_operand(node, 2, "constant_value")).reshape(-1)
        value = value[0].item() if value.size else 0.0
    elif "value" in node.attrs:
        value = float(node.attrs["value"])
    relax_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
    if relax_mode is None:
        raise _unsupported(node, f"mode={mode!r}")
    x = args[0]
    # negative pads crop
    if any(b < 0 for b in before) or any(a < 0 for a in after):
        crop_axes = [a for a in range(rank) if before[a] < 0 or after[a] < 0]
        begin = [max(0, -before[a]) for a in crop_axes]
        end = [shape[a] - max(0, -after[a]) for a in crop_axes]
        x = ctx.emit(R.strided_slice(x, crop_axes, begin, end, assume_inbound=True))
        before = [max(0, b) for b in before]
        after = [max(0, a) for a in after]
    if not any(before) and not any(after):
        return x
    in_shape = _shape_of(x)
    if relax_mode == "reflect":
        for a in range(rank):
            if (before[a] or after[a]) and (before[a] >= in_shape[a] or after[a] >= in_shape[a]):
                raise _unsupported(node, f"reflect pads {before[a]},{after[a]} not smaller than "
                                   f"the axis size {in_shape[a]}")
    if relax_mode == "replicate" and any((b or a) and n == 0
                                         for b, a, n in zip(before, after, in_shape)):
        raise _unsupported(node, "edge-padding an empty axis")
    width = [v for a in range(rank) for v in (before[a], after[a])]
    return R.nn.pad(x, width, relax_mode, float(value) if relax_mode == "constant" else 0.0)
