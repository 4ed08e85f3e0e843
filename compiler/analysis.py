"""Static costs of a graph: MACs, parameters and bytes per node, and activation liveness.

Everything here is computed from inferred shapes, without running the model, so it is
cheap enough to call after every pass (pruning's objective, the report, the memory
planner's baseline).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .ir import Graph, Node, Value
from .ops.registry import op_traits

__all__ = ["NodeCost", "ModelStats", "node_cost", "model_stats", "activation_liveness",
           "peak_activation_bytes", "param_values", "weight_bits", "planned_memory_column"]


@dataclass
class NodeCost:
    name: str
    op_type: str
    output_shape: tuple[int, ...]
    macs: int
    params: int
    param_bytes: int
    output_bytes: int
    bits: int | None = None  # weight bit width (quantized layers; None: float weights)
    sparsity: float = 0.0    # fraction of weights that are exactly zero


@dataclass
class ModelStats:
    macs: int
    params: int
    param_bytes: int
    peak_activation_bytes: int
    input_bytes: int
    output_bytes: int
    nodes: int
    layers: list[NodeCost] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def is_param(value: Value) -> bool:
    """Learned weights: floating (or quantized) constants; shape operands do not count."""
    return value.is_constant and (np.issubdtype(value.dtype, np.floating) or value.quant is not None
                                  or value.meta.get("param", False))


def param_values(node: Node) -> list[Value]:
    return [v for v in node.inputs if v is not None and is_param(v)]


def node_macs(node: Node) -> int:
    """Multiply-accumulates of one node: its op's ``macs`` trait (`compiler.ops.macs`, the
    rule the mixed-precision cost model uses too); 0 for ops that do no multiplication
    by weights."""
    opdef = op_traits(node)
    return 0 if opdef is None or opdef.macs is None else int(opdef.macs(node))


def weight_bits(value: Value) -> int:
    """Bits a weight element really needs: its quantization's ``bits`` (4-bit values in
    an int8 container count 4), else its dtype's width."""
    return int(value.quant.bits) if value.quant is not None else np.dtype(value.dtype).itemsize * 8


def node_cost(node: Node) -> NodeCost:
    params = param_values(node)
    out = node.outputs[0] if node.outputs else None
    weights = [v for v in params if v.const is not None and v.const.ndim >= 2]  # not biases
    count = sum(v.size for v in weights)
    zeros = sum(int(np.count_nonzero(v.const == 0)) for v in weights)
    quant_bits = [v.quant.bits for v in weights if v.quant is not None]
    return NodeCost(
        name=node.name, op_type=node.op_type,
        output_shape=tuple(out.shape) if out is not None and out.shape is not None else (),
        macs=node_macs(node),
        params=sum(v.size for v in params),
        param_bytes=sum(v.nbytes for v in params),
        output_bytes=sum(v.nbytes for v in node.outputs if v.shape is not None),
        bits=int(max(quant_bits)) if quant_bits else None,
        sparsity=round(zeros / count, 4) if count else 0.0)


def activation_liveness(graph: Graph) -> list[tuple[Node, int]]:
    """Bytes of live activations right after each node (topological order).

    A value is live from its producer (graph inputs: from the start) to its last
    reader (graph outputs: to the end); constants are not activations.
    """
    order = graph.topo_order()
    last: dict[int, int] = {}
    for step, node in enumerate(order):
        for v in node.inputs:
            if v is not None and not v.is_constant:
                last[id(v)] = step
    end = len(order)
    for v in graph.outputs:
        last[id(v)] = end
    live = sum(v.nbytes for v in graph.inputs)
    timeline = []
    for step, node in enumerate(order):
        live += sum(v.nbytes for v in node.outputs)
        timeline.append((node, live))
        freed = {id(v): v for v in (*node.inputs, *node.outputs)
                 if v is not None and not v.is_constant and last.get(id(v), step) <= step}
        live -= sum(v.nbytes for v in freed.values())
    return timeline


def peak_activation_bytes(graph: Graph) -> int:
    timeline = activation_liveness(graph)
    base = sum(v.nbytes for v in graph.inputs)
    return max([base] + [b for _, b in timeline])


def model_stats(graph: Graph) -> ModelStats:
    layers = [node_cost(n) for n in graph.topo_order()]
    params = {id(v): v for v in graph.constants if is_param(v) and v.uses}
    return ModelStats(
        macs=sum(l.macs for l in layers),
        params=sum(v.size for v in params.values()),
        param_bytes=sum(v.nbytes for v in params.values()),
        peak_activation_bytes=peak_activation_bytes(graph),
        input_bytes=sum(v.nbytes for v in graph.inputs),
        output_bytes=sum(v.nbytes for v in graph.outputs),
        nodes=len(layers),
        layers=layers)


def planned_memory_column(graph: Graph) -> dict[str, tuple[int, int]]:
    """``{node name: (bytes live at its step, offset of its output)}`` in the arena
    `compiler.memory_plan.plan_memory` plans (views and in-place elementwise ops), for
    the report's per-layer memory column.  Empty when the graph cannot be planned."""
    from .memory_plan import MemoryPlanError, plan_memory

    try:
        plan = plan_memory(graph, in_place=True)
    except MemoryPlanError:
        return {}
    live = plan.live_bytes()
    lo = min((r.first for r in plan.records), default=0)
    out = {}
    for step, node in enumerate(graph.topo_order()):
        value = node.outputs[0] if node.outputs else None
        try:
            offset = plan.offset_of(value.name) if value is not None else -1
        except KeyError:
            offset = -1
        index = step - lo
        out[node.name] = (live[index] if 0 <= index < len(live) else 0, offset)
    return out
