"""Built-in channel handlers, one per op family (see `dependency.ChannelHandler`).

Each handler either explains exactly how its op couples channels or blocks the node
(`dep.block_node`) with a reason; it never guesses.

The two generic families are registered from the op traits of ``compiler.ops``:
`ChannelwiseHandler` for every ``layout_preserving`` op without a handler of its own,
`BroadcastHandler` for every ``elementwise="broadcast"`` op.  The other handlers name
the registered ops whose channel rule they implement.
"""
from __future__ import annotations

import numpy as np

from compiler.ir import Node, Value
from compiler.ops.registry import ops_with

from .dependency import HANDLERS, ChannelHandler, DependencyGraph, Rewriter, register_handler


def _const(node: Node, index: int) -> np.ndarray | None:
    v = node.inputs[index] if index < len(node.inputs) else None
    return None if v is None else v.const


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


class _OneInput(ChannelHandler):
    """Base of ops with one data input: ``follow`` runs only when it carries channels."""

    def propagate(self, node: Node, dep: DependencyGraph) -> None:
        ch = dep.axis(node.inputs[0])
        if ch is not None:
            self.follow(node, dep, node.inputs[0], node.outputs[0], ch)

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- Conv family

def _propagate_conv(node: Node, dep: DependencyGraph, cin_g: int, cout_g: int) -> None:
    """Conv / ConvTranspose: every output channel is a filter; with group > 1 the input and
    output channels of each conv group are joined, so only whole groups can go."""
    x, out = node.inputs[0], node.outputs[0]
    if any(v is not None and v.const is None for v in node.inputs[1:]):
        dep.block_node(node, "weights are not constants")
        return
    if dep.axis(x) not in (None, 1):
        dep.block_node(node, f"input channels tracked on axis {dep.axis(x)}, not 1")
        return
    dep.track(out, 1)
    g = int(node.attrs.get("group", 1))
    for j in range(out.shape[1]):
        dep.add_filter(out, j, node)
    if g == 1:
        return
    if dep.axis(x) is None:
        dep.block(out, f"grouped conv '{node.name}' reads an untracked input")
        return
    for k in range(g):
        first = (out, k * cout_g)
        for j in range(k * cout_g, (k + 1) * cout_g):
            dep.union(*first, out, j)
        for i in range(k * cin_g, (k + 1) * cin_g):
            dep.union(*first, x, i)


@register_handler("Conv")
class ConvHandler(ChannelHandler):
    """Conv: output channels are filters ``W[j]``; groups > 1 join each conv group whole."""

    def propagate(self, node: Node, dep: DependencyGraph) -> None:
        shape, g = node.inputs[1].shape, int(node.attrs.get("group", 1))  # (Cout, Cin/g, k..)
        _propagate_conv(node, dep, cin_g=shape[1], cout_g=shape[0] // g)

    def apply(self, node: Node, rw: Rewriter) -> None:
        x, out = node.inputs[0], node.outputs[0]
        g = int(node.attrs.get("group", 1))
        w = node.inputs[1].const
        keep_out, keep_in = rw.keep(out), rw.keep(x)
        if g == 1:
            if keep_in is not None:
                rw.slice_const(node, 1, 1, keep_in)
        else:
            cout_g = w.shape[0] // g
            kept = w.shape[0] if keep_out is None else len(keep_out)
            if kept % cout_g:
                raise AssertionError(f"{node.name}: partial conv group removed")
            node.attrs["group"] = kept // cout_g
        if keep_out is not None:
            rw.slice_const(node, 1, 0, keep_out)
            rw.slice_const(node, 2, 0, keep_out)

    def filter_weights(self, node: Node, channel: int) -> np.ndarray:
        return node.inputs[1].const[channel]


@register_handler("ConvTranspose")
class ConvTransposeHandler(ChannelHandler):
    """ConvTranspose: ``W`` is (Cin, Cout/g, k...); output channel j is ``W[:, j]``."""

    def propagate(self, node: Node, dep: DependencyGraph) -> None:
        shape, g = node.inputs[1].shape, int(node.attrs.get("group", 1))  # (Cin, Cout/g, k..)
        if node.attrs.get("output_shape"):
            dep.block_node(node, "output_shape is fixed")
        else:
            _propagate_conv(node, dep, cin_g=shape[0] // g, cout_g=shape[1])

    def apply(self, node: Node, rw: Rewriter) -> None:
        x, out = node.inputs[0], node.outputs[0]
        g = int(node.attrs.get("group", 1))
        w = node.inputs[1].const
        keep_out, keep_in = rw.keep(out), rw.keep(x)
        if g == 1:
            rw.slice_const(node, 1, 0, keep_in)
            rw.slice_const(node, 1, 1, keep_out)
        else:
            cin_g = w.shape[0] // g
            kept = w.shape[0] if keep_in is None else len(keep_in)
            node.attrs["group"] = kept // cin_g
            rw.slice_const(node, 1, 0, keep_in)  # whole groups: the per-group dim stays
        rw.slice_const(node, 2, 0, keep_out)

    def filter_weights(self, node: Node, channel: int) -> np.ndarray:
        w = node.inputs[1].const
        g = int(node.attrs.get("group", 1))
        cout_g, cin_g = w.shape[1], w.shape[0] // g
        k, j = divmod(channel, cout_g)
        return w[k * cin_g:(k + 1) * cin_g, j]


@register_handler("Gemm")
class GemmHandler(ChannelHandler):
    """Gemm ``A @ B (+C)``: A's features (axis 1) are read by ``B``; outputs are filters."""

    def propagate(self, node: Node, dep: DependencyGraph) -> None:
        a, b, out = node.inputs[0], node.inputs[1], node.outputs[0]
        if b is None or b.const is None or (len(node.inputs) > 2 and node.inputs[2] is not None
                                             and node.inputs[2].const is None):
            dep.block_node(node, "weights are not constants")
            return
        if dep.axis(a) is not None and (node.attrs.get("transA", 0) or dep.axis(a) != 1):
            dep.block_node(node, "input features are not on axis 1 (transA)")
            return
        dep.track(out, 1)
        for j in range(out.shape[1]):
            dep.add_filter(out, j, node)

    def apply(self, node: Node, rw: Rewriter) -> None:
        a, out = node.inputs[0], node.outputs[0]
        trans_b = int(node.attrs.get("transB", 0))
        rw.slice_const(node, 1, 1 if trans_b else 0, rw.keep(a))
        keep_out = rw.keep(out)
        rw.slice_const(node, 1, 0 if trans_b else 1, keep_out)
        c = _const(node, 2)
        if keep_out is not None and c is not None and c.ndim >= 1 \
                and c.shape[-1] == rw.old_channels(out) and c.shape[-1] > 1:
            rw.slice_const(node, 2, c.ndim - 1, keep_out)

    def filter_weights(self, node: Node, channel: int) -> np.ndarray:
        b = node.inputs[1].const
        return b[channel] if node.attrs.get("transB", 0) else b[:, channel]


@register_handler("MatMul")
class MatMulHandler(ChannelHandler):
    """MatMul ``A @ B`` with constant 2-D ``B``: A's last axis is read, outputs are filters."""

    def propagate(self, node: Node, dep: DependencyGraph) -> None:
        a, b, out = node.inputs[0], node.inputs[1], node.outputs[0]
        if b is None or b.const is None or b.const.ndim != 2 or a.is_constant:
            dep.block_node(node, "only activation @ constant 2-D matrix is supported")
            return
        rank = len(a.shape)
        if dep.axis(a) is not None and dep.axis(a) != rank - 1:
            dep.block_node(node, "input channels are not on the last axis")
            return
        dep.track(out, len(out.shape) - 1)
        for j in range(out.shape[-1]):
            dep.add_filter(out, j, node)

    def apply(self, node: Node, rw: Rewriter) -> None:
        rw.slice_const(node, 1, 0, rw.keep(node.inputs[0]))
        rw.slice_const(node, 1, 1, rw.keep(node.outputs[0]))

    def filter_weights(self, node: Node, channel: int) -> np.ndarray:
        return node.inputs[1].const[:, channel]


@register_handler("BatchNormalization")
class NormHandler(_OneInput):
    """Per-channel affine (BatchNorm: scale, B, mean, var)."""

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        if ch != 1 or any(v is not None and v.const is None for v in node.inputs[1:]):
            dep.block_node(node, "channels not on axis 1 or parameters not constant")
            return
        dep.same_channels(x, out)
        if node.op_type == "BatchNormalization":
            for j in range(dep.channels(out)):
                dep.add_bn(out, j, node)

    def apply(self, node: Node, rw: Rewriter) -> None:
        keep = rw.keep(node.inputs[0])
        for i in range(1, len(node.inputs)):
            rw.slice_const(node, i, 0, keep)


# --------------------------------------------------------------------------- channelwise

class ChannelwiseHandler(_OneInput):
    """Ops that act on every channel alike: channel j in is channel j out (registered for
    the ``layout_preserving`` ops at the end of this module).

    Extra inputs (Clip's bounds) must be scalars; a pool's second output (indices) blocks.
    """

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        for extra in node.inputs[1:]:
            if extra is not None and (extra.const is None or extra.const.size != 1) \
                    and node.op_type not in ("Dropout",):
                dep.block_node(node, f"non-scalar extra input '{extra.name}'")
                return
        if len(node.outputs) > 1 and node.outputs[1].uses and node.op_type != "Dropout":
            dep.block_node(node, "second output is used")
            return
        dep.same_channels(x, out)


@register_handler(*sorted(ops_with("elementwise", "broadcast")))
class BroadcastHandler(ChannelHandler):
    """Elementwise with numpy broadcasting: non-broadcast channel dims are joined 1:1.

    Covers residual adds (all branches of an add pruned together) and squeeze-excitation
    gates.  Constant operands with a full channel dim are sliced on rewrite.
    """

    def propagate(self, node: Node, dep: DependencyGraph) -> None:
        out = node.outputs[0]
        rank = len(out.shape)
        tracked = [v for v in node.inputs if v is not None and dep.axis(v) is not None]
        if not tracked:
            return
        axes = {dep.axis(v) + rank - len(v.shape) for v in tracked if dep.channels(v) > 1}
        if not axes:  # only broadcast (1-channel) tracked inputs
            axes = {dep.axis(tracked[0]) + rank - len(tracked[0].shape)}
        if len(axes) != 1:
            dep.block_node(node, "operands carry channels on different axes")
            return
        axis = axes.pop()
        c_out = out.shape[axis]
        for v in node.inputs:
            if v is None or dep.axis(v) is not None or v.is_constant:
                continue
            pos = axis - (rank - len(v.shape))
            if pos >= 0 and v.shape[pos] == c_out and c_out > 1:
                dep.block_node(node, f"operand '{v.name}' has channels the analysis cannot "
                               "follow (its producer has no handler)")
                return
        for v in tracked:
            if dep.axis(v) + rank - len(v.shape) != axis and dep.channels(v) > 1:
                dep.block_node(node, "operand channel axes disagree")
                return
        dep.track(out, axis)
        for v in tracked:
            if dep.channels(v) == c_out and c_out > 1:
                for j in range(c_out):
                    dep.union(v, j, out, j)
            elif dep.channels(v) == 1 and c_out > 1:
                dep.block(v, f"broadcast into '{node.name}'")

    def apply(self, node: Node, rw: Rewriter) -> None:
        out = node.outputs[0]
        keep = rw.keep(out)
        if keep is None:
            return
        rank, axis, old = len(out.shape), rw.axis(out), rw.old_channels(out)
        for i, v in enumerate(node.inputs):
            if v is None or v.const is None:
                continue
            pos = axis - (rank - v.const.ndim)
            if node.op_type == "PRelu" and v.const.ndim < rank and pos < 0:
                pos = -1
            if 0 <= pos < v.const.ndim and v.const.shape[pos] == old and old > 1:
                rw.slice_const(node, i, pos, keep)


@register_handler("Concat")
class ConcatHandler(ChannelHandler):
    """Concat on the channel axis: input k channel j is output channel offset_k + j."""

    def propagate(self, node: Node, dep: DependencyGraph) -> None:
        out = node.outputs[0]
        rank = len(out.shape)
        axis = _norm_axis(int(node.attrs.get("axis", 0)), rank)
        tracked = [v for v in node.inputs if v is not None and dep.axis(v) is not None]
        if not tracked:
            return
        ch_axes = {dep.axis(v) for v in tracked}
        if len(ch_axes) != 1:
            dep.block_node(node, "inputs carry channels on different axes")
            return
        ch = ch_axes.pop()
        dep.track(out, ch)
        if ch == axis:
            offset = 0
            for v in node.inputs:
                n = v.shape[axis]
                if dep.axis(v) is not None:
                    for j in range(n):
                        dep.union(v, j, out, offset + j)
                offset += n
            return
        for v in node.inputs:  # concatenated along another axis: channels shared
            if v is None or v.is_constant:
                continue  # constants are sliced along the channel axis on rewrite
            if dep.axis(v) is None:
                dep.block_node(node, f"untracked input '{v.name}' shares the channel axis")
                return
        for v in tracked:
            for j in range(dep.channels(out)):
                dep.union(v, j, out, j)

    def apply(self, node: Node, rw: Rewriter) -> None:
        out = node.outputs[0]
        axis = _norm_axis(int(node.attrs.get("axis", 0)), len(out.shape))
        if rw.axis(out) != axis:
            for i, v in enumerate(node.inputs):  # constant inputs share the channel axis
                if v is not None and v.const is not None:
                    rw.slice_const(node, i, rw.axis(out), rw.keep(out))


@register_handler("Split")
class SplitHandler(_OneInput):
    """Split on the channel axis: output k channel j is input channel offset_k + j."""

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        axis = _norm_axis(int(node.attrs.get("axis", 0)), len(x.shape))
        if len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].const is None:
            dep.block_node(node, "split sizes are computed at run time")
            return
        if axis != ch:
            for part in node.outputs:
                dep.same_channels(x, part)
            return
        offset = 0
        for part in node.outputs:
            dep.track(part, axis)
            for j in range(part.shape[axis]):
                dep.union(x, offset + j, part, j)
            offset += part.shape[axis]

    def apply(self, node: Node, rw: Rewriter) -> None:
        x = node.inputs[0]
        axis = _norm_axis(int(node.attrs.get("axis", 0)), len(x.shape))
        if axis != rw.axis(x):
            return
        sizes = [len(rw.keep(o)) if rw.keep(o) is not None else o.shape[axis]
                 for o in node.outputs]
        if len(node.inputs) < 2 or node.inputs[1] is None:
            node.set_input(1, node.graph.add_constant(node.name + "_split",
                                                      np.array(sizes, dtype=np.int64)))
        else:
            rw.set_const(node, 1, np.array(sizes, dtype=np.int64))
        node.attrs.pop("num_outputs", None)


@register_handler("Flatten")
class FlattenHandler(_OneInput):
    """Flatten: channel c becomes the block of features c*inner .. c*inner + inner - 1."""

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        a = _norm_axis(int(node.attrs.get("axis", 1)), len(x.shape))
        if ch < a:
            dep.block_node(node, "channel axis is folded into the first output dimension")
            return
        _flatten_union(dep, x, out, ch, a)


def _flatten_union(dep: DependencyGraph, x: Value, out: Value, ch: int, a: int) -> None:
    """Join x's channel c with every output feature (axis 1) that holds it."""
    c = x.shape[ch]
    inner = int(np.prod(x.shape[ch + 1:], dtype=np.int64))
    outer = int(np.prod(x.shape[a:ch], dtype=np.int64))
    dep.track(out, 1)
    for o in range(outer):
        for j in range(c):
            base = o * c * inner + j * inner
            for s in range(inner):
                dep.union(x, j, out, base + s)


@register_handler("Reshape")
class ReshapeHandler(_OneInput):
    """Reshape that flattens (N, C, ...) -> (N, C*...), or keeps dims up to the channel."""

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        if node.inputs[1] is None or node.inputs[1].const is None:
            dep.block_node(node, "target shape is computed at run time")
            return
        if tuple(out.shape[:ch + 1]) == tuple(x.shape[:ch + 1]):
            dep.same_channels(x, out, ch)
            node.meta["prune_reshape"] = "keep"
        elif len(out.shape) == ch + 1 and tuple(out.shape[:ch]) == tuple(x.shape[:ch]) \
                and ch == 1:
            _flatten_union(dep, x, out, ch, ch)
            node.meta["prune_reshape"] = "flatten"
        else:
            dep.block_node(node, f"reshape {x.shape} -> {out.shape} mixes the channel axis")

    def apply(self, node: Node, rw: Rewriter) -> None:
        x, out = node.inputs[0], node.outputs[0]
        new_shape = list(out.shape)
        if node.meta.get("prune_reshape") == "keep":
            new_shape[rw.axis(x)] = x.shape[rw.axis(x)]
        else:
            new_shape[-1] = int(np.prod(x.shape[1:], dtype=np.int64))
        rw.set_const(node, 1, np.array(new_shape, dtype=np.int64))


@register_handler("Transpose")
class TransposeHandler(_OneInput):
    """Transpose: the channel axis moves to its new position."""

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        perm = list(node.attrs.get("perm") or range(len(x.shape))[::-1])
        dep.same_channels(x, out, perm.index(ch))


@register_handler("Squeeze", "Unsqueeze")
class SqueezeHandler(_OneInput):
    """(Un)squeeze of axes other than the channel axis: the channel axis shifts."""

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        axes = _const(node, 1) if len(node.inputs) > 1 else None
        if axes is None:
            axes = node.attrs.get("axes")
        if axes is None:
            if node.op_type == "Squeeze" and x.shape[ch] == 1:
                dep.block_node(node, "squeezes the channel axis")
                return
            axes = [i for i, d in enumerate(x.shape) if d == 1]
        axes = [int(a) for a in np.asarray(axes).reshape(-1)]
        if node.op_type == "Squeeze":
            axes = [_norm_axis(a, len(x.shape)) for a in axes]
            if ch in axes:
                dep.block_node(node, "squeezes the channel axis")
                return
            new = ch - sum(1 for a in axes if a < ch)
        else:
            axes = sorted(_norm_axis(a, len(out.shape)) for a in axes)
            new = ch
            for a in axes:
                if a <= new:
                    new += 1
        dep.same_channels(x, out, new)


@register_handler("Resize")
class ResizeHandler(_OneInput):
    """Resize: channel j in is channel j out; a ``sizes`` input is rewritten."""

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        if out.shape[ch] != x.shape[ch]:
            dep.block_node(node, "resizes the channel axis")
            return
        for i in range(1, len(node.inputs)):
            v = node.inputs[i]
            if v is not None and v.const is None:
                dep.block_node(node, f"input '{v.name}' is computed at run time")
                return
        dep.same_channels(x, out)

    def apply(self, node: Node, rw: Rewriter) -> None:
        sizes = _const(node, 3)
        if sizes is not None and sizes.size:
            x = node.inputs[0]
            new = np.array(sizes, copy=True)
            new[rw.axis(x)] = x.shape[rw.axis(x)]
            rw.set_const(node, 3, new)


@register_handler("Pad")
class PadHandler(_OneInput):
    """Pad that leaves the channel axis alone."""

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        pads = _const(node, 1)
        if pads is None or (len(node.inputs) > 3 and node.inputs[3] is not None):
            dep.block_node(node, "pads are computed at run time")
            return
        pads = np.asarray(pads).reshape(-1)
        rank = len(x.shape)
        if pads[ch] != 0 or pads[ch + rank] != 0:
            dep.block_node(node, "pads the channel axis")
            return
        dep.same_channels(x, out)


@register_handler("Softmax", "LogSoftmax", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum")
class AxisOpHandler(_OneInput):
    """Ops over some axes: fine when the channel axis is not one of them (keepdims=1)."""

    def follow(self, node: Node, dep: DependencyGraph, x: Value, out: Value, ch: int) -> None:
        rank = len(x.shape)
        if node.op_type in ("Softmax", "LogSoftmax"):
            axes = [_norm_axis(int(node.attrs.get("axis", -1)), rank)]
            keep = True
        else:
            axes = node.attrs.get("axes")
            if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
                axes = _const(node, 1)
                if axes is None:
                    dep.block_node(node, "axes are computed at run time")
                    return
            axes = list(range(rank)) if axes is None or len(np.asarray(axes).reshape(-1)) == 0 \
                else [_norm_axis(int(a), rank) for a in np.asarray(axes).reshape(-1)]
            keep = bool(node.attrs.get("keepdims", 1))
        if ch in axes:
            dep.block_node(node, "works across channels")
            return
        new = ch if keep else ch - sum(1 for a in axes if a < ch)
        dep.same_channels(x, out, new)


# Every layout-preserving op (activations, pools, Identity/Dropout, Cast, Clip...) that has
# no more specific handler above (BatchNormalization: `NormHandler`) maps channel j to j.
register_handler(*sorted(ops_with("layout_preserving", domain="") - set(HANDLERS)))(
    ChannelwiseHandler)
