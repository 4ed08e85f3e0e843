"""Type inference and constant folding, node by node, over the op registry.

One walk does both because they feed each other: folding ``Shape`` needs its input's
inferred shape, and inferring ``Reshape`` needs its (folded) target-shape constant.
The importer runs it as each node arrives; the ``fold-constants`` pass and analyses
re-run it over a whole graph.
"""
from __future__ import annotations

import numpy as np

from .ir import Graph, Node, Value
from .ops.conv_util import invalid
from .ops.registry import OPS, OpValidationError, get_op, supported_ops

# Ops whose constant inputs must stay visible to later passes (quantization params): the
# ONNX ops registered with ``foldable=False`` (QuantizeLinear, DequantizeLinear).
NEVER_FOLD: set[str] = {key for key in supported_ops() if not OPS[key].foldable and "." not in key}

# Folding a node whose output is larger than this (elements) would bloat the model
# (e.g. Expand of a scalar to a big tensor); such nodes stay in the graph.
MAX_FOLD_ELEMENTS = 1 << 22


def can_fold(node: Node) -> bool:
    """True if the node's outputs can be computed now, at compile time."""
    if node.op_type in NEVER_FOLD or node.domain:
        return False
    inputs = [v for v in node.inputs if v is not None]
    if node.op_type == "Shape":
        return bool(inputs) and inputs[0].shape is not None
    return all(v.is_constant for v in inputs)


def infer_node(node: Node) -> None:
    """Set the shape and dtype of ``node``'s outputs from its inputs."""
    opdef = get_op(node.op_type, node.domain, node_name=node.name)
    for value in node.inputs:
        if value is not None and (value.shape is None or value.dtype is None):
            raise OpValidationError(f"node '{node.name}' ({node.op_type}): input '{value.name}' "
                                    "has no known type")
    types = opdef.infer(node)
    outputs = node.outputs
    if len(types) < len(outputs):
        raise OpValidationError(f"node '{node.name}' ({node.op_type}) produces {len(types)} "
                                f"outputs, but {len(outputs)} are used")
    for value, (shape, dtype) in zip(outputs, types):
        value.shape = tuple(int(d) for d in shape)
        value.dtype = np.dtype(dtype)


def evaluate_node(node: Node, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run ``node``'s reference kernel on concrete arrays."""
    opdef = get_op(node.op_type, node.domain, node_name=node.name)
    try:
        result = opdef.kernel(node.attrs, *inputs)
    except OpValidationError as exc:
        detail = getattr(exc, "unnamed_detail", None)
        if detail is None:
            raise
        raise invalid(node, detail) from None  # the kernel saw arrays: name its node here
    results = list(result) if isinstance(result, (tuple, list)) else [result]
    return [np.asarray(r) for r in results]


def fold_node(graph: Graph, node: Node) -> list[Value]:
    """Replace ``node`` by constants holding its outputs; returns the new values."""
    inputs = [None if v is None else v.const for v in node.inputs]
    if node.op_type == "Shape":
        inputs = [np.zeros(node.inputs[0].shape, dtype=np.float32)]  # only its shape is read
    arrays = evaluate_node(node, inputs)
    outputs = node.outputs
    names = [v.name for v in outputs]
    replacements = []
    for value, array in zip(outputs, arrays):
        const = graph.add_constant(value.name + "_folded", array)
        graph.replace_all_uses_with(value, const)
        replacements.append(const)
    graph.remove(node, safe=False)
    for const, name in zip(replacements, names):
        graph.rename_value(const, name)
    return replacements


def fold_or_infer(graph: Graph, node: Node, *, fold: bool = True) -> list[Value]:
    """Infer ``node``'s output types, then fold it if all it reads is known.

    Returns the node's outputs, or the constants that replaced them.
    """
    infer_node(node)
    outputs = list(node.outputs)
    if fold and can_fold(node) and all(v.size <= MAX_FOLD_ELEMENTS for v in outputs):
        return fold_node(graph, node)
    return outputs


def fold_and_infer(graph: Graph, *, fold: bool = True) -> int:
    """Walk the whole graph in order; returns how many nodes were folded away."""
    folded = 0
    for node in graph.topo_order():
        before = node.graph
        fold_or_infer(graph, node, fold=fold)
        if node.graph is None and before is not None:
            folded += 1
    return folded
