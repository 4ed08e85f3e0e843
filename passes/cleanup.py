"""Cleanup passes: identity removal, constant folding, dead-code elimination, type inference,
duplicate-constant merging.

``cleanup`` runs the first three in order, then ``fold-pad`` (`passes.fold_pad`: explicit
zero Pads into the convs that read them; it needs the folded pads constants) and ``dce``
again; each is also usable alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.folding import can_fold, fold_node, infer_node
from compiler.ir import Graph
from compiler.ops.registry import ops_with
from compiler.pass_manager import Pass, PassContext, PassResult, Sequential, register_pass

# Ops that return their first input unchanged at inference time (op trait
# ``identity_at_inference``: Identity, Dropout).
IDENTITY_OPS = ops_with("identity_at_inference")


@register_pass("remove-identity")
@dataclass
class RemoveIdentity(Pass):
    """Bypasses Identity and (inference-mode) Dropout nodes."""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        removed = 0
        for node in graph.topo_order():
            if node.op_type not in IDENTITY_OPS or len(node.outputs) != 1:
                continue
            source, out = node.inputs[0], node.output
            if out.is_graph_output and (source.is_graph_input or source.is_graph_output):
                continue  # the graph must keep a distinct output value
            name = out.name
            graph.replace_all_uses_with(out, source)
            graph.remove(node)
            if source.is_graph_output and source.producer is not None and not source.is_graph_input:
                # keep the user-visible output name
                if graph.unique_name(name) == name:
                    graph.rename_value(source, name)
            removed += 1
        return PassResult(graph, removed > 0, {"removed": removed})


@register_pass("fold-constants")
@dataclass
class FoldConstants(Pass):
    """Evaluates, at compile time, every node whose inputs are all constants."""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        folded = 0
        for node in graph.topo_order():
            if can_fold(node):
                fold_node(graph, node)
                folded += 1
        return PassResult(graph, folded > 0, {"folded": folded})


@register_pass("dce")
@dataclass
class DeadCodeElimination(Pass):
    """Removes nodes that no graph output depends on, and unused constants."""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        removed = graph.remove_unused()
        return PassResult(graph, removed > 0, {"removed": removed})


@register_pass("dedup-constants")
@dataclass
class DedupConstants(Pass):
    """Merges constants with the same dtype, shape, bytes and quantization into one value.

    An exported graph keeps one initializer per use (ReLU6 gives every ``Clip`` its own ``0``
    and ``6``): each costs a name and a header in every artifact.  Only constants that are
    not trained weights are merged -- non-float operands (shapes, axes, indices) and rank-0
    scalars, without quantization parameters or metadata -- because merging two equal float
    tensors of rank >= 1 (say, two zero biases) would tie them together in a later
    fine-tuning.  Graph outputs are never merged.
    """

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        first: dict[tuple, object] = {}
        merged = 0
        for value in graph.constants:
            array = np.asarray(value.const)
            if (value.is_graph_output or value.quant is not None or value.meta
                    or (np.issubdtype(array.dtype, np.floating) and array.ndim)):
                continue
            key = (array.dtype.str, array.shape, array.tobytes())
            keep = first.setdefault(key, value)
            if keep is not value:
                graph.replace_all_uses_with(value, keep)
                merged += 1
        if merged:
            graph.remove_unused()
        return PassResult(graph, merged > 0, {"merged": merged})


@register_pass("infer-shapes")
@dataclass
class InferShapes(Pass):
    """Recomputes every value's shape and dtype (after a pass edited weights by hand)."""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changed = 0
        for node in graph.topo_order():
            before = [(v.shape, v.dtype) for v in node.outputs]
            infer_node(node)
            changed += sum(b != (v.shape, v.dtype) for b, v in zip(before, node.outputs))
        return PassResult(graph, changed > 0, {"changed_values": changed})


@register_pass("cleanup")
@dataclass
class Cleanup(Pass):
    """remove-identity, fold-constants, dce, fold-pad."""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        from .fold_pad import FoldPad

        return Sequential([RemoveIdentity(), FoldConstants(), DeadCodeElimination(),
                           FoldPad()]).run(graph, ctx)
