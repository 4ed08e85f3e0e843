"""Change the batch size of a typed graph (for batched evaluation and calibration).

Models are compiled with a static batch (usually 1), but scoring 10,000 test images
one at a time through the reference interpreter wastes most of its time in Python.
`with_batch_size` re-types a copy of the graph for another batch.  Exporters bake the
batch into a few constant operands (Reshape targets after their Shape chains were
folded, Resize ``sizes``); those leading entries are rewritten, and the result is
re-inferred, so a graph that really mixes samples fails loudly instead of silently.
"""
from __future__ import annotations

import numpy as np

from .folding import infer_node
from .ir import Graph
from .ops.registry import OpValidationError

__all__ = ["with_batch_size", "BatchSizeError"]


class BatchSizeError(ValueError):
    """The graph's batch dimension cannot be changed."""


def with_batch_size(graph: Graph, batch: int) -> Graph:
    """A copy of ``graph`` whose inputs (and everything after) have leading dimension ``batch``."""
    if batch < 1:
        raise BatchSizeError(f"batch size must be >= 1, got {batch}")
    old = {v.shape[0] if v.shape else None for v in graph.inputs}
    if len(old) != 1 or None in old:
        raise BatchSizeError(f"graph '{graph.name}' inputs do not share one leading (batch) "
                             f"dimension: {[v.shape for v in graph.inputs]}")
    old_batch = old.pop()
    if old_batch == batch:
        return graph
    new = graph.clone()
    for value in new.inputs:
        value.shape = (batch,) + tuple(value.shape[1:])
    for node in new.topo_order():
        if node.op_type == "Reshape":
            shape = node.inputs[1]
            target = shape.const
            if (target is not None and target.size and int(target[0]) == old_batch
                    and node.inputs[0].shape and node.inputs[0].shape[0] == batch):
                fixed = target.copy()
                fixed[0] = 0  # ONNX: copy the input's dimension
                node.set_input(1, new.add_constant(shape.name + "_batched", fixed))
        elif node.op_type == "Resize" and len(node.inputs) > 3 and node.inputs[3] is not None:
            sizes = node.inputs[3].const
            if sizes is not None and int(sizes[0]) == old_batch:
                fixed = sizes.copy()
                fixed[0] = batch
                node.set_input(3, new.add_constant(node.inputs[3].name + "_batched", fixed))
        try:
            infer_node(node)
        except (OpValidationError, ValueError) as exc:
            raise BatchSizeError(f"cannot change the batch size of graph '{graph.name}' from "
                                 f"{old_batch} to {batch}: node '{node.name}' "
                                 f"({node.op_type}): {exc}") from None
    for value in new.outputs:
        if not value.shape or value.shape[0] != batch:
            raise BatchSizeError(f"cannot change the batch size of graph '{graph.name}': output "
                                 f"'{value.name}' has shape {value.shape}, not batch {batch}")
    new.remove_unused()
    return new
