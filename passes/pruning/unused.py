"""prune-unused: remove the channels no later layer reads (exact).

    prune-unused

Magnitude pruning at high rates leaves whole channels and neurons whose every outgoing
weight is zero: Caffe LeNet-5's last layer keeps a few hundred of its 5,000 weights, so
most of the 500 hidden neurons feed nothing, yet their incoming rows (800 weights each)
stay in the model and cost index and value bits.  This pass finds every channel
component (`dependency.analyze`: a filter with all the activations, pools and flattened
features it flows into) that no layer reads -- each weight layer consuming one of its
atoms has an all-zero input slice for it -- and removes it structurally with its filters
and biases (`apply_selection`), repeatedly, since removing a neuron can leave the channels
that fed only it unread too.  The function of the graph does not change at all (the
removed values were multiplied by zeros; outputs agree up to the order of float sums), so
the pass is exact and needs no data.

What counts as "read" is conservative: an atom read by a graph output, by a node whose
outputs are not part of the same component (other than a plain Conv / ConvTranspose / Gemm
whose slice is checked), or by a weight layer with any non-zero in its slice, is read.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.pass_manager import Pass, PassContext, PassResult, register_pass

from .dependency import Component, analyze, apply_selection

__all__ = ["PruneUnused", "prune_unused", "unused_components"]


def _slice(node: Node, x: Value, index: int) -> np.ndarray | None:
    """The weights of ``node`` that read channel ``index`` of its input ``x``; None when
    ``node`` is not a weight layer reading ``x`` as its data input."""
    if not node.inputs or node.inputs[0] is not x:
        return None
    w = node.inputs[1].const if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if w is None or any(v is x for v in node.inputs[1:]):
        return None
    g = int(node.attrs.get("group", 1))
    if node.op_type == "Conv" and g == 1:
        return w[:, index]
    if node.op_type == "ConvTranspose" and g == 1:
        return w[index]
    if node.op_type == "Gemm" and not int(node.attrs.get("transA", 0)):
        return w[:, index] if int(node.attrs.get("transB", 0)) else w[index]
    return None


def _unread(comp: Component, graph_outputs: set[int]) -> bool:
    atoms = {(id(v), i) for v, i in comp.atoms}
    inside = {id(v) for v, _ in comp.atoms}
    for v, i in comp.atoms:
        if id(v) in graph_outputs:
            return False
        for node in v.consumers:
            s = _slice(node, v, i)
            if s is not None:
                if np.any(s):
                    return False
                continue
            # a pass-through node (activation, pool, Flatten...): its output atoms that
            # carry channel i belong to this component and are checked in their own right
            if not any(id(o) in inside for o in node.outputs):
                return False
    return bool(atoms)


def unused_components(graph: Graph) -> tuple[object, list[Component]]:
    """``(dependency graph, components no layer reads)``; a group keeps at least one."""
    dep = analyze(graph)
    outs = {id(v) for v in graph.outputs}
    remove: list[Component] = []
    for g in dep.groups:
        if not g.prunable:
            continue
        dead = [c for c in g.components if _unread(c, outs)]
        remove += dead[:g.size - 1]
    return dep, remove


def prune_unused(graph: Graph, max_rounds: int = 8) -> tuple[Graph, dict]:
    """Remove unread channels in place until none is left; ``(graph, stats)`` with the
    channels removed per round."""
    rounds = []
    for _ in range(max_rounds):
        dep, remove = unused_components(graph)
        if not remove:
            break
        apply_selection(dep, remove)
        rounds.append(len(remove))
    return graph, {"channels_removed": sum(rounds), "rounds": rounds}


@register_pass("prune-unused")
@dataclass
class PruneUnused(Pass):
    """Remove channels whose every consumer weight is zero (exact, no data)."""

    exact = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        graph, stats = prune_unused(graph)
        return PassResult(graph, bool(stats["channels_removed"]), stats)
