"""Tail tiling: a segmentation head's final upsample and ArgMax, one band of rows at a time.

Why: once the stem is tiled (`passes.tiling`), a segmentation network's peak is its last
op -- the bilinear Resize of the C-channel logits to full resolution (DeepLab at
513x513: 513x513x21 fp32 = 21.1 MiB, and in int8 the int8 resize output plus the
float32 logits its Dequantize makes, 26.4 MiB; ``shared/notes/memory.md`` §3).  When
the user wants labels, not logits, each band of output rows can be resized and reduced
to labels at once, so the full-resolution logits never exist: only one band's logits
and the int64 label map (``N x 1 x H x W``) are ever live.

The rewrite is plain IR -- Slice, Resize (or ``q.Resize``) with the band's sizes, the
pointwise ops between the Resize and the ArgMax (``q.Dequantize``), ArgMax and Concat --
so every backend runs it, and it is exact:

* ``q.Resize`` is ``mh @ x @ mw.T`` in integers: band rows ``[a, b)`` use the rows
  ``mh[a:b]`` restricted to the input rows they touch, which drops only zero weights.
  Any size ratio and coordinate mode is exact.
* A float Resize recomputes its sampling positions from its own sizes, so a band's op
  samples where the untiled op does only when the band starts at an *anchor*: an output
  row whose source coordinate is an integer input row ``s`` and every local position is
  then the global one minus ``s``.  Anchors are every ``p`` output rows for an output /
  input ratio ``p / q`` in lowest terms (``(H-1)/(h-1)`` for ``align_corners``, the scale
  for ``half_pixel``, ``pytorch_half_pixel`` and ``asymmetric``); bands run from anchor
  to anchor, a band's local op is widened by whole anchor steps until its edge rows are
  not clamped differently from the untiled op, and its extra rows are cropped.  Even then
  the floating-point positions are equal only when both formulas round the same way,
  which holds for dyadic ratios (DeepLab 513: 33->513 and 129->513 with
  ``align_corners``, ratios 1/16 and 1/4; U-Net's x2 ``half_pixel``).  Every band is
  checked by evaluating the kernels' own sampling rules (`compiler.ops.resize_util`:
  onnxruntime's formulas, in float32 and float64, clamping before and after the floor)
  for the band and for the untiled op; if any index or weight differs -- e.g. DeepLab
  at 256x256, 16->256 rows, ratio 1/17 -- the pass refuses with `TilingError` rather
  than change the numerics.  ONNX Resize has no attribute that samples a shifted window
  of a non-dyadic grid at the same float positions (``tf_crop_and_resize`` computes
  ``start*(h-1) + y*(end-start)*(h-1)/(H-1)``, a different rounding), so such heads are
  left alone.

Pattern: a graph output that is ``ArgMax(axis=1)`` of a chain ``Resize -> pointwise ops``
(each value read only by the next), or -- with ``labels=True`` -- the chain's last value
itself, to which the pass first appends ``ArgMax(axis=1, keepdims=1)`` (the output then
holds int64 labels, named ``labels``).  Bands split H only; the Resize must not change N
or C.  Options: ``tile{tail=BANDS,labels=1}`` (`passes.tiling.TileSpatial`).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from compiler.folding import infer_node
from compiler.ir import Graph, Node, Value
from compiler.ops.resize_util import nearest_index, source_coords

from .tiling import Box, TilingError, _check_pointwise, _concat, _copy_quant, _kind, _slice

__all__ = ["TailPattern", "find_tail", "append_labels", "tile_tail", "band_bounds"]

_FLOAT_MODES = ("align_corners", "half_pixel", "pytorch_half_pixel", "asymmetric")


@dataclass
class TailPattern:
    """The tiled tail: ``resize`` (float ``Resize`` or ``q.Resize``), the pointwise
    ``chain`` after it, and the ``argmax`` whose output is graph output ``index``."""

    resize: Node
    chain: list[Node]
    argmax: Node
    index: int

    @property
    def logits(self) -> Value:
        """The full-resolution value the ArgMax reads (what tiling never materialises)."""
        return (self.chain[-1] if self.chain else self.resize).outputs[0]


def _is_channel_argmax(node: Node) -> bool:
    return node.op_type == "ArgMax" and node.domain in ("", "ai.onnx") and \
        int(node.attrs.get("axis", 0)) in (1, -3) and node.inputs[0].shape is not None and \
        len(node.inputs[0].shape) == 4


def _chain_to_resize(value: Value) -> tuple[Node, list[Node]]:
    """Walk back from ``value`` through single-reader pointwise ops to a Resize."""
    chain: list[Node] = []
    v = value
    while True:
        node = v.producer
        if node is None:
            raise TilingError(f"tail tiling: '{value.name}' is not computed by a Resize "
                              f"(reached graph input or constant '{v.name}')")
        if node.op_type == "Resize" and node.domain in ("", "ai.onnx", "q"):
            return node, chain[::-1]
        if _kind(node) != "pointwise" or len(node.outputs) != 1 or \
                len(_act_inputs(node)) != 1:
            raise TilingError(f"tail tiling: '{value.name}' is computed by node "
                              f"'{node.name}' ({node.op_type}), not by a Resize followed "
                              f"by single-input pointwise ops")
        why = _check_pointwise(node)
        if why:
            raise TilingError(f"tail tiling: node '{node.name}' ({node.op_type}) between "
                              f"the Resize and the labels cannot be tiled: {why}")
        chain.append(node)
        v = _act_inputs(node)[0]


def _act_inputs(node: Node) -> list[Value]:
    return [v for v in node.inputs if v is not None and not v.is_constant]


def find_tail(graph: Graph, *, labels: bool) -> TailPattern:
    """The tail to tile: the first graph output that is a channel ArgMax of a resized
    map, or (``labels``) the first output that is a resized map itself -- then the
    ArgMax is appended (`append_labels`).  `TilingError` says what is missing."""
    problems = []
    for index, out in enumerate(graph.outputs):
        node = out.producer
        if node is not None and _is_channel_argmax(node):
            try:
                resize, chain = _chain_to_resize(node.inputs[0])
            except TilingError as exc:
                problems.append(str(exc))
                continue
            return _checked(TailPattern(resize, chain, node, index))
    for index, out in enumerate(graph.outputs):
        try:
            resize, chain = _chain_to_resize(out)
        except TilingError as exc:
            problems.append(str(exc))
            continue
        if not labels:
            raise TilingError(
                f"tail tiling: graph output '{out.name}' is the full-resolution resized map "
                f"itself; tiling only saves memory when each band is reduced to labels at "
                f"once: pass labels=1 to output ArgMax labels instead of logits")
        return _checked(append_labels(graph, index, resize, chain))
    raise TilingError("tail tiling: no graph output is a Resize (+ pointwise ops, + ArgMax "
                      "over channels): " + "; ".join(problems))


def append_labels(graph: Graph, index: int, resize: Node, chain: list[Node]) -> TailPattern:
    """Make graph output ``index`` (the resized logits) ``ArgMax(axis=1, keepdims=1)`` of
    them: the int64 label map the user asked for, untiled."""
    logits = graph.outputs[index]
    node = graph.add_node("ArgMax", [logits], {"axis": 1, "keepdims": 1,
                                               "select_last_index": 0},
                          name=graph.unique_name("labels_argmax"))
    infer_node(node)
    graph.outputs[index] = node.outputs[0]
    graph.rename_value(node.outputs[0], graph.unique_name("labels"))
    return TailPattern(resize, chain, node, index)


def _checked(tail: TailPattern) -> TailPattern:
    """Every value from the Resize to the ArgMax is read by the next op only."""
    for node in [tail.resize] + tail.chain:
        out = node.outputs[0]
        if len(out.consumers) != 1 or out.is_graph_output:
            raise TilingError(f"tail tiling: '{out.name}' (node '{node.name}', "
                              f"{node.op_type}) is read outside the resize -> labels chain "
                              f"(or is a graph output), so it must exist in full")
    x = tail.resize.inputs[0]
    out = tail.resize.outputs[0]
    if x.shape is None or len(x.shape) != 4 or out.shape is None:
        raise TilingError(f"tail tiling: Resize '{tail.resize.name}' needs a 4-D NCHW "
                          f"input (got {x.shape})")
    if tuple(x.shape[:2]) != tuple(out.shape[:2]):
        raise TilingError(f"tail tiling: Resize '{tail.resize.name}' resizes N or C "
                          f"({x.shape} -> {out.shape}); only H and W may change")
    return tail


# --------------------------------------------------------------------------- float Resize

def _scale_and_form(node: Node) -> tuple[float, bool]:
    """The H-axis ONNX scale of a float Resize, and whether it was given as ``scales``."""
    scales = node.inputs[2] if len(node.inputs) > 2 else None
    if scales is not None and scales.const is not None and np.asarray(scales.const).size:
        return float(np.asarray(scales.const, np.float32).reshape(-1)[2]), True
    h, H = int(node.inputs[0].shape[2]), int(node.outputs[0].shape[2])
    return H / h, False


def _ratio(node: Node) -> Fraction:
    """Output rows per input row between anchors (``p / q`` in lowest terms)."""
    ctm = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    h, H = int(node.inputs[0].shape[2]), int(node.outputs[0].shape[2])
    if ctm == "align_corners":
        if h < 2 or H < 2:
            raise TilingError(f"tail tiling: Resize '{node.name}' maps {h} -> {H} rows "
                              f"with align_corners; bands need >= 2 rows on each side")
        return Fraction(H - 1, h - 1)
    scale, given = _scale_and_form(node)
    return Fraction(scale) if given else Fraction(H, h)


def _taps(attrs, coords: np.ndarray, in_len: int, clip_first: bool) -> list[tuple]:
    """Per output row the (input row, weight) pairs a kernel reads, zero weights dropped.

    ``clip_first``: the coordinate is clamped to ``[0, in_len-1]`` before the floor
    (onnxruntime, the TVM lowering), else the taps are clamped after it (the reference
    kernel, `compiler.ops.nn._resize_axis`)."""
    if attrs.get("mode", "nearest") == "nearest":
        idx = nearest_index(coords, attrs.get("nearest_mode", "round_prefer_floor"), in_len)
        return [((int(i), 1.0),) for i in idx]
    c = np.clip(coords, 0, in_len - 1) if clip_first else coords
    lo = np.floor(c)
    t = c - lo
    rows = []
    for base, frac in zip(lo.astype(np.int64), t):
        pairs = [(int(np.clip(base, 0, in_len - 1)), float(1 - frac)),
                 (int(np.clip(base + 1, 0, in_len - 1)), float(frac))]
        rows.append(tuple(p for p in pairs if p[1] != 0.0))
    return rows


def _sampling(node: Node, in_len: int, out_len: int) -> list[list[tuple]]:
    """Every kernel rule's taps for a Resize of ``in_len`` -> ``out_len`` rows with
    ``node``'s attributes (its scale when given as ``scales``, else out / in)."""
    attrs = node.attrs
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    scale, given = _scale_and_form(node)
    if not given:
        scale = out_len / in_len
    found = []
    for dtype in (np.float32, np.float64):
        coords = source_coords(ctm, out_len, in_len, scale, dtype=dtype)
        for clip_first in (True, False):
            found.append(_taps(attrs, coords, in_len, clip_first))
    return found


def _float_band(node: Node, a: int, b: int, anchors: tuple[int, int], limit: int,
                full: list[list[tuple]]) -> tuple[int, int, int, int] | None:
    """(s, e, a0, b0): input rows and output rows of the local Resize whose rows
    ``[a - a0, b - a0)`` equal the untiled op's rows ``[a, b)`` exactly, or None."""
    ctm = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    p, q = anchors
    h, H = int(node.inputs[0].shape[2]), int(node.outputs[0].shape[2])
    k_lo = a // p
    k_hi = -(-(b - 1) // p) if ctm == "align_corners" else -(-b // p)
    for widen in range(0, 4):
        k0 = max(k_lo - widen, 0)
        k1 = min(k_hi + widen, limit)
        if ctm == "align_corners":
            s, e, a0, b0 = k0 * q, k1 * q + 1, k0 * p, k1 * p + 1
        else:
            s, e, a0, b0 = k0 * q, min(k1 * q, h), k0 * p, min(k1 * p, H)
        local = _sampling(node, e - s, b0 - a0)
        if all(rule_l[y - a0] == tuple((r - s, w) for r, w in rule_g[y])
               for rule_l, rule_g in zip(local, full) for y in range(a, b)):
            return s, e, a0, b0
        if k0 == 0 and k1 == limit:
            break
    return None


def _float_bands(node: Node, bounds: list[int]) -> list[tuple[int, int, int, int]]:
    attrs = node.attrs
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    mode = attrs.get("mode", "nearest")
    if mode not in ("linear", "nearest"):
        raise TilingError(f"tail tiling: Resize '{node.name}' has mode={mode!r}; bands "
                          f"support linear and nearest")
    if ctm not in _FLOAT_MODES:
        raise TilingError(f"tail tiling: Resize '{node.name}' has coordinate_transformation_"
                          f"mode={ctm!r}; bands support {', '.join(_FLOAT_MODES)}")
    h, H = int(node.inputs[0].shape[2]), int(node.outputs[0].shape[2])
    r = _ratio(node)
    p, q = r.numerator, r.denominator
    limit = (h - 1) // q if ctm == "align_corners" else -(-h // q)
    full = _sampling(node, h, H)
    out = []
    for a, b in zip(bounds, bounds[1:]):
        band = _float_band(node, a, b, (p, q), limit, full)
        if band is None:
            raise TilingError(
                f"tail tiling: Resize '{node.name}' ({h} -> {H} rows, {ctm}, {mode}) cannot "
                f"be computed in bands exactly: its input step per output row, {1 / r}, is "
                f"not a dyadic fraction, so a band's own sampling positions round "
                f"differently from the untiled op's (rows {a}:{b}); ONNX Resize has no "
                f"attribute that reproduces them")
        out.append(band)
    return out


# --------------------------------------------------------------------------- bands

def _anchor_step(node: Node) -> int:
    """Output rows between exact band boundaries (1 for ``q.Resize``)."""
    if node.domain == "q":
        return 1
    return _ratio(node).numerator


def band_bounds(node: Node, bands: int) -> list[int]:
    """Band boundaries ``[0, ..., H]`` in the Resize's output rows: ``bands`` bands of
    near-equal height, each boundary on an anchor row.  `TilingError` when fewer anchors
    exist than bands were asked for."""
    H = int(node.outputs[0].shape[2])
    step = _anchor_step(node)
    if bands < 1:
        raise TilingError(f"tail={bands}: the band count must be >= 1")
    most = max(1, (H - 1) // step) if node.domain != "q" else H
    if bands > most:
        raise TilingError(f"tail={bands}: Resize '{node.name}' has {H} output rows whose "
                          f"exact band boundaries are every {step} rows: at most {most} bands")
    cuts = sorted({round(i * H / bands / step) * step for i in range(1, bands)} - {0})
    cuts = [c for c in cuts if c < H]
    if len(cuts) != bands - 1:
        raise TilingError(f"tail={bands}: only {len(cuts) + 1} distinct bands fit the "
                          f"anchors every {step} rows of Resize '{node.name}' ({H} rows)")
    return [0] + cuts + [H]


def _q_band(graph: Graph, node: Node, x: Value, a: int, b: int, tag: str) -> Value:
    """``q.Resize`` of output rows ``[a, b)``: the input rows ``mh[a:b]`` touches."""
    mh = np.asarray(node.inputs[1].const)
    rows = mh[a:b]
    used = np.flatnonzero(np.any(rows != 0, axis=0))
    s, e = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)
    w = int(x.shape[3])
    xs = _slice(graph, x, Box(s, e, 0, w), Box(0, int(x.shape[2]), 0, w), f"{x.name}_{tag}")
    mh_band = graph.add_constant(f"{node.inputs[1].name}_{tag}",
                                 np.ascontiguousarray(rows[:, s:e]).astype(mh.dtype))
    clone = graph.add_node("Resize", [xs, mh_band, node.inputs[2]], dict(node.attrs),
                           name=f"{node.name}_{tag}", domain="q")
    infer_node(clone)
    _copy_quant(node.outputs[0], clone.outputs[0])
    return clone.outputs[0]


def _f_band(graph: Graph, node: Node, x: Value, band: tuple[int, int, int, int],
            a: int, b: int, tag: str) -> Value:
    """Float Resize of output rows ``[a, b)``: input rows ``[s, e)`` resized to rows
    ``[a0, b0)`` by the untiled op's own attributes, cropped to ``[a, b)``."""
    s, e, a0, b0 = band
    w, W = int(x.shape[3]), int(node.outputs[0].shape[3])
    xs = _slice(graph, x, Box(s, e, 0, w), Box(0, int(x.shape[2]), 0, w), f"{x.name}_{tag}")
    _, given = _scale_and_form(node)
    ins: list[Value | None] = [xs, node.inputs[1] if len(node.inputs) > 1 else None]
    if given:
        ins.append(node.inputs[2])
    else:
        n, c = (int(d) for d in node.outputs[0].shape[:2])
        ins += [None, graph.add_constant(f"{node.name}_{tag}_sizes",
                                         np.array([n, c, b0 - a0, W], np.int64))]
    clone = graph.add_node("Resize", ins, dict(node.attrs), name=f"{node.name}_{tag}",
                           domain=node.domain)
    infer_node(clone)
    got = tuple(clone.outputs[0].shape)
    if got[2] != b0 - a0 or got[3] != W:
        raise TilingError(f"internal: band {tag} of Resize '{node.name}' has shape {got}, "
                          f"expected {b0 - a0} x {W}")
    _copy_quant(node.outputs[0], clone.outputs[0])
    return _slice(graph, clone.outputs[0], Box(a, b, 0, W), Box(a0, b0, 0, W),
                  f"{node.name}_{tag}_crop")


def tile_tail(graph: Graph, bands: int, *, labels: bool = False) -> dict:
    """Rewrite ``graph`` in place: its labels (`find_tail`) are computed in ``bands``
    bands of output rows.  Returns stats (the Resize, bands, rows per band)."""
    if bands < 1:
        raise TilingError(f"tail={bands}: the band count must be >= 1 (0: no tail tiling)")
    # Find and validate everything before touching the graph, so a refusal changes nothing.
    probe = graph.clone()
    tail = find_tail(probe, labels=labels)
    bounds = band_bounds(tail.resize, bands)
    float_bands = None if tail.resize.domain == "q" else _float_bands(tail.resize, bounds)
    tail = find_tail(graph, labels=labels)
    resize, argmax = tail.resize, tail.argmax
    x = resize.inputs[0]
    axis = 2 if int(argmax.attrs.get("keepdims", 1)) else 1
    parts: list[Value] = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        tag = f"band{i}"
        if float_bands is None:
            v = _q_band(graph, resize, x, a, b, tag)
        else:
            v = _f_band(graph, resize, x, float_bands[i], a, b, tag)
        for node in tail.chain + [argmax]:
            ins = [v if u is not None and not u.is_constant else u for u in node.inputs]
            clone = graph.add_node(node.op_type, ins, dict(node.attrs),
                                   name=f"{node.name}_{tag}", domain=node.domain)
            infer_node(clone)
            _copy_quant(node.outputs[0], clone.outputs[0])
            v = clone.outputs[0]
        parts.append(v)
    out = argmax.outputs[0]
    joined = _concat(graph, parts, axis, out, f"{out.name}_tiled")
    name = out.name
    graph.replace_all_uses_with(out, joined)
    graph.remove_unused()
    if graph.unique_name(name) == name:
        graph.rename_value(joined, name)
    in_rows = [(fb[1] - fb[0]) for fb in float_bands] if float_bands else None
    return {"resize": resize.name, "bands": len(bounds) - 1, "band_rows": max(
        b - a for a, b in zip(bounds, bounds[1:])), "labels": name,
        "max_input_rows": max(in_rows) if in_rows else None}
