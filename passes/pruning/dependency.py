"""Channel dependency analysis: which channels of which tensors must be removed together.

The unit of the analysis is a *channel atom* ``(value, index)``: one channel of one
activation tensor along that tensor's channel axis.  Every op type has a `ChannelHandler`
that, in ``propagate``, ties atoms of its inputs and outputs together with a union-find
(``dep.union``).  A connected set of atoms is a `Component`: removing one atom forces
removing all of them, and a component is removed as a whole.  Examples:

* Conv (group=1): output channel ``j`` is a *filter* (``W[j]``) -- a fresh atom; input
  channels are read through ``W[:, i]`` and couple with nothing.
* Depthwise / grouped Conv: all input and output channels of one conv group are joined,
  so a whole group (``Cin/g`` inputs, ``Cout/g`` outputs) goes or stays -- the group count
  drops, group sizes never change (Torch-Pruning's weak spot: it slices groups unevenly).
* BatchNormalization, activations, Clip, pools, Resize, Pad, Transpose: channel ``j`` in
  is channel ``j`` out.
* Add/Sub/Mul/Div/Max/Min (numpy broadcasting): inputs whose channel dimension is not 1
  are joined channel by channel -- residual adds and squeeze-excitation gates
  (``x * sigmoid(conv(gap(x)))``) fall out of this one rule; a constant operand of
  shape ``(C,1,1)`` is sliced on rewrite.
* Concat along the channel axis: input ``k`` channel ``j`` is output channel
  ``offset_k + j`` (the same tensor concatenated twice simply has two atoms in the
  output per input channel, so both copies are removed together).
* Split along the channel axis: the inverse mapping; the ``split`` sizes are rewritten.
* Flatten (and a flattening Reshape) -> Gemm: channel ``c`` becomes features
  ``c*H*W .. c*H*W + H*W - 1``; Gemm's output features are filters (rows of ``B``).

A component is *prunable* when it holds at least one filter and no *blocked* atom.
Atoms are blocked on graph inputs and outputs (shapes the user sees never change), on
the outputs of protected layers, and on every input of an op that has no handler (or
a handler that cannot deal with this instance, e.g. Softmax over channels): such groups
are skipped with a warning and counted in the stats, never rewritten into an invalid
graph.

Components with the same *signature* (the same set of tensors they touch) are parallel
channels of the same structure; they form a `PruningGroup`, the unit a ratio applies to
(e.g. the 16 channels shared by a residual stage, or the 8 filters of one branch conv).

Register a handler for a custom op in one place::

    from passes.pruning.dependency import ChannelHandler, register_handler

    @register_handler("MyScale")
    class MyScaleHandler(ChannelHandler):
        def propagate(self, node, dep):        # channel j in -> channel j out
            dep.same_channels(node.inputs[0], node.outputs[0])
        def apply(self, node, rw):             # slice its per-channel constant
            rw.slice_const(node, 1, axis=0, keep=rw.keep(node.inputs[0]))
"""
from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops.registry import ops_with
from compiler.pass_manager import PassOptionError

__all__ = ["ChannelHandler", "register_handler", "get_handler", "HANDLERS", "DependencyGraph",
           "Component", "PruningGroup", "Rewriter", "PruningError", "analyze",
           "match_layers"]

log = logging.getLogger("compiler.passes.pruning")


class PruningError(PassOptionError):
    """A pruning request that cannot be honoured (unknown layer, bad ratio, ...)."""


# --------------------------------------------------------------------------- registry

class ChannelHandler:
    """How one op type couples channels (`propagate`) and is rewritten (`apply`).

    ``propagate(node, dep)`` runs in topological order; inputs already carry their channel
    axis (``dep.axis(value)``, None when untracked).  It must either track the node's
    outputs and join atoms, or call ``dep.block_node(node, reason)``.
    ``apply(node, rw)`` runs in topological order after the selection; inputs already have
    their new shapes.  It slices the node's constant operands and fixes attributes; output
    types are re-inferred afterwards.  ``filter_weights(node, j)`` returns the weights that
    compute output channel ``j`` when the node is a filter producer.
    """

    def propagate(self, node: Node, dep: "DependencyGraph") -> None:
        raise NotImplementedError

    def apply(self, node: Node, rw: "Rewriter") -> None:
        pass

    def filter_weights(self, node: Node, channel: int) -> np.ndarray:
        raise NotImplementedError(f"{node.op_type} produces no filters")


HANDLERS: dict[str, ChannelHandler] = {}


def register_handler(*op_types: str) -> Callable:
    """Class decorator (or call with an instance): handler for ``op_types``."""

    def decorate(cls_or_obj):
        obj = cls_or_obj() if isinstance(cls_or_obj, type) else cls_or_obj
        for op in op_types:
            HANDLERS[op] = obj
        return cls_or_obj

    return decorate


def get_handler(node: Node) -> ChannelHandler | None:
    return HANDLERS.get(node.op_type) if not node.domain else HANDLERS.get(
        f"{node.domain}.{node.op_type}")


# --------------------------------------------------------------------------- structures

@dataclass
class Component:
    """Atoms that are removed together, the filters that compute them, and why not."""

    index: int
    atoms: list[tuple[Value, int]] = field(default_factory=list)
    filters: list[tuple[Node, int]] = field(default_factory=list)
    bn: list[tuple[Node, int]] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)

    @property
    def prunable(self) -> bool:
        return bool(self.filters) and not self.blocked


@dataclass
class PruningGroup:
    """Parallel components of the same structure: the unit a pruning ratio applies to."""

    name: str
    layers: list[str]
    components: list[Component]
    values: list[str]

    @property
    def size(self) -> int:
        return len(self.components)

    @property
    def blocked(self) -> list[str]:
        reasons: set[str] = set()
        for c in self.components:
            reasons |= c.blocked
        if not any(c.filters for c in self.components):
            reasons.add("no filter computes these channels (graph input or constant)")
        return sorted(reasons)

    @property
    def prunable(self) -> bool:
        return all(c.prunable for c in self.components) and self.size > 1

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else "blocked: " + "; ".join(self.blocked)
        return f"PruningGroup({self.name!r}, {self.size} channels, layers={self.layers}, {state})"


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, n: int) -> int:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return start

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


# --------------------------------------------------------------------------- analysis

class DependencyGraph:
    """Channel atoms of a graph, their coupling, and the resulting pruning groups."""

    def __init__(self, graph: Graph, *, protect: Iterable[str] = (),
                 handlers: dict[str, ChannelHandler] | None = None):
        self.graph = graph
        self.handlers = HANDLERS if handlers is None else handlers
        self._uf = _UnionFind()
        self._axis: dict[int, int] = {}
        self._base: dict[int, int] = {}
        self._values: dict[int, Value] = {}
        self._blocked: dict[int, str] = {}          # atom -> reason
        self._filters: list[tuple[int, Node, int]] = []
        self._bn: list[tuple[int, Node, int]] = []
        self.skipped_ops: dict[str, int] = {}       # op type -> nodes that blocked pruning
        self.warnings: list[str] = []
        self.protected_nodes = match_layers(graph, protect, what="protect") if protect else []
        self._run()

    # -- API for handlers --------------------------------------------------------------
    def axis(self, value: Value | None) -> int | None:
        """The tracked channel axis of ``value`` (None: untracked or a constant)."""
        return None if value is None else self._axis.get(id(value))

    def channels(self, value: Value) -> int:
        return int(value.shape[self._axis[id(value)]])

    def track(self, value: Value, axis: int) -> None:
        """Give ``value`` fresh, independent atoms along ``axis``."""
        if id(value) in self._axis or value.shape is None:
            return
        axis = axis % len(value.shape)
        self._axis[id(value)] = axis
        self._values[id(value)] = value
        self._base[id(value)] = self._uf.add(int(value.shape[axis]))

    def atom(self, value: Value, index: int) -> int:
        return self._base[id(value)] + int(index)

    def union(self, a: Value, i: int, b: Value, j: int) -> None:
        self._uf.union(self.atom(a, i), self.atom(b, j))

    def same_channels(self, src: Value, dst: Value, dst_axis: int | None = None) -> None:
        """Track ``dst`` like ``src`` (same channel count) and join them 1:1."""
        axis = self.axis(src)
        if axis is None:
            return
        self.track(dst, axis if dst_axis is None else dst_axis)
        if self.channels(src) != self.channels(dst):
            self.block(src, f"channel count changes from {src.name} to {dst.name}")
            self.block(dst, f"channel count changes from {src.name} to {dst.name}")
            return
        for j in range(self.channels(src)):
            self.union(src, j, dst, j)

    def add_filter(self, value: Value, index: int, node: Node) -> None:
        """Channel ``index`` of ``value`` is computed by weights of ``node`` (a filter)."""
        self._filters.append((self.atom(value, index), node, index))

    def add_bn(self, value: Value, index: int, node: Node) -> None:
        """Channel ``index`` of ``value`` is scaled by BatchNormalization ``node``."""
        self._bn.append((self.atom(value, index), node, index))

    def block(self, value: Value | None, reason: str, indices: Iterable[int] | None = None) -> None:
        """Forbid removing channels of ``value`` (all of them by default)."""
        if value is None or id(value) not in self._axis:
            return
        for j in (range(self.channels(value)) if indices is None else indices):
            self._blocked.setdefault(self.atom(value, j), reason)

    def block_node(self, node: Node, reason: str) -> None:
        """Give up on ``node``: none of its tracked inputs or outputs may change."""
        self.skipped_ops[node.op_type] = self.skipped_ops.get(node.op_type, 0) + 1
        msg = f"node '{node.name}' ({node.op_type}): {reason}"
        self.warnings.append(msg)
        for v in (*node.inputs, *node.outputs):
            self.block(v, msg)

    # -- the walk -----------------------------------------------------------------------
    def _run(self) -> None:
        graph = self.graph
        for value in graph.inputs:
            if value.shape is not None and len(value.shape) >= 2:
                self.track(value, 1)
                self.block(value, f"graph input '{value.name}'")
        protected = {id(n) for n in self.protected_nodes}
        for node in graph.topo_order():
            handler = self.handlers.get(node.op_type if not node.domain
                                        else f"{node.domain}.{node.op_type}")
            if handler is None:
                if any(self.axis(v) is not None for v in node.inputs):
                    self.block_node(node, f"no pruning handler for op type '{node.op_type}'; "
                                    "register one with passes.pruning.register_handler")
                continue
            handler.propagate(node, self)
            if id(node) in protected:
                for out in node.outputs:
                    self.block(out, f"protected layer '{node.name}'")
        for value in graph.outputs:
            self.block(value, f"graph output '{value.name}'")
        for msg in self.warnings:
            log.warning("pruning: %s", msg)
        self.components, self.groups = self._build_groups()

    def _build_groups(self) -> tuple[list[Component], list[PruningGroup]]:
        by_root: dict[int, Component] = {}
        comps: list[Component] = []

        def comp(atom: int) -> Component:
            root = self._uf.find(atom)
            if root not in by_root:
                by_root[root] = Component(len(comps))
                comps.append(by_root[root])
            return by_root[root]

        for vid, value in sorted(self._values.items(), key=lambda kv: self._base[kv[0]]):
            base = self._base[vid]
            for j in range(self.channels(value)):
                c = comp(base + j)
                c.atoms.append((value, j))
                reason = self._blocked.get(base + j)
                if reason:
                    c.blocked.add(reason)
        for atom, node, j in self._filters:
            comp(atom).filters.append((node, j))
        for atom, node, j in self._bn:
            comp(atom).bn.append((node, j))
        order = {id(n): i for i, n in enumerate(self.graph.topo_order())}
        sigs: dict[tuple, list[Component]] = {}
        for c in comps:
            sig = tuple(sorted({id(v) for v, _ in c.atoms}))
            sigs.setdefault(sig, []).append(c)
        groups = []
        for members in sigs.values():
            layer_nodes = {id(n): n for c in members for n, _ in c.filters}
            layers = [n.name for n in sorted(layer_nodes.values(), key=lambda n: order[id(n)])]
            values = list(dict.fromkeys(v.name for v, _ in members[0].atoms))
            name = layers[0] if layers else values[0]
            groups.append(PruningGroup(name, layers, members, values))

        def first(g: PruningGroup) -> int:
            return min((order[id(n)] for c in g.components for n, _ in c.filters),
                       default=len(order))

        groups.sort(key=lambda g: (first(g), g.name))
        return comps, groups

    # -- queries -------------------------------------------------------------------------
    @property
    def prunable_groups(self) -> list[PruningGroup]:
        return [g for g in self.groups if g.prunable]

    def group_of(self, layer: str) -> PruningGroup:
        for g in self.groups:
            if layer in g.layers:
                return g
        raise PruningError(f"layer '{layer}' computes no prunable channels")

    def summary(self) -> str:
        lines = []
        for g in self.groups:
            if not any(c.filters for c in g.components):
                continue
            lines.append(repr(g))
        return "\n".join(lines)


def analyze(graph: Graph, protect: Iterable[str] = ()) -> DependencyGraph:
    """Channel dependency analysis of ``graph`` (see the module docstring)."""
    return DependencyGraph(graph, protect=protect)


def match_layers(graph: Graph, patterns: Iterable[str], *, what: str = "layers") -> list[Node]:
    """Nodes whose name (or output name) matches one of ``patterns`` (fnmatch globs).

    A pattern that matches nothing is an error naming it and a few valid names.
    """
    nodes = graph.topo_order()
    found: dict[int, Node] = {}
    for pattern in patterns:
        hits = [n for n in nodes if fnmatch.fnmatchcase(n.name, pattern)
                or any(fnmatch.fnmatchcase(o.name, pattern) for o in n.outputs)]
        if not hits:
            weight_ops = ops_with("weight_layer", domain="")
            convs = [n.name for n in nodes if not n.domain and n.op_type in weight_ops]
            raise PruningError(f"{what}: no layer named '{pattern}' in graph '{graph.name}'; "
                               f"layers with filters: {', '.join(convs[:8])}"
                               f"{' ...' if len(convs) > 8 else ''}")
        for n in hits:
            found.setdefault(id(n), n)
    return list(found.values())


# --------------------------------------------------------------------------- rewriting

class Rewriter:
    """Applies a channel selection: ``keep(value)`` are the surviving channel indices."""

    def __init__(self, dep: DependencyGraph, remove: Iterable[Component]):
        self.dep = dep
        self.graph = dep.graph
        removed: dict[int, set[int]] = {}
        for c in remove:
            for v, j in c.atoms:
                removed.setdefault(id(v), set()).add(j)
        self._keep: dict[int, np.ndarray] = {}
        self._old: dict[int, int] = {}
        for vid, idx in removed.items():
            value = dep._values[vid]
            n = dep.channels(value)
            self._old[vid] = n
            self._keep[vid] = np.array([j for j in range(n) if j not in idx], dtype=np.int64)
        self._renames: list[tuple[Value, str]] = []

    def keep(self, value: Value | None) -> np.ndarray | None:
        """Surviving channel indices of ``value``, or None when it keeps all of them."""
        return None if value is None else self._keep.get(id(value))

    def old_channels(self, value: Value) -> int:
        """Channel count of ``value`` before pruning (0 if it is not tracked)."""
        if id(value) in self._old:
            return self._old[id(value)]
        return self.dep.channels(value) if self.dep.axis(value) is not None else 0

    def axis(self, value: Value) -> int | None:
        return self.dep.axis(value)

    def set_const(self, node: Node, index: int, array: np.ndarray) -> None:
        """Give input ``index`` of ``node`` a fresh constant (shared ones stay intact)."""
        old = node.inputs[index]
        name = old.name if old is not None else f"{node.name}_in{index}"
        new = self.graph.add_constant(name, np.ascontiguousarray(array))
        node.set_input(index, new)
        if old is not None:
            self._renames.append((new, name))

    def slice_const(self, node: Node, index: int, axis: int, keep: np.ndarray | None) -> None:
        """Keep ``keep`` along ``axis`` of constant input ``index`` (no-op for None)."""
        value = node.inputs[index] if index < len(node.inputs) else None
        if keep is None or value is None or value.const is None:
            return
        self.set_const(node, index, np.take(value.const, keep, axis=axis))

    def finish(self) -> None:
        """Drop the replaced constants and give the new ones their old names back."""
        self.graph.remove_unused()
        for value, name in self._renames:
            if value.graph is self.graph and value.name != name \
                    and self.graph.unique_name(name) == name:
                self.graph.rename_value(value, name)


def apply_selection(dep: DependencyGraph, remove: list[Component]) -> Graph:
    """Remove the channels of ``remove`` from ``dep.graph`` in place; returns the graph."""
    from compiler.folding import infer_node

    rw = Rewriter(dep, remove)
    graph = dep.graph
    for node in graph.topo_order():
        if any(rw.keep(v) is not None for v in (*node.inputs, *node.outputs)):
            handler = dep.handlers.get(node.op_type)
            if handler is None:  # cannot happen: such atoms are blocked
                raise PruningError(f"internal: node '{node.name}' ({node.op_type}) would change "
                                   "but has no pruning handler")
            handler.apply(node, rw)
        infer_node(node)
    rw.finish()
    for node in graph.topo_order():
        infer_node(node)
    return graph

from . import handlers as _handlers  # noqa: E402,F401  (registers the built-in handlers)
