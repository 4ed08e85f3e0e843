"""TVM lowerings of the ops of `compiler/ops/shape_ops.py` that run at run time
(Cast, CastLike, Gather, Expand, Tile, Where, Not); its shape-only ops (Shape,
ConstantOfShape, Range) must be constant-folded before lowering (see `core`).
"""
from __future__ import annotations

import numpy as np
from tvm.relax import op as R

from .core import (LoweringError, _attr, _const_operand, _dtype_str, _ints, _norm_axis, _out_shape,
                   _shape, _shape_of, register_lowering)

__all__: list[str] = []


@register_lowering("Where")
def _lower_where(ctx, node, args):
    return R.where(args[0], args[1], args[2])


@register_lowering("Expand")
def _lower_expand(ctx, node, args):
    shape = _out_shape(node)
    if _shape_of(args[0]) == tuple(shape):
        return args[0]
    return R.broadcast_to(args[0], shape)


@register_lowering("Tile")
def _lower_tile(ctx, node, args):
    # x[a, b] tiled (r, s) == broadcast of x as [1, a, 1, b] to [r, a, s, b], reshaped.
    # (R.tile itself is miscompiled for AVX-512 targets in TVM 0.27 for some shapes.)
    repeats = _ints(_const_operand(node, 1, "repeats"))
    shape = _shape(node, node.inputs[0])
    if len(repeats) != len(shape):
        raise LoweringError(f"node '{node.name}' (Tile): {len(repeats)} repeats for rank "
                            f"{len(shape)}")
    if all(r == 1 for r in repeats):
        return args[0]
    inter = [v for d, r in zip(shape, repeats) for v in ((1, d) if r != 1 else (d,))]
    target = [v for d, r in zip(shape, repeats) for v in ((r, d) if r != 1 else (d,))]
    x = ctx.emit(R.reshape(args[0], inter))
    x = ctx.emit(R.broadcast_to(x, target))
    return R.reshape(x, [d * r for d, r in zip(shape, repeats)])


@register_lowering("Gather")
def _lower_gather(ctx, node, args):
    data_shape = _shape(node, node.inputs[0])
    axis = _norm_axis(int(_attr(node, "axis", 0)), len(data_shape), node)
    dim = data_shape[axis]
    iv = node.inputs[1]
    if iv.const is not None:
        idx = np.asarray(iv.const).astype(np.int64)
        if idx.size and (idx.min() < -dim or idx.max() >= dim):
            raise LoweringError(f"node '{node.name}' (Gather): index out of range for axis "
                                f"of size {dim}")
        idx = np.where(idx < 0, idx + dim, idx)
        if idx.ndim == 1 and idx.size == dim and np.array_equal(idx, np.arange(dim)):
            return args[0]
        if idx.ndim == 1 and idx.size > 0 and np.all(np.diff(idx) == 1):
            return R.strided_slice(args[0], [axis], [int(idx[0])], [int(idx[-1]) + 1],
                                   assume_inbound=True)
        if idx.ndim == 0:  # R.take mis-infers 0-d indices: slice + reshape instead
            y = ctx.emit(R.strided_slice(args[0], [axis], [int(idx)], [int(idx) + 1],
                                         assume_inbound=True))
            return R.reshape(y, _out_shape(node))
        indices = ctx.weight(idx, iv.name, key=("gather", id(iv)))
    else:
        itype = iv.dtype
        zero = ctx.scalar(0, itype)
        wrapped = ctx.emit(R.add(args[1], ctx.scalar(dim, itype)))
        indices = ctx.emit(R.where(ctx.emit(R.less(args[1], zero)), wrapped, args[1]))
        # run-time indices: "clip" so that a bad index cannot read outside the tensor
        if len(_shape(node, iv)) == 0:
            indices = ctx.emit(R.reshape(indices, (1,)))
            return R.reshape(ctx.emit(R.take(args[0], indices, axis=axis, mode="clip")),
                             _out_shape(node))
        return R.take(args[0], indices, axis=axis, mode="clip")
    return R.take(args[0], indices, axis=axis)


@register_lowering("Cast")
def _lower_cast(ctx, node, args):
    dtype = node.output.dtype
    if dtype is None:
        raise LoweringError(f"node '{node.name}' (Cast): output dtype unknown")
    src = node.inputs[0].dtype
    if dtype == src:
        return args[0]
    if dtype == np.bool_:
        return R.not_equal(args[0], ctx.scalar(0, src))
    return R.astype(args[0], _dtype_str(dtype))


@register_lowering("CastLike")
def _lower_cast_like(ctx, node, args):
    return _lower_cast(ctx, node, args[:1])


@register_lowering("Not")
def _lower_not(ctx, node, args):
    return R.logical_not(args[0])
