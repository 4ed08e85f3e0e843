"""magnitude-prune: unstructured magnitude pruning (weights below a threshold become 0).

    magnitude-prune{sparsity=0.7, scope=layer}     # every layer loses 70 % of its weights
    magnitude-prune{sparsity=0.7, scope=global}    # one threshold over all layers

The weights of Conv, ConvTranspose, Gemm and MatMul (constant, floating, >= 2-D) are
candidates; biases and BN parameters are kept.  ``layer`` scope zeroes the smallest
``sparsity`` fraction of each layer; ``global`` uses one magnitude threshold for all
of them, so robust (large-weight) layers keep more.  ``layers`` restricts the candidate
layers (fnmatch globs on node names).  The graph's shapes do not change, so speed
comes only from a sparse runtime or from compression; `finetune` keeps the zeros.

Stats: per-layer sparsity achieved (``layers``: name -> fraction of zeros) and the
overall sparsity of the candidate weights (``sparsity``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops.registry import ops_with
from compiler.pass_manager import Pass, PassContext, PassResult, register_pass

from .dependency import PruningError, match_layers

__all__ = ["MagnitudePrune", "magnitude_prune", "weight_layers"]

# the float multiply layers (op trait ``weight_layer``): Conv, ConvTranspose, Gemm, MatMul
WEIGHT_OPS = tuple(sorted(ops_with("weight_layer", domain="")))


def weight_layers(graph: Graph, layers: list[str] | None = None) -> list[Node]:
    """Nodes whose input 1 is a constant floating weight of rank >= 2."""
    allowed = None
    if layers:
        allowed = {id(n) for n in match_layers(graph, layers, what="magnitude-prune layers")}
    out = []
    for node in graph.topo_order():
        if node.op_type not in WEIGHT_OPS or len(node.inputs) < 2:
            continue
        w = node.inputs[1]
        if w is None or w.const is None or w.const.ndim < 2 \
                or not np.issubdtype(w.const.dtype, np.floating):
            continue
        if allowed is None or id(node) in allowed:
            out.append(node)
    return out


def _kth_threshold(values: np.ndarray, sparsity: float) -> tuple[float, int]:
    k = int(round(sparsity * values.size))
    if k <= 0:
        return -1.0, 0
    return float(np.partition(values, k - 1)[k - 1]), k


def magnitude_prune(graph: Graph, sparsity: float = 0.7, scope: str = "layer",
                    layers: list[str] | None = None) -> tuple[Graph, dict]:
    """Zero the smallest-magnitude weights in place; returns ``(graph, stats)``."""
    if not 0.0 <= sparsity < 1.0:
        raise PruningError(f"magnitude-prune: sparsity={sparsity!r} must be in [0, 1)")
    if scope not in ("layer", "global"):
        raise PruningError(f"magnitude-prune: scope '{scope}' must be layer or global")
    nodes = weight_layers(graph, layers)
    masks: dict[int, np.ndarray] = {}
    if scope == "global" and nodes:
        mags = np.concatenate([np.abs(n.inputs[1].const).ravel() for n in nodes])
        thr, k = _kth_threshold(mags, sparsity)
        # exactly k weights: ties at the threshold are broken by position
        flat_keep = np.ones(mags.size, dtype=bool)
        if k:
            flat_keep[np.argsort(mags, kind="stable")[:k]] = False
        offset = 0
        for n in nodes:
            size = n.inputs[1].const.size
            masks[id(n)] = flat_keep[offset:offset + size].reshape(n.inputs[1].const.shape)
            offset += size
    else:
        for n in nodes:
            mags = np.abs(n.inputs[1].const).ravel()
            _, k = _kth_threshold(mags, sparsity)
            keep = np.ones(mags.size, dtype=bool)
            if k:
                keep[np.argsort(mags, kind="stable")[:k]] = False
            masks[id(n)] = keep.reshape(n.inputs[1].const.shape)
    per_layer, zeros, total = {}, 0, 0
    changed = False
    for n in nodes:
        w = n.inputs[1]
        new = np.where(masks[id(n)], w.const, np.zeros((), w.const.dtype)).astype(w.const.dtype)
        if not np.array_equal(new, w.const):
            changed = True
            name = w.name
            const = graph.add_constant(name, new)
            n.set_input(1, const)
            if not w.uses and not w.is_graph_output:
                graph.remove_value(w)
                graph.rename_value(const, name)
        z = int(np.count_nonzero(n.inputs[1].const == 0))
        per_layer[n.name] = round(z / n.inputs[1].const.size, 4)
        zeros += z
        total += n.inputs[1].const.size
    stats = {"scope": scope, "sparsity": round(zeros / total, 4) if total else 0.0,
             "layers": per_layer, "changed": changed}
    return graph, stats


@register_pass("magnitude-prune")
@dataclass
class MagnitudePrune(Pass):
    """Unstructured magnitude pruning: zero the smallest weights (per layer or global)."""

    sparsity: float = 0.7
    scope: Literal["layer", "global"] = "layer"
    layers: list[str] = field(default_factory=list)
    exact = False

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.sparsity) < 1.0:
            raise PruningError(f"magnitude-prune: sparsity={self.sparsity!r} must be in [0, 1)")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        graph, stats = magnitude_prune(graph, float(self.sparsity), self.scope,
                                       list(self.layers) or None)
        changed = stats.pop("changed")
        return PassResult(graph, changed, stats)
