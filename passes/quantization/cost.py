"""Theoretical cost of a bit-width assignment, as the research (IMVIP 2017) computes it.

A layer's cost is its bit operations ``MACs x w_bits x a_bits`` (``a_bits``: the bits of
the layer's input activations).  The expected speedup of an assignment is
``sum(MACs x 32 x 32) / sum(MACs x w_bits x a_bits)`` over the multiply layers (Conv,
ConvTranspose, Gemm, MatMul); layers left in float count as 32 x 32.  Element-wise work
(adds, pools, activations) is not counted, as in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from compiler.ir import Graph, Node
from compiler.ops.registry import op_traits, ops_with

__all__ = ["LayerCost", "layer_macs", "multiply_layers", "bit_ops", "theoretical_speedup",
           "cost_table"]

FLOAT_BITS = 32
# ops with a MACs rule (op trait ``macs``): Conv, ConvTranspose, Gemm, MatMul, their q.*
# counterparts, ConvInteger and MatMulInteger
_MUL_OPS = ops_with("macs")


@dataclass
class LayerCost:
    name: str
    op: str
    macs: int
    w_bits: int = FLOAT_BITS
    a_bits: int = FLOAT_BITS

    @property
    def bit_ops(self) -> int:
        return self.macs * self.w_bits * self.a_bits


def _op(node: Node) -> str:
    return f"{node.domain}.{node.op_type}" if node.domain else node.op_type


def layer_macs(node: Node) -> int:
    """Multiply-accumulates of one Conv/ConvTranspose/Gemm/MatMul (float or integer): the
    op's ``macs`` trait (`compiler.ops.macs`); 0 for other ops."""
    opdef = op_traits(node)
    return 0 if opdef is None or opdef.macs is None else int(opdef.macs(node))


def multiply_layers(graph: Graph) -> list[Node]:
    return [n for n in graph.topo_order() if _op(n) in _MUL_OPS]


def cost_table(graph: Graph, bits: Mapping[str, tuple[int, int]] | None = None) -> list[LayerCost]:
    """One `LayerCost` per multiply layer; ``bits`` maps layer name -> (w_bits, a_bits).

    On a quantized graph the bits default to those the ``quantize`` pass recorded in
    ``node.meta["bits"]``; otherwise to 32 x 32."""
    bits = dict(bits or {})
    table = []
    for node in multiply_layers(graph):
        wb, ab = bits.get(node.name, node.meta.get("bits", (FLOAT_BITS, FLOAT_BITS)))
        name = node.meta.get("float_name", node.name)
        if name in bits:
            wb, ab = bits[name]
        table.append(LayerCost(name, _op(node), layer_macs(node), int(wb), int(ab)))
    return table


def bit_ops(table: list[LayerCost]) -> int:
    return sum(layer.bit_ops for layer in table)


def theoretical_speedup(graph_or_table, bits: Mapping[str, tuple[int, int]] | None = None) -> float:
    """``sum(MACs*32*32) / sum(MACs*w_bits*a_bits)`` (1.0 for an all-float model)."""
    table = graph_or_table if isinstance(graph_or_table, list) else cost_table(graph_or_table, bits)
    total = bit_ops(table)
    if total == 0:
        return 1.0
    return sum(layer.macs for layer in table) * FLOAT_BITS * FLOAT_BITS / total
