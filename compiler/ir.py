"""The graph IR every pass and backend works on.

A `Graph` holds `Node`s (operations) and `Value`s (tensors).  The topology lives in
one place only: a networkx ``MultiDiGraph`` whose vertices are the nodes and values
of the graph, with an edge ``value -> node`` keyed ``("in", i)`` for each input slot
and an edge ``node -> value`` keyed ``("out", i)`` for each output.  A node's input
list, a value's producer and its uses are all *derived* from those edges, so they can
never drift apart (the failure mode of IRs that keep both a list and back-pointers).

Semantics of an op are those of ONNX opset 17 (see ``compiler/ops``) with every
attribute explicit; weights are numpy arrays on constant values; quantized values
carry their fixed-point parameters as data (`QuantParams`).

The use-def API follows onnx-ir: ``value.producer``, ``value.uses``,
``graph.replace_all_uses_with``, ``graph.remove(node, safe=True)``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import networkx as nx
import numpy as np

Shape = tuple[int, ...]

__all__ = ["Graph", "Node", "Value", "QuantParams", "IRError", "Shape"]


class IRError(ValueError):
    """A structural problem in a graph: a broken edge, a name clash, a cycle."""


@dataclass
class QuantParams:
    """Fixed-point parameters of a quantized tensor: ``real = scale * (q - zero_point)``.

    ``scale`` and ``zero_point`` are scalars (per-tensor) or 1-D arrays along ``axis``
    (per-channel).  ``bits`` is the number of bits actually used by the values, which
    may be smaller than the storage type (e.g. 4-bit values in an int8 container).
    """

    bits: int
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    signed: bool = True

    def copy(self) -> "QuantParams":
        return QuantParams(self.bits, np.array(self.scale, copy=True),
                           np.array(self.zero_point, copy=True), self.axis, self.signed)


_order = itertools.count()


class Value:
    """A tensor: a graph input, a constant (weight) or the output of a node."""

    __slots__ = ("name", "shape", "dtype", "_const", "quant", "graph", "_order", "meta")

    def __init__(self, name: str, shape: Sequence[int] | None = None, dtype: Any = None,
                 const: np.ndarray | None = None, quant: QuantParams | None = None):
        self.name = name
        self.shape: Shape | None = tuple(int(d) for d in shape) if shape is not None else None
        self.dtype: np.dtype | None = np.dtype(dtype) if dtype is not None else None
        self._const: np.ndarray | None = None
        self.quant = quant
        self.graph: Graph | None = None
        self._order = next(_order)
        self.meta: dict[str, Any] = {}
        if const is not None:
            self.const = const

    # -- constant data ---------------------------------------------------------
    @property
    def const(self) -> np.ndarray | None:
        """The value's data if it is a constant (a weight), else None."""
        return self._const

    @const.setter
    def const(self, array: np.ndarray | None) -> None:
        if array is None:
            self._const = None
            return
        array = np.asarray(array)
        self._const = array
        self.shape = tuple(int(d) for d in array.shape)
        self.dtype = array.dtype

    @property
    def is_constant(self) -> bool:
        return self._const is not None

    # -- use-def ---------------------------------------------------------------
    @property
    def producer(self) -> "Node | None":
        """The node that computes this value; None for graph inputs and constants."""
        if self.graph is None:
            return None
        for node, _, _ in self.graph._g.in_edges(self, keys=True):
            return node
        return None

    @property
    def producer_index(self) -> int | None:
        if self.graph is None:
            return None
        for _, _, key in self.graph._g.in_edges(self, keys=True):
            return key[1]
        return None

    @property
    def uses(self) -> list[tuple["Node", int]]:
        """Every ``(node, input_index)`` that reads this value, in a stable order."""
        if self.graph is None:
            return []
        found = [(node, key[1]) for _, node, key in self.graph._g.out_edges(self, keys=True)]
        return sorted(found, key=lambda use: (use[0]._order, use[1]))

    @property
    def consumers(self) -> list["Node"]:
        """Distinct nodes that read this value, in a stable order."""
        seen: dict[int, Node] = {}
        for node, _ in self.uses:
            seen.setdefault(id(node), node)
        return list(seen.values())

    @property
    def is_graph_input(self) -> bool:
        return self.graph is not None and any(v is self for v in self.graph.inputs)

    @property
    def is_graph_output(self) -> bool:
        return self.graph is not None and any(v is self for v in self.graph.outputs)

    @property
    def size(self) -> int:
        """Number of elements (needs a known shape)."""
        if self.shape is None:
            raise IRError(f"value '{self.name}' has no known shape")
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * (self.dtype.itemsize if self.dtype is not None else 4)

    def type_str(self) -> str:
        dtype = _DTYPE_SHORT.get(self.dtype, str(self.dtype)) if self.dtype is not None else "?"
        shape = ",".join(str(d) for d in self.shape) if self.shape is not None else "?"
        text = f"{dtype}[{shape}]"
        if self.quant is not None:
            text += f"<q{self.quant.bits}{'' if self.quant.axis is None else f'@{self.quant.axis}'}>"
        return text

    def __repr__(self) -> str:
        return f"Value(%{self.name}: {self.type_str()})"


_DTYPE_SHORT = {np.dtype(k): v for k, v in {
    "float32": "f32", "float64": "f64", "float16": "f16", "int8": "i8", "uint8": "u8",
    "int16": "i16", "uint16": "u16", "int32": "i32", "uint32": "u32", "int64": "i64",
    "uint64": "u64", "bool": "bool"}.items()}


class Node:
    """One operation.  Inputs and outputs are read from the owning graph's edges."""

    __slots__ = ("op_type", "name", "attrs", "domain", "graph", "_order", "_num_inputs", "meta")

    def __init__(self, op_type: str, name: str, attrs: dict[str, Any] | None = None,
                 domain: str = ""):
        self.op_type = op_type
        self.name = name
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.domain = domain
        self.graph: Graph | None = None
        self._order = next(_order)
        self._num_inputs = 0
        self.meta: dict[str, Any] = {}

    @property
    def inputs(self) -> tuple[Value | None, ...]:
        """Input values by slot; None marks an omitted optional input."""
        slots: list[Value | None] = [None] * self._num_inputs
        if self.graph is not None:
            for value, _, key in self.graph._g.in_edges(self, keys=True):
                slots[key[1]] = value
        return tuple(slots)

    @property
    def outputs(self) -> tuple[Value, ...]:
        if self.graph is None:
            return ()
        found = sorted((key[1], value) for _, value, key in
                       ((u, v, k) for u, v, k in self.graph._g.out_edges(self, keys=True)))
        return tuple(value for _, value in found)

    @property
    def output(self) -> Value:
        """The single output of a one-output node."""
        outs = self.outputs
        if len(outs) != 1:
            raise IRError(f"node '{self.name}' ({self.op_type}) has {len(outs)} outputs, not 1")
        return outs[0]

    def input(self, index: int) -> Value | None:
        inputs = self.inputs
        return inputs[index] if index < len(inputs) else None

    def set_input(self, index: int, value: Value | None) -> None:
        """Rewire input slot ``index`` (growing the slot list if needed)."""
        graph = self._graph()
        if value is not None:
            graph._check_owned(value)
        for src, _, key in list(graph._g.in_edges(self, keys=True)):
            if key[1] == index:
                graph._g.remove_edge(src, self, key)
        self._num_inputs = max(self._num_inputs, index + 1)
        if value is not None:
            graph._g.add_edge(value, self, key=("in", index))
        graph._touch()

    def set_inputs(self, values: Sequence[Value | None]) -> None:
        graph = self._graph()
        for src, _, key in list(graph._g.in_edges(self, keys=True)):
            graph._g.remove_edge(src, self, key)
        self._num_inputs = 0
        for index, value in enumerate(values):
            self.set_input(index, value)
        self._num_inputs = len(values)

    def _graph(self) -> "Graph":
        if self.graph is None:
            raise IRError(f"node '{self.name}' is not in a graph")
        return self.graph

    def __repr__(self) -> str:
        return f"Node({self.op_type} '{self.name}')"


class Graph:
    """A dataflow graph of nodes and values with an explicit use-def API."""

    def __init__(self, name: str = "main"):
        self.name = name
        self._g = nx.MultiDiGraph()
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self._values_by_name: dict[str, Value] = {}
        self._nodes_by_name: dict[str, Node] = {}
        self._value_names = _NameCounter(self._values_by_name)
        self._node_names = _NameCounter(self._nodes_by_name)
        self.opset: int = 17
        self.meta: dict[str, Any] = {}
        self.version = 0  # bumped on every structural change; analyses key their caches on it
        # (version, nodes in topological order), (version, values in creation order)
        self._topo_cache: tuple[int, list[Node]] | None = None
        self._values_cache: tuple[int, list[Value]] | None = None

    def _touch(self) -> None:
        self.version += 1

    # -- naming ----------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        """A value name not yet used in this graph, derived from ``base``."""
        return self._value_names.fresh(base or "v")

    def _unique_node_name(self, base: str) -> str:
        return self._node_names.fresh(base)

    def _check_owned(self, value: Value) -> None:
        if value.graph is not self:
            raise IRError(f"value '{value.name}' does not belong to graph '{self.name}'")

    def _adopt_value(self, value: Value) -> Value:
        if value.graph is not None:
            raise IRError(f"value '{value.name}' already belongs to a graph")
        if value.name in self._values_by_name:
            raise IRError(f"duplicate value name '{value.name}'")
        value.graph = self
        self._values_by_name[value.name] = value
        self._g.add_node(value)
        self._touch()
        return value

    # -- construction ----------------------------------------------------------
    def add_input(self, name: str, shape: Sequence[int] | None, dtype: Any = np.float32) -> Value:
        value = self._adopt_value(Value(name, shape, dtype))
        self.inputs.append(value)
        self._touch()
        return value

    def add_constant(self, name: str, array: np.ndarray, *, unique: bool = True) -> Value:
        """A constant value (weight); ``unique`` renames on a clash instead of failing."""
        name = self.unique_name(name) if unique else name
        value = self._adopt_value(Value(name, const=np.asarray(array)))
        self._touch()
        return value

    def add_node(self, op_type: str, inputs: Sequence[Value | None],
                 attrs: dict[str, Any] | None = None, *, num_outputs: int = 1,
                 name: str | None = None, output_names: Sequence[str] | None = None,
                 domain: str = "") -> Node:
        """Create a node reading ``inputs`` and producing fresh output values."""
        node = Node(op_type, self._unique_node_name(name or op_type), attrs, domain)
        node.graph = self
        self._nodes_by_name[node.name] = node
        self._g.add_node(node)
        for index, value in enumerate(inputs):
            if value is not None:
                self._check_owned(value)
                self._g.add_edge(value, node, key=("in", index))
        node._num_inputs = len(inputs)
        names = list(output_names) if output_names is not None else [
            f"{node.name}_out{i}" if num_outputs > 1 else f"{node.name}_out"
            for i in range(num_outputs)]
        for index, out_name in enumerate(names):
            out = self._adopt_value(Value(self.unique_name(out_name)))
            self._g.add_edge(node, out, key=("out", index))
        self._touch()
        return node

    def op(self, op_type: str, *inputs: Value | None, name: str | None = None,
           **attrs: Any) -> Value:
        """Shorthand for one-output nodes: ``y = g.op("Relu", x)``."""
        return self.add_node(op_type, inputs, attrs, name=name).output

    # -- queries ---------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        """All nodes in deterministic topological order."""
        return self.topo_order()

    @property
    def values(self) -> list[Value]:
        """All values in creation order (a fresh list; cached until the graph changes)."""
        if self._values_cache is None or self._values_cache[0] != self.version:
            order = sorted(self._values_by_name.values(), key=lambda v: v._order)
            self._values_cache = (self.version, order)
        return list(self._values_cache[1])

    @property
    def constants(self) -> list[Value]:
        return [v for v in self.values if v.is_constant]

    def __len__(self) -> int:
        return len(self._nodes_by_name)

    def __contains__(self, item: object) -> bool:
        return item in self._g

    def node(self, name: str) -> Node:
        try:
            return self._nodes_by_name[name]
        except KeyError:
            raise KeyError(f"no node named '{name}' in graph '{self.name}'") from None

    def value(self, name: str) -> Value:
        try:
            return self._values_by_name[name]
        except KeyError:
            raise KeyError(f"no value named '{name}' in graph '{self.name}'") from None

    def find(self, op_type: str) -> list[Node]:
        return [n for n in self.topo_order() if n.op_type == op_type]

    def topo_order(self) -> list[Node]:
        """Nodes in topological order; ties broken by creation order, so it is stable.

        The order is computed once per graph version (every structural change bumps
        ``version``), and a fresh list is returned so callers may edit while iterating.
        """
        if self._topo_cache is None or self._topo_cache[0] != self.version:
            try:
                order = nx.lexicographical_topological_sort(self._g, key=lambda v: v._order)
                nodes = [v for v in order if isinstance(v, Node)]
            except nx.NetworkXUnfeasible as exc:
                raise IRError(f"graph '{self.name}' has a cycle") from exc
            self._topo_cache = (self.version, nodes)
        return list(self._topo_cache[1])

    # -- mutation --------------------------------------------------------------
    def replace_all_uses_with(self, old: Value, new: Value) -> int:
        """Point every use of ``old`` (and graph-output slots) at ``new``; returns the count."""
        self._check_owned(old)
        self._check_owned(new)
        if old is new:
            return 0
        uses = old.uses
        for node, index in uses:
            self._g.remove_edge(old, node, ("in", index))
            self._g.add_edge(new, node, key=("in", index))
        count = len(uses)
        for i, out in enumerate(self.outputs):
            if out is old:
                self.outputs[i] = new
                count += 1
        self._touch()
        return count

    def remove(self, node: Node, safe: bool = True) -> None:
        """Delete ``node`` and its outputs.

        With ``safe`` (the default) it refuses when an output is still used or is a
        graph output, so a pass cannot silently leave dangling references behind.
        """
        if node.graph is not self:
            raise IRError(f"node '{node.name}' is not in graph '{self.name}'")
        outputs = node.outputs
        if safe:
            for out in outputs:
                if out.uses:
                    users = ", ".join(sorted({n.name for n, _ in out.uses}))
                    raise IRError(f"cannot remove node '{node.name}': output '{out.name}' "
                                  f"is still used by {users}")
                if out.is_graph_output:
                    raise IRError(f"cannot remove node '{node.name}': output '{out.name}' "
                                  "is a graph output")
        for out in outputs:
            self._drop_value(out)
        self._g.remove_node(node)
        self._node_names.discard(node.name)
        node.graph = None
        self._touch()

    def remove_value(self, value: Value) -> None:
        """Delete an unused constant or graph input."""
        self._check_owned(value)
        if value.uses or value.is_graph_output or value.producer is not None:
            raise IRError(f"cannot remove value '{value.name}': it is still connected")
        self.inputs = [v for v in self.inputs if v is not value]
        self._drop_value(value)
        self._touch()

    def _drop_value(self, value: Value) -> None:
        self._g.remove_node(value)
        self._value_names.discard(value.name)
        value.graph = None
        self._touch()

    def rename_value(self, value: Value, name: str) -> None:
        self._check_owned(value)
        if name == value.name:
            return
        if name in self._values_by_name:
            raise IRError(f"duplicate value name '{name}'")
        self._value_names.discard(value.name)
        value.name = name
        self._values_by_name[name] = value
        self._touch()

    def remove_unused(self) -> int:
        """Dead-code elimination: nodes whose outputs reach no graph output, and unused constants."""
        live: set[int] = set()
        stack = list(self.outputs)
        while stack:
            value = stack.pop()
            if id(value) in live:
                continue
            live.add(id(value))
            producer = value.producer
            if producer is not None:
                for out in producer.outputs:
                    live.add(id(out))
                stack.extend(v for v in producer.inputs if v is not None)
        removed = 0
        for node in reversed(self.topo_order()):
            if not any(id(out) in live for out in node.outputs):
                self.remove(node, safe=False)
                removed += 1
        for value in self.values:
            if value.is_constant and not value.uses and not value.is_graph_output:
                self._drop_value(value)
                removed += 1
        if removed:
            self._touch()
        return removed

    # -- checks ----------------------------------------------------------------
    def verify(self, *, require_types: bool = False) -> None:
        """Raise `IRError` if the graph is malformed."""
        if not nx.is_directed_acyclic_graph(self._g):
            raise IRError(f"graph '{self.name}' has a cycle")
        names: set[str] = set()
        for vertex in self._g.nodes:
            if isinstance(vertex, Value):
                if vertex.graph is not self:
                    raise IRError(f"value '{vertex.name}' has a wrong owner")
                if vertex.name in names:
                    raise IRError(f"duplicate value name '{vertex.name}'")
                names.add(vertex.name)
                producers = list(self._g.in_edges(vertex, keys=True))
                if len(producers) > 1:
                    raise IRError(f"value '{vertex.name}' has {len(producers)} producers")
                if not producers and not vertex.is_constant and not vertex.is_graph_input:
                    raise IRError(f"value '{vertex.name}' has no producer and is neither "
                                  "a graph input nor a constant")
                if producers and (vertex.is_constant or vertex.is_graph_input):
                    raise IRError(f"value '{vertex.name}' is produced by a node but is also "
                                  "a constant or graph input")
                if require_types and (vertex.shape is None or vertex.dtype is None):
                    raise IRError(f"value '{vertex.name}' has no inferred type")
            elif isinstance(vertex, Node):
                if vertex.graph is not self:
                    raise IRError(f"node '{vertex.name}' has a wrong owner")
                slots = [key[1] for _, _, key in self._g.in_edges(vertex, keys=True)]
                if len(slots) != len(set(slots)) or any(s >= vertex._num_inputs for s in slots):
                    raise IRError(f"node '{vertex.name}' has inconsistent input slots")
                outs = sorted(key[1] for _, _, key in self._g.out_edges(vertex, keys=True))
                if outs != list(range(len(outs))):
                    raise IRError(f"node '{vertex.name}' has inconsistent output slots")
            else:
                raise IRError(f"foreign object {vertex!r} in graph")
        for value in self.inputs + self.outputs:
            if value.graph is not self:
                raise IRError(f"graph input/output '{value.name}' is not in the graph")

    # -- copying ---------------------------------------------------------------
    def clone(self) -> "Graph":
        """A deep copy: new nodes and values, copied constant arrays and attributes."""
        other = Graph(self.name)
        other.opset = self.opset
        other.meta = _deepcopy(self.meta)
        mapping: dict[int, Value] = {}

        def copy_value(value: Value) -> Value:
            new = Value(value.name, value.shape, value.dtype,
                        None if value.const is None else np.array(value.const, copy=True),
                        value.quant.copy() if value.quant is not None else None)
            new.meta = _deepcopy(value.meta)
            other._adopt_value(new)
            mapping[id(value)] = new
            return new

        for value in self.values:
            if value.producer is None:
                copy_value(value)
        other.inputs = [mapping[id(v)] for v in self.inputs]
        for node in self.topo_order():
            new_node = other.add_node(node.op_type, [None if v is None else mapping[id(v)]
                                                    for v in node.inputs],
                                      _deepcopy(node.attrs), num_outputs=0, name=node.name,
                                      domain=node.domain)
            new_node.meta = _deepcopy(node.meta)
            for index, out in enumerate(node.outputs):
                new_out = copy_value(out)
                other._g.add_edge(new_node, new_out, key=("out", index))
                other._touch()
        other.outputs = [mapping[id(v)] for v in self.outputs]
        return other

    # -- printing --------------------------------------------------------------
    def to_text(self, *, show_constants: bool = True) -> str:
        """A stable, human-readable listing (used by golden tests and ``compiler show``)."""
        ins = ", ".join(f"%{v.name}: {v.type_str()}" for v in self.inputs)
        outs = ", ".join(f"%{v.name}: {v.type_str()}" for v in self.outputs)
        lines = [f"graph {self.name}({ins}) -> ({outs}) {{"]
        if show_constants:
            for value in self.constants:
                lines.append(f"  const %{value.name}: {value.type_str()}")
        for node in self.topo_order():
            outs_text = ", ".join(f"%{v.name}" for v in node.outputs)
            args = ", ".join("_" if v is None else f"%{v.name}" for v in node.inputs)
            attrs = ", ".join(f"{k}={_fmt_attr(node.attrs[k])}" for k in sorted(node.attrs))
            types = ", ".join(v.type_str() for v in node.outputs)
            op = node.op_type if not node.domain else f"{node.domain}.{node.op_type}"
            text = f"  {outs_text} = {op}({args})"
            if attrs:
                text += f" {{{attrs}}}"
            lines.append(f"{text} : {types}")
        lines.append(f"  return {', '.join('%' + v.name for v in self.outputs)}")
        lines.append("}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"Graph('{self.name}', {len(self)} nodes)"

    def __iter__(self) -> Iterator[Node]:
        return iter(self.topo_order())


class _NameCounter:
    """Fresh names over a name -> object table: ``base``, else the first free ``base_i``.

    Per base it keeps a lower bound below which every ``base_i`` is taken, so asking for
    the 4,000th ``Relu`` does not test 3,999 names first; freeing ``base_i`` lowers the
    bound again, so the names given are exactly those of a linear search from 1.
    """

    def __init__(self, table: dict[str, Any]):
        self._table = table
        self._next: dict[str, int] = {}

    def fresh(self, base: str) -> str:
        if base not in self._table:
            return base
        i = self._next.get(base, 1)
        while f"{base}_{i}" in self._table:
            i += 1
        self._next[base] = i + 1
        return f"{base}_{i}"

    def discard(self, name: str) -> None:
        self._table.pop(name, None)
        base, sep, index = name.rpartition("_")
        if sep and index.isdigit() and not (len(index) > 1 and index[0] == "0"):
            if int(index) < self._next.get(base, 1):
                self._next[base] = int(index)


def _fmt_attr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return f"array{value.tolist()}"
        return f"array<{value.dtype}{list(value.shape)}>"
    if isinstance(value, float):
        return f"{value:.7g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt_attr(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return np.array(obj, copy=True)
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_deepcopy(v) for v in obj)
    if hasattr(obj, "copy") and callable(obj.copy) and not isinstance(obj, (str, bytes)):
        return obj.copy()
    return obj


def iter_values(nodes: Iterable[Node]) -> Iterator[Value]:
    """Every input and output value of ``nodes``, once each."""
    seen: set[int] = set()
    for node in nodes:
        for value in (*node.inputs, *node.outputs):
            if value is not None and id(value) not in seen:
                seen.add(id(value))
                yield value
