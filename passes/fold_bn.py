"""fold-bn: fold inference BatchNormalization into the preceding Conv, ConvTranspose or Gemm.

``y = gamma * (x - mean) / sqrt(var + eps) + beta`` is an affine map per channel,
``y = s * x + t``.  When ``x`` is produced by a Conv/ConvTranspose/Gemm with constant
weights whose output feeds only this BN, the map is absorbed into the weights and
bias.  A BN that cannot be absorbed (its producer is an Add, a graph input, or is
shared) becomes ``Mul(s) -> Add(t)`` with constant per-channel operands, so no
BatchNormalization survives the pass either way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Node
from compiler.pass_manager import Pass, PassContext, PassResult, register_pass
from compiler.folding import infer_node


def bn_affine(node: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (scale, shift) of a BatchNormalization with constant parameters."""
    params = node.inputs[1:5]
    if any(v is None or v.const is None for v in params):
        return None
    gamma, beta, mean, var = (v.const.astype(np.float64) for v in params)
    scale = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    return scale, beta - mean * scale


@register_pass("fold-bn")
@dataclass
class FoldBatchNorm(Pass):
    """Removes every BatchNormalization (folded into weights, or as Mul+Add)."""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        folded = rewritten = 0
        for bn in graph.find("BatchNormalization"):
            affine = bn_affine(bn)
            if affine is None:
                continue  # parameters computed at run time: leave it
            scale, shift = affine
            producer = bn.inputs[0].producer
            if producer is not None and self._absorb(graph, producer, bn, scale, shift):
                folded += 1
            else:
                self._as_mul_add(graph, bn, scale, shift)
                rewritten += 1
        if folded:
            graph.remove_unused()  # the replaced weight and bias constants
        return PassResult(graph, bool(folded or rewritten),
                          {"folded": folded, "as_mul_add": rewritten})

    @staticmethod
    def _absorb(graph: Graph, producer: Node, bn: Node, scale: np.ndarray,
                shift: np.ndarray) -> bool:
        x = bn.inputs[0]
        if len(x.uses) != 1 or x.is_graph_output or len(producer.outputs) != 1:
            return False
        weight = producer.inputs[1] if len(producer.inputs) > 1 else None
        bias = producer.inputs[2] if len(producer.inputs) > 2 else None
        if weight is None or weight.const is None or (bias is not None and bias.const is None):
            return False
        w = weight.const.astype(np.float64)
        if producer.op_type == "Conv":
            channels = w.shape[0]
            new_w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        elif producer.op_type == "ConvTranspose":
            group = int(producer.attrs.get("group", 1))
            cin, cout_g = w.shape[0], w.shape[1]
            channels = cout_g * group
            wg = w.reshape((group, cin // group, cout_g) + w.shape[2:])
            sg = scale.reshape((group, 1, cout_g) + (1,) * (w.ndim - 2))
            new_w = (wg * sg).reshape(w.shape)
        elif producer.op_type == "Gemm":
            if producer.attrs.get("transA", 0) or len(x.shape) != 2:
                return False
            alpha, beta = float(producer.attrs.get("alpha", 1.0)), float(producer.attrs.get("beta", 1.0))
            trans_b = int(producer.attrs.get("transB", 0))
            channels = w.shape[0] if trans_b else w.shape[1]
            new_w = w * (scale[:, None] if trans_b else scale[None, :])
            if bias is not None:
                c = bias.const.astype(np.float64)
                if c.size not in (1, channels) or (c.ndim == 2 and c.shape[0] != 1):
                    return False
                old_b = np.broadcast_to(c.reshape(-1), (channels,)) * beta
            else:
                old_b = np.zeros(channels)
            new_b = (old_b * scale + shift) / (beta if beta != 0 else 1.0)
            if beta == 0:
                producer.attrs["beta"] = 1.0
            _set_weights(graph, producer, new_w.astype(weight.dtype), new_b.astype(weight.dtype))
            _bypass(graph, bn)
            return True
        else:
            return False
        if channels != scale.size:
            return False
        old_b = bias.const.astype(np.float64) if bias is not None else np.zeros(channels)
        new_b = old_b * scale + shift
        _set_weights(graph, producer, new_w.astype(weight.dtype), new_b.astype(weight.dtype))
        _bypass(graph, bn)
        return True

    @staticmethod
    def _as_mul_add(graph: Graph, bn: Node, scale: np.ndarray, shift: np.ndarray) -> None:
        x = bn.inputs[0]
        dtype = x.dtype
        bshape = (-1,) + (1,) * (len(x.shape) - 2)
        s = graph.add_constant(bn.name + "_scale", scale.astype(dtype).reshape(bshape))
        t = graph.add_constant(bn.name + "_shift", shift.astype(dtype).reshape(bshape))
        mul = graph.add_node("Mul", [x, s], name=bn.name + "_mul")
        infer_node(mul)
        add = graph.add_node("Add", [mul.output, t], name=bn.name + "_add")
        infer_node(add)
        out = bn.output
        name = out.name
        graph.replace_all_uses_with(out, add.output)
        graph.remove(bn)
        graph.rename_value(add.output, name)


def _set_weights(graph: Graph, node: Node, weight: np.ndarray, bias: np.ndarray) -> None:
    """Give ``node`` fresh weight and bias constants (shared constants stay untouched)."""
    w = graph.add_constant(node.inputs[1].name, weight)
    b = graph.add_constant(node.name + "_bias" if len(node.inputs) < 3 or node.inputs[2] is None
                           else node.inputs[2].name, bias)
    node.set_input(1, w)
    node.set_input(2, b)


def _bypass(graph: Graph, bn: Node) -> None:
    """Route BN's consumers to its input, keeping BN's output name when it is a graph output."""
    source, out = bn.inputs[0], bn.output
    name = out.name
    graph.replace_all_uses_with(out, source)
    graph.remove(bn)
    if source.is_graph_output:
        graph.rename_value(source, name)
