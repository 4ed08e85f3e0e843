"""Static memory planning: every activation at an offset in one arena.

Why: a runtime that allocates per tensor (or, like TVM 0.27's StaticPlanBlockMemory, per
reusable "token") needs well above the real minimum -- 81.5 MiB where 48.4 suffice on
DeepLab v3 at 513x513 (``shared/notes/memory.md``).  TFLite's arena planner reaches that
minimum on CNNs by giving each tensor a lifetime and an offset; this module does the same
on our IR, so any backend can allocate one block and place tensors in it.

The steps, each a function:

* `lifetimes`: one `Record` per buffer, in a given execution order.  A record is live from
  the step that writes it to the last step that reads it (graph inputs from step -1,
  graph outputs to the end).  View ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity)
  share their input's record; optionally an elementwise op whose input dies there and has
  the output's byte size writes in place.  Sizes are rounded up to ``alignment`` (64 B:
  TVM's VM hands out sub-tensors without a copy only at 64-byte-aligned offsets).
* `place`: offsets by a strategy -- ``greedy_by_size`` (TFLite: largest first, best-fit
  gap among time-overlapping records), ``first_fit`` (TFLM: largest first, first gap that
  fits) or ``naive`` (one buffer per record, the no-reuse baseline).
* `lower_bound`: the most bytes live at any one step; no placement can go below it.
* `validate`: no two records that are live at the same step overlap in address.
* `memory_order`: a topological order chosen to lower the peak (greedy list scheduling:
  among ready nodes, the one that frees the most / allocates the least), kept only if
  its lower bound is not above the graph's own order.

`plan_memory` runs them and returns a `MemoryPlan`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

from .ir import Graph, IRError, Node, Value

__all__ = ["Record", "MemoryPlan", "MemoryPlanError", "lifetimes", "place", "lower_bound",
           "peak_step", "validate", "memory_order", "plan_memory", "align_up", "arena_size", "VIEW_OPS",
           "STRATEGIES"]

Strategy = Literal["greedy_by_size", "first_fit", "naive"]
STRATEGIES: tuple[str, ...] = ("greedy_by_size", "first_fit", "naive")

# Ops whose output is the input's bytes read differently (same buffer, no copy).
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


class MemoryPlanError(IRError):
    """A plan that is not valid (overlapping live tensors) or options that make none."""


@dataclass(frozen=True)
class Record:
    """One buffer: ``size`` bytes, live at steps ``first`` .. ``last`` (inclusive).

    ``values`` names every value stored in it (the first is the one that created it;
    views and in-place results follow).
    """

    name: str
    size: int
    first: int
    last: int
    values: tuple[str, ...]

    def overlaps_in_time(self, other: "Record") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class MemoryPlan:
    """Offsets of every record in one arena, and how that compares with the bound."""

    records: list[Record]
    offsets: dict[str, int]
    arena_bytes: int
    lower_bound: int
    strategy: str
    order: list[str] = field(default_factory=list)  # node names in execution order
    alignment: int = 64

    def record_of(self, value_name: str) -> Record:
        for record in self.records:
            if value_name in record.values:
                return record
        raise KeyError(f"value '{value_name}' has no record in this plan (a constant?)")

    def offset_of(self, value_name: str) -> int:
        return self.offsets[self.record_of(value_name).name]

    @property
    def ratio(self) -> float:
        """arena / lower bound (1.0 is optimal)."""
        return self.arena_bytes / self.lower_bound if self.lower_bound else 1.0

    def live_bytes(self) -> list[int]:
        """Bytes live at each step (-1 .. end), the profile the bound is the max of."""
        return _profile(self.records)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "alignment": self.alignment,
                "arena_bytes": self.arena_bytes, "lower_bound": self.lower_bound,
                "ratio": round(self.ratio, 4), "order": list(self.order),
                "records": [{"name": r.name, "size": r.size, "first": r.first, "last": r.last,
                             "offset": self.offsets[r.name], "values": list(r.values)}
                            for r in self.records]}


# -- lifetimes ----------------------------------------------------------------------

def align_up(nbytes: int, alignment: int) -> int:
    """``nbytes`` rounded up to a multiple of ``alignment``."""
    return -(-nbytes // alignment) * alignment if alignment > 1 else nbytes


def _is_elementwise(node: Node) -> bool:
    """Ops with the ``elementwise`` trait: output[i] depends on input[i] only (after
    broadcasting), so writing over a dying input is safe."""
    from .ops.registry import op_traits

    opdef = op_traits(node)
    return opdef is not None and bool(opdef.elementwise)


def lifetimes(graph: Graph, order: Sequence[Node] | None = None, *, alignment: int = 64,
              views: bool = True, in_place: bool = False) -> list[Record]:
    """One `Record` per activation buffer of ``graph`` executed in ``order``.

    ``views``: view ops share their input's buffer.  ``in_place``: an elementwise op
    whose input (not a graph input) dies at that op and has the output's byte size
    writes into it (the output must not be a graph output either).
    """
    if alignment < 1:
        raise MemoryPlanError(f"alignment must be >= 1, got {alignment}")
    order = list(order) if order is not None else graph.topo_order()
    _check_order(graph, order)
    end = len(order)
    last_read: dict[int, int] = {}
    for step, node in enumerate(order):
        for v in node.inputs:
            if v is not None and not v.is_constant:
                last_read[id(v)] = step
    outputs = {id(v) for v in graph.outputs}
    inputs = {id(v) for v in graph.inputs}

    root: dict[int, int] = {}  # id(value) -> id(root value)
    info: dict[int, dict] = {}  # id(root) -> {"value", "first", "last", "values"}

    def value_last(v: Value, step: int) -> int:
        return end if id(v) in outputs else last_read.get(id(v), step)

    def new_record(v: Value, first: int) -> None:
        root[id(v)] = id(v)
        info[id(v)] = {"value": v, "first": first, "last": value_last(v, first),
                       "values": [v.name], "input": id(v) in inputs}

    def join(v: Value, into: int, step: int) -> None:
        root[id(v)] = into
        rec = info[into]
        rec["values"].append(v.name)
        rec["last"] = max(rec["last"], value_last(v, step))

    for v in graph.inputs:
        new_record(v, -1)
    for step, node in enumerate(order):
        act_inputs = [v for v in node.inputs if v is not None and not v.is_constant]
        for index, out in enumerate(node.outputs):
            if out.shape is None or out.dtype is None:
                raise MemoryPlanError(f"value '{out.name}' (node '{node.name}', "
                                      f"{node.op_type}) has no inferred type")
            src = act_inputs[0] if act_inputs else None
            if (views and index == 0 and node.op_type in VIEW_OPS and src is not None
                    and node.inputs[0] is src and src.nbytes == out.nbytes):
                join(out, root[id(src)], step)
                continue
            if in_place and _is_elementwise(node) and id(out) not in outputs:
                target = _dying_input(node, out, act_inputs, root, info, step)
                if target is not None:
                    join(out, target, step)
                    continue
            new_record(out, step)
    return [Record(rec["value"].name, align_up(max(rec["value"].nbytes, 1), alignment),
                   rec["first"], rec["last"], tuple(rec["values"])) for rec in info.values()]


def _dying_input(node: Node, out: Value, act_inputs: list[Value], root: dict, info: dict,
                 step: int) -> int | None:
    """The record an in-place result may take over: an input whose whole record ends
    at this step, is not a graph input, and has the output's byte size."""
    for v in act_inputs:
        rid = root.get(id(v))
        if rid is None:
            continue
        rec = info[rid]
        if (rec["last"] == step and not rec["input"] and v.nbytes == out.nbytes
                and info[rid]["value"].nbytes == out.nbytes
                and sum(1 for w in act_inputs if root.get(id(w)) == rid) == 1):
            return rid
    return None


def _check_order(graph: Graph, order: Sequence[Node]) -> None:
    nodes = graph.topo_order()
    if len(order) != len(nodes) or {id(n) for n in order} != {id(n) for n in nodes}:
        raise MemoryPlanError("the execution order must list every node of the graph once")
    done: set[int] = {id(v) for v in graph.inputs} | {id(v) for v in graph.constants}
    for node in order:
        for v in node.inputs:
            if v is not None and id(v) not in done:
                raise MemoryPlanError(f"execution order runs node '{node.name}' before its "
                                      f"input '{v.name}' is computed")
        done.update(id(v) for v in node.outputs)


# -- bounds and placement ---------------------------------------------------------

def _profile(records: Sequence[Record]) -> list[int]:
    if not records:
        return []
    lo = min(r.first for r in records)
    hi = max(r.last for r in records)
    diff = [0] * (hi - lo + 2)
    for r in records:
        diff[r.first - lo] += r.size
        diff[r.last - lo + 1] -= r.size
    live, out = 0, []
    for d in diff[:-1]:
        live += d
        out.append(live)
    return out


def lower_bound(records: Sequence[Record]) -> int:
    """The most bytes live at one step: no placement of these records can use less."""
    return max(_profile(records), default=0)


def peak_step(records: Sequence[Record]) -> int:
    """The first step at which `lower_bound` bytes are live (records must not be empty)."""
    profile = _profile(records)
    return min(r.first for r in records) + profile.index(max(profile))


def _sorted_for_placement(records: Sequence[Record]) -> list[Record]:
    # TFLite's CreateTensorAllocationVector: size descending, ties by first use.
    return sorted(records, key=lambda r: (-r.size, r.first, r.name))


def place(records: Sequence[Record], strategy: str = "greedy_by_size", *,
          alignment: int = 64) -> dict[str, int]:
    """Offsets (bytes) of ``records`` by ``strategy``; see the module docstring."""
    if strategy not in STRATEGIES:
        raise MemoryPlanError(f"unknown memory-plan strategy '{strategy}'; "
                              f"choose one of {', '.join(STRATEGIES)}")
    if strategy == "naive":
        offsets, top = {}, 0
        for r in records:
            offsets[r.name] = top
            top += align_up(r.size, alignment)
        return offsets
    placed: list[tuple[int, Record]] = []  # (offset, record), kept sorted by offset
    offsets: dict[str, int] = {}
    for r in _sorted_for_placement(records):
        offset = _fit(r, placed, best=strategy == "greedy_by_size", alignment=alignment)
        offsets[r.name] = offset
        placed.append((offset, r))
        placed.sort(key=lambda item: (item[0], item[1].name))
    return offsets


def _fit(record: Record, placed: list[tuple[int, Record]], *, best: bool,
         alignment: int) -> int:
    """Lowest offset in the best (smallest) or first gap between the already-placed
    records that overlap ``record`` in time; above all of them if no gap fits."""
    candidate, best_gap, best_offset = 0, None, None
    for offset, other in placed:
        if not other.overlaps_in_time(record):
            continue
        gap = offset - candidate
        if gap >= record.size:
            if not best:
                return candidate
            if best_gap is None or gap < best_gap:
                best_gap, best_offset = gap, candidate
        candidate = max(candidate, align_up(offset + other.size, alignment))
    return best_offset if best_offset is not None else candidate


def validate(records: Sequence[Record], offsets: dict[str, int]) -> None:
    """Raise `MemoryPlanError` if two records live at the same step share bytes."""
    missing = [r.name for r in records if r.name not in offsets]
    if missing:
        raise MemoryPlanError(f"records without an offset: {', '.join(missing[:5])}")
    by_offset = sorted(records, key=lambda r: offsets[r.name])
    for i, a in enumerate(by_offset):
        a_end = offsets[a.name] + a.size
        for b in by_offset[i + 1:]:
            if offsets[b.name] >= a_end:
                break
            if a.overlaps_in_time(b):
                raise MemoryPlanError(
                    f"'{a.name}' [{offsets[a.name]}, {a_end}) and '{b.name}' "
                    f"[{offsets[b.name]}, {offsets[b.name] + b.size}) overlap in memory while "
                    f"both are live (steps {max(a.first, b.first)}..{min(a.last, b.last)})")


def arena_size(records: Sequence[Record], offsets: dict[str, int]) -> int:
    return max((offsets[r.name] + r.size for r in records), default=0)


# -- execution order --------------------------------------------------------------

def memory_order(graph: Graph, *, alignment: int = 64, views: bool = True,
                 in_place: bool = False) -> list[Node]:
    """A topological order that lowers the live-bytes peak where branches allow it.

    Greedy list scheduling: among the nodes whose inputs are ready, run the one with the
    smallest (bytes it allocates - bytes it frees), ties by the graph's own order.  The
    result is kept only if its lower bound is below the graph's own order's, so it
    never makes the bound worse.
    """
    default = graph.topo_order()
    rank = {id(n): i for i, n in enumerate(default)}
    remaining_uses: dict[int, int] = {}
    for node in default:
        for v in node.inputs:
            if v is not None and not v.is_constant:
                remaining_uses[id(v)] = remaining_uses.get(id(v), 0) + 1
    outputs = {id(v) for v in graph.outputs}
    waiting = {id(n): sum(1 for v in n.inputs if v is not None and v.producer is not None)
               for n in default}
    ready = [n for n in default if waiting[id(n)] == 0]
    order: list[Node] = []
    while ready:
        def delta(n: Node) -> int:
            alloc = sum(v.nbytes for v in n.outputs)
            freed = sum(v.nbytes for v in {id(v): v for v in n.inputs if v is not None
                                           and not v.is_constant}.values()
                        if remaining_uses.get(id(v), 0) == sum(1 for w in n.inputs if w is v)
                        and id(v) not in outputs and v.producer is not None)
            return alloc - freed

        node = min(ready, key=lambda n: (delta(n), rank[id(n)]))
        ready.remove(node)
        order.append(node)
        for v in node.inputs:
            if v is not None and not v.is_constant:
                remaining_uses[id(v)] -= 1
        for out in node.outputs:
            for user in {id(u): u for u, _ in out.uses}.values():
                waiting[id(user)] -= sum(1 for w in user.inputs if w is out)
                if waiting[id(user)] == 0:
                    ready.append(user)
    if len(order) != len(default):
        raise MemoryPlanError(f"graph '{graph.name}' could not be scheduled (a cycle?)")
    kw = dict(alignment=alignment, views=views, in_place=in_place)
    if lower_bound(lifetimes(graph, order, **kw)) < lower_bound(lifetimes(graph, default, **kw)):
        return order
    return default


# -- the whole plan -----------------------------------------------------------------

def plan_memory(graph: Graph, strategy: str = "greedy_by_size", *,
                order: Sequence[Node] | Literal["graph", "memory"] = "graph",
                alignment: int = 64, views: bool = True, in_place: bool = False,
                max_bytes: int | None = None) -> MemoryPlan:
    """Plan every activation of ``graph`` into one arena, validated.

    ``order``: the graph's own topological order, ``"memory"`` for `memory_order`, or an
    explicit node list.  ``max_bytes``: a user's memory budget; a larger arena is an
    error that names both sizes.
    """
    if isinstance(order, str):
        if order not in ("graph", "memory"):
            raise MemoryPlanError(f"order must be 'graph', 'memory' or a node list, not "
                                  f"'{order}'")
        nodes = graph.topo_order() if order == "graph" else memory_order(
            graph, alignment=alignment, views=views, in_place=in_place)
    else:
        nodes = list(order)
    records = lifetimes(graph, nodes, alignment=alignment, views=views, in_place=in_place)
    offsets = place(records, strategy, alignment=alignment)
    validate(records, offsets)
    plan = MemoryPlan(records, offsets, arena_size(records, offsets), lower_bound(records),
                      strategy, [n.name for n in nodes], alignment)
    if max_bytes is not None and plan.arena_bytes > max_bytes:
        raise MemoryPlanError(f"the planned arena needs {plan.arena_bytes} bytes "
                              f"({plan.arena_bytes / 2**20:.2f} MiB), above max_memory="
                              f"{max_bytes} bytes ({max_bytes / 2**20:.2f} MiB); lower bound "
                              f"{plan.lower_bound} bytes")
    return plan
