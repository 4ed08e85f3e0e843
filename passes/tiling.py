"""tile: patch-based execution of the high-resolution stem (MCUNetV2-style spatial tiling).

Why: a CNN's first blocks hold its largest activations -- DeepLab's MobileNetV2 stem at
513x513 expands to 257x257x96 (24 MiB fp32) -- so the whole network's peak sits there
(``shared/notes/memory.md`` §3).  Computing that stage one tile at a time keeps only a
tile's intermediates alive: the stage output is split into ``n`` x ``n`` non-overlapping
tiles, each tile is computed from the input region its receptive field needs (the halo,
recomputed where tiles overlap), and the tiles are concatenated into the full stage
output, which the rest of the network reads unchanged.

The rewrite is plain IR (Slice, the stage's own ops with adjusted pads, Concat), so every
backend runs it as is and the result is exact: each output pixel is computed by the same
op from the same input values (zero padding appears only where the untiled op padded).

Regions are computed backwards through the stage: for output rows ``[a, b)`` of a window
op (kernel ``k``, stride ``s``, dilation ``d``, leading pad ``p``) the input rows needed are
``[a*s - p, (b-1)*s - p + d*(k-1) + 1)`` clamped to the input; the clamped-away part
becomes the tile op's padding.  A tensor read by several stage nodes (a residual Add)
gets the union of their regions, and each reader that needs less gets a Slice of it.

Options (``tile{n=4,stage_end=NAME}``):

* ``stage_end``: the value that ends the stage; it must be on the main path -- every
  value computed before it is read only inside the stage (DeepLab v3+'s decoder tap makes
  the values before ``layer_4`` the only valid ends there), and the stage reads one 4-D
  graph input.  Empty: chosen automatically.
* ``n``: tiles per side; must divide the stage end's height and width.  0: chosen
  automatically.
* ``tail``: also compute the final upsample and the labels in this many bands of output
  rows (`passes.tail_tiling`), so the full-resolution logits never exist; 0 (default):
  no tail tiling.  ``labels``: the graph outputs logits and the user wants labels -- append
  ``ArgMax`` over channels first (needed for ``tail`` unless the graph ends in one).
  ``stem=0``: tile only the tail.  The tail is tiled first, so the automatic stem choice
  weighs the tiled tail's peak.
* ``max_overhead``: the cap on recomputed MACs, as a fraction of the whole model's
  (default 0.05).  The automatic choice takes, for every valid stage end, the largest
  ``n`` <= ``max_n`` (default 8) under the cap, and keeps the one with the lowest planned
  peak (`estimate_peak`, which equals the lower bound of `compiler.memory_plan` on the
  tiled graph without building it), then the fewest extra MACs.

Stats: the stage end, ``n``, the planned peak before and after (``peak_*``: the memory
planner's lower bound, max bytes live at one step, which its greedy-by-size arena reaches
on these graphs; the full placement is quadratic in the buffers, too slow for thousands
of tile nodes), MACs before/after and the overhead; ``candidates`` lists what the
automatic choice weighed.  The planned peak counts the ``n`` row tiles and the
concatenated output as separate buffers (the planner has no in-place Concat), so it is a
slight over-estimate of what a runtime that writes tiles in place would need.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compiler.analysis import node_macs
from compiler.folding import infer_node
from compiler.ir import Graph, Node, Value
from compiler.memory_plan import lifetimes, lower_bound
from compiler.ops.conv_util import window_params
from compiler.ops.registry import op_traits
from compiler.pass_manager import (Pass, PassContext, PassOptionError, PassResult,
                                   register_pass)

__all__ = ["TileSpatial", "TilingError", "stage_of", "stage_ends", "tile_stage", "estimate_peak",
           "stage_macs"]

# Integer ops of the ``q`` domain that map each pixel to the same pixel (per-tensor or
# per-channel parameters): the registry gives them no ``elementwise`` trait because their
# output dtype differs from the input's, which the in-place memory planner relies on.
_Q_POINTWISE = frozenset({"Quantize", "Dequantize", "Requantize", "Clip", "Add"})
_CONCATS = frozenset({"Concat"})
_WINDOW = frozenset({"Conv", "MaxPool", "AveragePool"})


class TilingError(PassOptionError):
    """A tiling request that cannot be honoured (the message names the value / node): a
    user's option error, so the command line prints it as one ``error:`` line."""


@dataclass(frozen=True)
class Box:
    """Rows ``r0:r1`` and columns ``c0:c1`` of a 4-D NCHW tensor."""

    r0: int
    r1: int
    c0: int
    c1: int

    def union(self, other: "Box") -> "Box":
        return Box(min(self.r0, other.r0), max(self.r1, other.r1),
                   min(self.c0, other.c0), max(self.c1, other.c1))

    @property
    def area(self) -> int:
        return (self.r1 - self.r0) * (self.c1 - self.c0)


# --------------------------------------------------------------------------- the stage

def _activation_inputs(node: Node) -> list[Value]:
    return [v for v in node.inputs if v is not None and not v.is_constant]


def _kind(node: Node) -> str | None:
    """How a node maps space: "window", "pointwise", "concat", or None (not tileable)."""
    if node.domain in ("", "ai.onnx") and node.op_type in _WINDOW:
        return "window"
    if node.domain == "q" and node.op_type in ("Conv", "AveragePool"):
        return "window"
    if node.op_type in _CONCATS and int(node.attrs.get("axis", 0)) in (1, -3):
        return "concat"
    if node.domain == "q" and node.op_type in _Q_POINTWISE:
        return "pointwise"
    traits = op_traits(node)
    if traits is None:
        return None
    if traits.elementwise is not None:
        return "pointwise"
    if node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx"):
        return "pointwise"
    return None


def _check_pointwise(node: Node) -> str | None:
    """Why a pointwise node is not tileable (it broadcasts over space), or None."""
    out = node.outputs[0]
    per_channel = node.op_type == "BatchNormalization" or node.domain == "q"
    if node.domain == "q" and int(node.attrs.get("axis", 1)) not in (1, -3):
        return f"its per-channel parameters run along axis {node.attrs.get('axis')}"
    for v in node.inputs:
        if v is None:
            continue
        shape = tuple(int(d) for d in (v.shape or ()))
        if v.is_constant:
            # BatchNormalization's and the q ops' constant inputs are per-channel (axis 1)
            # parameters; ONNX broadcasting aligns other constants from the right.
            padded = (1,) * (4 - len(shape)) + shape
            if not per_channel and (len(shape) > 4 or padded[2] != 1 or padded[3] != 1):
                return f"constant '{v.name}' of shape {shape} broadcasts over space"
        elif shape != tuple(out.shape):
            return f"input '{v.name}' of shape {shape} broadcasts to {tuple(out.shape)}"
    return None


def stage_of(graph: Graph, end: Value) -> tuple[list[Node], Value]:
    """The nodes that compute ``end`` (in execution order) and the graph input they read.

    Raises `TilingError` naming the first thing that makes ``end`` an invalid stage end:
    not an activation, a value inside the stage read outside it (not on the main path),
    another graph input, a graph output inside the stage, or an op that cannot be tiled.
    """
    if end.is_constant or end.producer is None:
        raise TilingError(f"stage end '{end.name}' is a constant or a graph input, not a "
                          f"value computed by the stage")
    if end.shape is None or len(end.shape) != 4:
        raise TilingError(f"stage end '{end.name}' has shape {end.shape}; tiling needs a "
                          f"4-D NCHW feature map")
    needed: set[int] = set()
    stack = [end.producer]
    while stack:
        node = stack.pop()
        if id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(v.producer for v in _activation_inputs(node) if v.producer is not None)
    order = [n for n in graph.topo_order() if id(n) in needed]
    inputs = {id(v): v for n in order for v in _activation_inputs(n) if v.producer is None}
    if len(inputs) != 1:
        names = sorted(v.name for v in inputs.values())
        raise TilingError(f"the stage ending at '{end.name}' reads {len(names)} graph inputs "
                          f"({', '.join(names)}); tiling needs exactly one")
    source = next(iter(inputs.values()))
    if source.shape is None or len(source.shape) != 4:
        raise TilingError(f"graph input '{source.name}' has shape {source.shape}; tiling "
                          f"needs a 4-D NCHW input")
    for node in order:
        if len(node.outputs) != 1:
            raise TilingError(f"node '{node.name}' ({node.op_type}) in the stage ending at "
                              f"'{end.name}' has {len(node.outputs)} outputs; tiling needs 1")
        out = node.outputs[0]
        if out is not end:
            for user in out.consumers:
                if id(user) not in needed:
                    raise TilingError(
                        f"stage end '{end.name}' is not on the main path: '{out.name}' "
                        f"(computed inside the stage) is also read by node '{user.name}' "
                        f"({user.op_type}) outside it")
            if out.is_graph_output:
                raise TilingError(f"stage end '{end.name}' is not on the main path: "
                                  f"'{out.name}' inside the stage is a graph output")
        kind = _kind(node)
        if kind is None:
            raise TilingError(f"node '{node.name}' ({node.domain + '.' if node.domain else ''}"
                              f"{node.op_type}) in the stage ending at '{end.name}' cannot be "
                              f"tiled (supported: Conv, MaxPool, AveragePool, channel "
                              f"Concat, BatchNormalization, elementwise ops)")
        if out.shape is None or len(out.shape) != 4:
            raise TilingError(f"node '{node.name}' ({node.op_type}) output '{out.name}' has "
                              f"shape {out.shape}; every stage value must be 4-D NCHW")
        if kind == "pointwise":
            why = _check_pointwise(node)
            if why:
                raise TilingError(f"node '{node.name}' ({node.op_type}) cannot be tiled: {why}")
        if kind == "window":
            if node.op_type == "AveragePool" and int(node.attrs.get("ceil_mode", 0)) and \
                    int(node.attrs.get("count_include_pad", 0)):
                raise TilingError(f"node '{node.name}' (AveragePool) with ceil_mode=1 and "
                                  f"count_include_pad=1 cannot be tiled")
    return order, source


#: The automatic choice considers stage ends down to 1/64 of the input's area (stride 8):
#: past that the halo recomputation of a useful tile count exceeds any sensible MAC cap.
MIN_AREA = 1 / 64


def stage_ends(graph: Graph, min_area: float = 0.0) -> list[Value]:
    """Every value that is a valid stage end (`stage_of` accepts it), in execution order;
    ``min_area``: only those whose spatial area is at least this fraction of the largest
    4-D graph input's."""
    found = []
    areas = [int(v.shape[2]) * int(v.shape[3]) for v in graph.inputs
             if v.shape is not None and len(v.shape) == 4]
    floor = min_area * max(areas, default=0)
    for node in graph.topo_order():
        for out in node.outputs:
            if out.shape is None or len(out.shape) != 4 or out.is_graph_output:
                continue
            if int(out.shape[2]) * int(out.shape[3]) < floor:
                continue
            try:
                stage_of(graph, out)
            except TilingError:
                continue
            found.append(out)
    return found


# --------------------------------------------------------------------------- regions

def _window_need(node: Node, out_box: Box, in_shape) -> tuple[Box, list[int]]:
    """Input box a window node needs for ``out_box``, and the pads of its tile copy."""
    k, s, p, d = window_params(node.attrs, 2, (node.inputs[1].shape[2:]
                                               if node.op_type == "Conv" else None))
    spans = []
    pads_begin, pads_end = [], []
    for axis, (a, b) in enumerate(((out_box.r0, out_box.r1), (out_box.c0, out_box.c1))):
        lo = a * s[axis] - p[axis]
        hi = (b - 1) * s[axis] - p[axis] + d[axis] * (k[axis] - 1) + 1
        size = int(in_shape[2 + axis])
        spans.append((max(lo, 0), min(hi, size)))
        pads_begin.append(max(0, -lo))
        pads_end.append(max(0, hi - size))
    box = Box(spans[0][0], spans[0][1], spans[1][0], spans[1][1])
    return box, pads_begin + pads_end


def _regions(order: list[Node], end: Value, box: Box):
    """Per value (by id) the box a tile needs, and per (node, input slot) what it reads."""
    need: dict[int, Box] = {id(end): box}
    reads: dict[tuple[int, int], Box] = {}
    pads: dict[int, list[int]] = {}
    for node in reversed(order):
        out_box = need[id(node.outputs[0])]
        kind = _kind(node)
        for slot, v in enumerate(node.inputs):
            if v is None or v.is_constant:
                continue
            if kind == "window":
                in_box, pads[id(node)] = _window_need(node, out_box, v.shape)
            else:
                in_box = out_box
            reads[(id(node), slot)] = in_box
            need[id(v)] = need[id(v)].union(in_box) if id(v) in need else in_box
    return need, reads, pads


def _tile_boxes(end: Value, n: int) -> list[Box]:
    h, w = int(end.shape[2]), int(end.shape[3])
    th, tw = h // n, w // n
    return [Box(i * th, (i + 1) * th, j * tw, (j + 1) * tw) for i in range(n) for j in range(n)]


def _check_n(end: Value, n: int) -> None:
    h, w = int(end.shape[2]), int(end.shape[3])
    if n < 1:
        raise TilingError(f"n={n}: the tile count per side must be >= 1")
    if n > min(h, w):
        raise TilingError(f"n={n} exceeds the {h}x{w} feature map of stage end '{end.name}'")
    if h % n or w % n:
        raise TilingError(f"n={n} does not divide the {h}x{w} feature map of stage end "
                          f"'{end.name}' (divisors: "
                          f"{[d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]})")


def stage_macs(order: list[Node], end: Value, n: int) -> tuple[int, int]:
    """MACs of the stage untiled and tiled ``n`` x ``n`` (window ops cost per output pixel)."""
    full = sum(node_macs(node) for node in order)
    tiled = 0
    for box in _tile_boxes(end, n):
        need, _, _ = _regions(order, end, box)
        for node in order:
            out = node.outputs[0]
            area = int(out.shape[2]) * int(out.shape[3])
            tiled += node_macs(node) * need[id(out)].area // max(area, 1)
    return full, tiled


# --------------------------------------------------------------------------- rewrite

def _copy_quant(src: Value, dst: Value) -> None:
    if src.quant is not None:
        dst.quant = src.quant.copy()
    dst.meta.update(src.meta)


def _slice(graph: Graph, v: Value, box: Box, origin: Box, name: str) -> Value:
    """``v`` (holding ``origin``) cut to ``box``; ``v`` itself when they are equal."""
    if box == origin:
        return v
    consts = [graph.add_constant(f"{name}_{what}", np.array(arr, np.int64)) for what, arr in
              (("starts", [box.r0 - origin.r0, box.c0 - origin.c0]),
               ("ends", [box.r1 - origin.r0, box.c1 - origin.c0]), ("axes", [2, 3]))]
    node = graph.add_node("Slice", [v] + consts, name=name)
    infer_node(node)
    _copy_quant(v, node.outputs[0])
    return node.outputs[0]


def _concat(graph: Graph, parts: list[Value], axis: int, like: Value, name: str) -> Value:
    if len(parts) == 1:
        return parts[0]
    node = graph.add_node("Concat", parts, {"axis": axis}, name=name)
    infer_node(node)
    _copy_quant(like, node.outputs[0])
    return node.outputs[0]


def tile_stage(graph: Graph, end_name: str, n: int) -> dict:
    """Rewrite ``graph`` in place: the stage ending at ``end_name`` runs as ``n`` x ``n``
    tiles.  Returns the MACs of the stage before and after."""
    try:
        end = graph.value(end_name)
    except Exception:  # noqa: BLE001 - re-raised with the option's name
        raise TilingError(f"stage_end='{end_name}': no such value in graph "
                          f"'{graph.name}'") from None
    order, source = stage_of(graph, end)
    _check_n(end, n)
    full_macs, tiled_macs = stage_macs(order, end, n)
    if n == 1:
        return {"stage_macs": full_macs, "stage_macs_tiled": full_macs}
    full_source = Box(0, int(source.shape[2]), 0, int(source.shape[3]))
    tiles: list[Value] = []
    for t, box in enumerate(_tile_boxes(end, n)):
        i, j = divmod(t, n)
        tag = f"tile{i}_{j}"
        need, reads, pads = _regions(order, end, box)
        made: dict[int, Value] = {id(source): _slice(graph, source, need[id(source)],
                                                     full_source, f"{source.name}_{tag}")}
        for node in order:
            ins = []
            for slot, v in enumerate(node.inputs):
                if v is None or v.is_constant:
                    ins.append(v)
                    continue
                ins.append(_slice(graph, made[id(v)], reads[(id(node), slot)], need[id(v)],
                                  f"{node.name}_{tag}_in{slot}"))
            attrs = dict(node.attrs)
            if id(node) in pads:
                attrs["pads"] = pads[id(node)]
                attrs.pop("auto_pad", None)
                if "ceil_mode" in attrs:  # the explicit end pad now covers ceil's windows
                    attrs["ceil_mode"] = 0
            clone = graph.add_node(node.op_type, ins, attrs, name=f"{node.name}_{tag}",
                                   domain=node.domain)
            infer_node(clone)
            out, orig = clone.outputs[0], node.outputs[0]
            want = need[id(orig)]
            got = tuple(out.shape or ())
            if got[2:] != (want.r1 - want.r0, want.c1 - want.c0):
                raise TilingError(f"internal: tile {tag} of node '{node.name}' "
                                  f"({node.op_type}) has shape {got}, expected rows "
                                  f"{want.r0}:{want.r1}, cols {want.c0}:{want.c1}")
            _copy_quant(orig, out)
            made[id(orig)] = out
        tiles.append(made[id(end)])
    rows = [_concat(graph, tiles[i * n:(i + 1) * n], 3, end, f"{end.name}_row{i}")
            for i in range(n)]
    joined = _concat(graph, rows, 2, end, f"{end.name}_tiled")
    name = end.name
    graph.replace_all_uses_with(end, joined)
    graph.remove_unused()
    if graph.unique_name(name) == name:
        graph.rename_value(joined, name)
    return {"stage_macs": full_macs, "stage_macs_tiled": tiled_macs}


def _total_macs(graph: Graph) -> int:
    return sum(node_macs(node) for node in graph.topo_order())


def _bound(graph: Graph) -> int:
    """The planned peak's lower bound (`compiler.memory_plan`: max bytes live at a step,
    which greedy-by-size reaches on these graphs); the full placement is quadratic in the
    number of buffers, too slow to rank candidates with thousands of tile nodes."""
    return lower_bound(lifetimes(graph))


def _tail_peaks(graph: Graph) -> dict[int, int]:
    """Per node (by id): the most bytes live at any step after it, untiled -- the part
    of the profile that tiling a stage ending at its output leaves unchanged."""
    order = graph.topo_order()
    records = lifetimes(graph, order)
    diff = [0] * (len(order) + 3)
    for r in records:
        diff[r.first + 1] += r.size
        diff[r.last + 2] -= r.size
    live, profile = 0, []
    for d in diff[:len(order) + 1]:  # steps -1 .. len(order) - 1
        live += d
        profile.append(live)
    suffix = [0] * (len(profile) + 1)
    for i in range(len(profile) - 1, -1, -1):
        suffix[i] = max(profile[i], suffix[i + 1])
    # node at step i sits at profile index i + 1; "after it" starts at i + 2
    return {id(node): suffix[i + 2] for i, node in enumerate(order)}


def estimate_peak(order: list[Node], source: Value, end: Value, n: int, tail: int) -> int:
    """Bytes live at the worst step of the tiled graph, without building it: the stage
    runs tile after tile (input image, finished tiles of the output, the current tile's
    live values), then the Concat (tiles + joined output), then the untiled rest."""
    def nbytes(v: Value, box: Box) -> int:
        return int(v.shape[0]) * int(v.shape[1]) * box.area * v.dtype.itemsize

    last_use: dict[int, int] = {}
    for step, node in enumerate(order):
        for v in _activation_inputs(node):
            last_use[id(v)] = step
    peak, done = 0, 0
    for box in _tile_boxes(end, n):
        need, reads, _ = _regions(order, end, box)
        live = {id(source): nbytes(source, need[id(source)])}
        for step, node in enumerate(order):
            out = node.outputs[0]
            temps = sum(nbytes(v, reads[(id(node), k)]) for k, v in enumerate(node.inputs)
                        if v is not None and not v.is_constant
                        and reads[(id(node), k)] != need[id(v)])
            size = nbytes(out, need[id(out)])
            peak = max(peak, source.nbytes + done + sum(live.values()) + temps + size)
            live[id(out)] = size
            for v in _activation_inputs(node):
                if last_use.get(id(v)) == step:
                    live.pop(id(v), None)
        done += nbytes(end, box)
    return max(peak, 2 * end.nbytes, tail)


def _pointwise_successor(value: Value) -> bool:
    """True when ``value``'s only reader is a pointwise op: ending the stage one op later
    costs nothing extra, so only the last value of such a chain is a candidate."""
    users = value.consumers
    return len(users) == 1 and _kind(users[0]) == "pointwise" and \
        not users[0].outputs[0].is_graph_output


# --------------------------------------------------------------------------- the pass

@register_pass("tile")
@dataclass
class TileSpatial(Pass):
    """Runs the stem up to ``stage_end`` as ``n`` x ``n`` tiles (auto when unset)."""

    n: int = 0
    stage_end: str = ""
    max_overhead: float = 0.05
    max_n: int = 8
    tail: int = 0
    labels: bool = False
    stem: bool = True

    requires = ("cleanup",)  # Shape/Gather chains that read stem values must be folded

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if self.tail < 0:
            raise TilingError(f"tail={self.tail}: the band count must be >= 1 (0: no tail "
                              f"tiling)")
        if self.labels and not self.tail:
            raise TilingError("labels=1 asks for tiled labels: give the band count too, "
                              "e.g. tile{tail=16,labels=1} (tail=1: untiled labels)")
        if not self.stem and not self.tail:
            raise TilingError("stem=0 and tail=0: nothing to tile")
        tail_stats = None
        if self.tail:
            from .tail_tiling import tile_tail  # a sibling that imports this module

            tail_before = _bound(graph)
            tail_stats = tile_tail(graph, self.tail, labels=self.labels)
            tail_stats.update(peak_before=tail_before, peak_after=_bound(graph))
        if not self.stem:
            return PassResult(graph, True, {"tail": tail_stats})
        result = self._run_stem(graph)
        if tail_stats is not None:
            result.stats["tail"] = tail_stats
            result.modified = True
        return result

    def _run_stem(self, graph: Graph) -> PassResult:
        if self.n < 0:
            raise TilingError(f"n={self.n}: the tile count per side must be >= 1 (0: auto)")
        if not self.max_overhead >= 0:
            raise TilingError(f"max_overhead={self.max_overhead} must be >= 0")
        if self.max_n < 1:
            raise TilingError(f"max_n={self.max_n} must be >= 1")
        macs_before = _total_macs(graph)
        bound_before = _bound(graph)
        candidates = None
        if self.stage_end and self.n:
            end, n = self.stage_end, self.n
        else:
            end, n, candidates = self._choose(graph, macs_before, bound_before)
        if end is None:
            return PassResult(graph, False, {
                "stage_end": None, "n": 1, "reason": f"no stage end with n <= {self.max_n} "
                f"under the {self.max_overhead:.1%} MAC cap lowers the planned peak",
                "peak_before": bound_before, "peak_after": bound_before,
                "macs_before": macs_before, "macs_after": macs_before, "extra_macs": 0,
                "mac_overhead": 0.0, "candidates": candidates})
        stage = tile_stage(graph, end, n)
        macs_after = _total_macs(graph)
        stats = {"stage_end": end, "n": n, "tiles": n * n,
                 "peak_before": bound_before, "peak_after": _bound(graph),
                 "macs_before": macs_before, "macs_after": macs_after,
                 "extra_macs": macs_after - macs_before,
                 "mac_overhead": round((macs_after - macs_before) / max(macs_before, 1), 6),
                 **stage}
        if candidates is not None:
            stats["candidates"] = candidates
        return PassResult(graph, n > 1, stats)

    def _choose(self, graph: Graph, total: int, base: int):
        """(stage end, n, tried): every valid end (or the given one) with every n <= max_n
        (or the given one) under the MAC cap, ranked by `estimate_peak`, then by overhead."""
        if self.stage_end:
            try:
                ends = [graph.value(self.stage_end)]
            except Exception:  # noqa: BLE001
                raise TilingError(f"stage_end='{self.stage_end}': no such value in graph "
                                  f"'{graph.name}'") from None
            stage_of(graph, ends[0])
        else:
            ends = [e for e in stage_ends(graph, min_area=MIN_AREA)
                    if not _pointwise_successor(e)]
        best, tails = None, None
        tried = []
        for end in ends:
            order, source = stage_of(graph, end)
            h, w = int(end.shape[2]), int(end.shape[3])
            if self.n:
                _check_n(end, self.n)
                options = [self.n]
            else:
                options = [d for d in range(min(h, w, self.max_n), 1, -1)
                           if h % d == 0 and w % d == 0]
            for n in options:
                full, tiled = stage_macs(order, end, n)
                overhead = (tiled - full) / max(total, 1)
                if overhead > self.max_overhead:
                    continue
                tails = _tail_peaks(graph) if tails is None else tails
                peak = estimate_peak(order, source, end, n, tails[id(end.producer)])
                tried.append({"stage_end": end.name, "n": n, "estimated_peak": peak,
                              "mac_overhead": round(overhead, 6)})
                if best is None or (peak, overhead) < best[0]:
                    best = ((peak, overhead), end.name, n)
        if best is None or best[0][0] >= base:
            return None, 1, tried
        return best[1], best[2], tried
