"""Keep activations packed (NCHW{b}c) through the ops Relax's ``ConvertLayout`` unpacks.

``ConvertLayout`` (`layout.pack_convolutions` step 1) propagates the packed layout
through elementwise ops, adds, pools, reductions and Concat, but around a few ops that
real exporters emit it leaves ``unpack -> op -> pack`` (two layout transforms per op) or
fails outright:

- a channel ``split`` of a packed tensor: its layout inference gives the parts the whole
  tensor's channel count and the next conv is rejected ("data channel size 128 while the
  weight input channel size ... 64").  `split_channels_as_slices` (a rule applied before
  ``ConvertLayout``) turns it into one ``strided_slice`` per part first;
- ``strided_slice`` of channels (those parts, a Slice in the graph), ``image.resize2d``
  and ``take`` along H/W (a nearest / linear Resize, `lowering.resize`): unpacked around.

`keep_packed` rewrites, after ``ConvertLayout``, every ``pack_b(f(unpack_a(P)))`` whose
``f`` is one of those (a chain of them) into ``f'(P)`` on the packed tensor: resize2d
with ``layout=NCHW{a}c``, take on the same spatial axis, a channel slice of whole blocks
as a slice of the block axis.  What needs a change of block (``a != b``, or a channel
slice not aligned to ``a``) becomes one direct ``repack`` kernel from packed to packed,
instead of two transforms through NCHW.  Results are unchanged (the ops only move data).

`sink_channel_crops` (before ``ConvertLayout``) moves a channel crop of a tensor used by
nothing else after the elementwise ops that follow it, so they fuse into the producing
conv (the crop of a conv whose outputs were padded to whole vectors).
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax import op as R

__all__ = ["split_channels_as_slices", "clip_as_min_max", "keep_packed", "layout_transform_kind",
           "sink_channel_crops"]


def _shape(expr) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    if shape is None or any(not isinstance(d, tirx.IntImm) for d in shape):
        return None
    return [int(d) for d in shape]


def _is_op(expr, name: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) \
        and expr.op.name == name


def split_channels_as_slices(bb: relax.BlockBuilder, call: relax.Call, kind=None):
    """``split(x, axis=1)`` of a static 4-D tensor as a tuple of channel slices (see the
    module docstring), else ``None``.  A rule of `layout._REWRITES`."""
    if not _is_op(call, "relax.split"):
        return None
    xs = _shape(call.args[0])
    if xs is None or len(xs) != 4 or int(call.attrs.axis) not in (1, -3):
        return None
    ind = call.attrs.indices_or_sections
    if isinstance(ind, tirx.IntImm) or not hasattr(ind, "__len__"):
        n = int(ind)
        if xs[1] % n:
            return None
        bounds = [xs[1] // n * i for i in range(n + 1)]
    else:
        bounds = [0] + [int(i) for i in ind] + [xs[1]]
    return relax.Tuple([bb.emit(R.strided_slice(call.args[0], [1], [a], [b]))
                        for a, b in zip(bounds, bounds[1:])])


def clip_as_min_max(bb: relax.BlockBuilder, call: relax.Call, kind=None):
    """``clip(x, lo, hi)`` (the Quantize lowering's saturation) as ``minimum(hi,
    maximum(lo, x))``: ``clip`` has no layout inference, so ``ConvertLayout`` unpacks
    around it -- two layout transforms per activation quantized after a float gate
    (HardSwish in an int8 graph).  The same values (``clip`` is that max/min); a rule of
    `layout._REWRITES`."""
    if not _is_op(call, "relax.clip") or len(call.args) != 3:
        return None
    x, lo, hi = call.args
    def bound(v):  # a PrimValue (its .value an Imm) or an Imm
        v = getattr(v, "value", None)
        v = getattr(v, "value", v)
        return v if isinstance(v, (int, float)) else None

    if bound(lo) is None or bound(hi) is None:
        return None
    dtype = x.ty.dtype

    def as_const(v):
        return relax.const(bound(v), dtype)
    y = bb.emit(R.maximum(as_const(lo), x))
    return R.minimum(as_const(hi), y)


def layout_transform_kind(call) -> tuple[str, int] | None:
    """``("pack", b)`` for a ``layout_transform`` NCHW -> NCHW{b}c, ``("unpack", b)`` for
    NCHW{b}c -> NCHW, else ``None`` (checked on the index map, not only the shapes)."""
    if not _is_op(call, "relax.layout_transform"):
        return None
    src, dst = _shape(call.args[0]), _shape(call)
    if src is None or dst is None:
        return None
    im = call.attrs.index_map
    probe = lambda idx: [int(v) for v in im.map_indices(idx)]  # noqa: E731
    try:
        if len(src) == 4 and len(dst) == 5 and dst[1] * dst[4] == src[1]:
            b = dst[4]
            ok = all(probe([0, c, 1, 2]) == [0, c // b, 1, 2, c % b] for c in (0, b - 1, src[1] - 1))
            return ("pack", b) if ok and dst[2:4] == src[2:4] else None
        if len(src) == 5 and len(dst) == 4 and src[1] * src[4] == dst[1]:
            b = src[4]
            ok = all(probe([0, cc, 1, 2, i]) == [0, cc * b + i, 1, 2]
                     for cc, i in ((0, 0), (0, b - 1), (src[1] - 1, b - 1)))
            return ("unpack", b) if ok and dst[2:4] == src[2:4] else None
    except (TypeError, ValueError, tvm.error.TVMError):
        return None
    return None


def _repack_te(x, begin: int, channels: int, block: int):
    """Channels ``[begin, begin + channels)`` of packed ``x`` (block ``x.shape[4]``) as
    NCHW{block}c, in one pass (a direct packed -> packed transposition)."""
    n, _, h, w, a = (int(d) for d in x.shape)

    def f(bi, cc, y, xx, i):
        c = begin + cc * block + i
        return x[bi, c // a, y, xx, c % a]

    return te.compute((n, channels // block, h, w, block), f, name="repack")


# ops applied value by value (with scalar operands they commute with any layout)
_ELEMENTWISE = frozenset("relax." + n for n in (
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "round", "astype",
    "sigmoid", "tanh", "exp", "floor", "ceil", "right_shift", "left_shift", "clip",
    "nn.relu", "negative", "abs", "sqrt"))


# what `sink_channel_crops` also moves a crop past: compares and selects, value by value
# (a PRelu's ``where(x < 0, x * slope, x)``)
_SELECT = frozenset("relax." + n for n in ("less", "greater", "less_equal", "greater_equal",
                                           "equal", "not_equal", "where"))


def _scalar(expr) -> bool:
    shape = _shape(expr)
    return shape is not None and all(d == 1 for d in shape)


def _ints_of(t) -> list[int] | None:
    try:
        return [int(f.value) for f in t.fields]
    except (AttributeError, TypeError):
        return None


@relax.expr_functor.mutator
class _KeepPacked(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.var2val: dict = {}

    def _val(self, expr):
        for _ in range(64):
            if isinstance(expr, relax.TupleGetItem):
                tup = self._val(expr.tuple_value)
                if not isinstance(tup, relax.Tuple):
                    break
                expr = tup.fields[int(expr.index)]
            elif isinstance(expr, relax.Var) and expr in self.var2val:
                expr = self.var2val[expr]
            else:
                break
        return expr

    def _materialize(self, src, a: int, off: int, ch: int, block: int):
        """Channels ``[off, off + ch)`` of packed ``src`` (block ``a``) as NCHW{block}c."""
        if block == a and off == 0 and ch == _shape(src)[1] * a:
            return src
        if block == a and off % a == 0 and ch % a == 0:
            return self.builder_.emit(R.strided_slice(src, [1], [off // a], [(off + ch) // a]))
        return self.builder_.emit(te_repack(self.builder_, src, off, ch, block))

    def _packed(self, expr):
        """``(packed tensor, block a, channel offset, channels)`` from which the NCHW
        tensor ``expr`` is a channel window, or ``None``."""
        e = self._val(expr)
        kind = layout_transform_kind(e)
        if kind is not None and kind[0] == "unpack":
            return self.visit_expr(e.args[0]), kind[1], 0, _shape(e)[1]
        if not isinstance(e, relax.Call) or not isinstance(e.op, tvm.ir.Op):
            return None
        name = e.op.name
        if name in _ELEMENTWISE:
            return self._elementwise(e)
        if name not in ("relax.strided_slice", "relax.image.resize2d", "relax.take",
                        "relax.nn.pad"):
            return None
        xs = _shape(e.args[0])
        if xs is None or len(xs) != 4:
            return None
        inner = self._packed(e.args[0])
        if inner is None:
            return None
        src, a, off, ch = inner
        if name == "relax.strided_slice":
            axes, begin, end = (_ints_of(t) for t in e.args[1:4])
            strides = _ints_of(e.args[4]) if len(e.args) > 4 else None
            if axes is None or begin is None or end is None or len(axes) != 1 \
                    or (strides is not None and any(s != 1 for s in strides)):
                return None
            axis, lo, hi = axes[0] % 4, begin[0], end[0]
            if axis == 1:
                lo, hi = max(0, lo if lo >= 0 else lo + xs[1]), min(xs[1], hi if hi >= 0 else hi + xs[1])
                return (src, a, off + lo, hi - lo) if hi > lo else None
            if axis in (2, 3):
                return self.builder_.emit(R.strided_slice(src, [axis], [lo], [hi])), a, off, ch
            return None
        block = a if ch % a == 0 else next(b for b in (16, 8, 4, 2, 1) if ch % b == 0)
        src = self._materialize(src, a, off, ch, block)
        if name == "relax.nn.pad":
            width = [int(v) for v in e.attrs.pad_width]
            if len(width) != 8 or any(width[:4]) or str(e.attrs.pad_mode) != "constant":
                return None
            return self.builder_.emit(R.nn.pad(src, width + [0, 0], "constant",
                                               float(e.attrs.pad_value))), block, 0, ch
        if name == "relax.take":
            axis = int(e.attrs.axis) % 4
            if axis not in (2, 3):
                return None
            return self.builder_.emit(R.take(src, e.args[1], axis=axis)), block, 0, ch
        at = e.attrs
        if str(at.layout) != "NCHW" or len(e.args) < 2:
            return None
        out_hw = _shape(e)[2:]
        if str(at.method) == "nearest_neighbor" and (out_hw[0] % xs[2] or out_hw[1] % xs[3]):
            # measured: TOPI's NCHW{b}c nearest resize by a fractional factor does not
            # sample where its NCHW one does (max error 0.78 of max|ref| on 8x8 -> 13x11,
            # half_pixel); integer factors (2x, the FPN / U-Net case) and linear matched
            # onnxruntime (tests/tvm_tests/test_packed_patterns.py)
            return None
        return self.builder_.emit(R.image.resize2d(
            src, e.args[1], roi=[float(r) for r in at.roi], layout=f"NCHW{block}c",
            method=at.method, coordinate_transformation_mode=at.coordinate_transformation_mode,
            rounding_method=at.rounding_method, cubic_alpha=float(at.cubic_alpha),
            cubic_exclude=int(at.cubic_exclude), extrapolation_value=float(at.extrapolation_value),
            out_dtype=at.out_dtype)), block, 0, ch

    def _elementwise(self, e):
        """An elementwise op re-emitted on packed tensors: its full-size 4-D operands
        each from a packed tensor (the float gate and quantize chains after a slice, the
        sum of two resized branches), its other operands scalars or per-row / per-column
        tables (``(1, 1, H, 1)``: a linear Resize's weights), which broadcast the same
        way in the packed layout once given a trailing block axis of 1."""
        shape = _shape(e)
        if shape is None or len(shape) != 4:
            return None
        args, block, ch = list(e.args), None, None
        for i, arg in enumerate(e.args):
            if not isinstance(getattr(arg, "ty", None), relax.TensorType) or _scalar(arg):
                args[i] = self.visit_expr(arg)
                continue
            ashape = _shape(arg)
            if ashape == shape:
                inner = self._packed(arg)
                if inner is None:
                    return None
                src, a, off, c = inner
                if block is None:
                    ch = c
                    block = a if c % a == 0 else next(b for b in (16, 8, 4, 2, 1) if c % b == 0)
                args[i] = self._materialize(src, a, off, c, block)
            elif ashape is not None and len(ashape) == 4 and ashape[1] == 1 \
                    and isinstance(arg, tvm.ir.expr.Constant):
                args[i] = relax.const(arg.value.numpy().reshape(ashape + [1]), arg.ty.dtype)
            else:
                return None
        if block is None:
            return None
        return self.builder_.emit(relax.Call(e.op, args, e.attrs, e.ty_args)), block, 0, ch

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        kind = layout_transform_kind(call)
        if kind is not None and kind[0] == "pack":
            got = self._packed(call.args[0])
            if got is not None and got[3] % kind[1] == 0:
                return self._materialize(*got, kind[1])
        return super().visit_call_(call)


def te_repack(bb: relax.BlockBuilder, x: relax.Expr, begin: int, channels: int, block: int):
    """The `_repack_te` kernel as a Relax call (packed -> packed, no NCHW detour)."""
    return bb.call_te(_repack_te, x, begin, channels, block, primfunc_name_hint="repack")


def keep_packed(mod: tvm.IRModule) -> tvm.IRModule:
    """The rewrite of the module docstring on every Relax function of ``mod`` (run after
    ``ConvertLayout``; dead unpacks are left for dead-code elimination)."""
    mutator = _KeepPacked(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.var2val = dict(relax.analysis.get_var2val(func))
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get())


def _channel_crop(call) -> tuple[int, int] | None:
    """``(lo, hi)`` of ``strided_slice(x, axes=[1], [lo], [hi])`` (stride 1) of a static
    4-D ``x``, else ``None``."""
    if not _is_op(call, "relax.strided_slice"):
        return None
    xs = _shape(call.args[0])
    axes, begin, end = (_ints_of(t) for t in call.args[1:4])
    strides = _ints_of(call.args[4]) if len(call.args) > 4 else None
    if xs is None or len(xs) != 4 or axes is None or begin is None or end is None \
            or len(axes) != 1 or axes[0] % 4 != 1 or (strides and any(v != 1 for v in strides)):
        return None
    c = xs[1]
    lo, hi = (min(c, max(0, v if v >= 0 else v + c)) for v in (begin[0], end[0]))
    return (lo, hi) if hi > lo else None


def _as_4d(const: relax.Constant) -> relax.Constant:
    """A constant of rank 1-3 as the rank-4 one it broadcasts as (leading 1s: a PRelu's
    ``(C, 1, 1)`` slope is ``(1, C, 1, 1)``), so per-channel tables of any rank are seen as
    such; other constants unchanged."""
    shape = _shape(const)
    if shape is None or not 0 < len(shape) < 4:
        return const
    return relax.const(const.value.numpy().reshape([1] * (4 - len(shape)) + shape),
                       const.ty.dtype)


@relax.expr_functor.mutator
class _SinkCrops(relax.PyExprMutator):
    """See `sink_channel_crops`.  ``self.full`` maps an original dataflow var whose value
    is a channel window ``[lo, hi)`` of a wider tensor to ``(wide var, lo, hi, wide
    channels)``; a use outside the moved ops gets the window, sliced once (``self.crops``)."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.users: dict = {}
        self.full: dict = {}
        self.crops: dict = {}

    def _crop(self, var):
        if var not in self.crops:
            wide, lo, hi, _ = self.full[var]
            self.crops[var] = self.builder_.emit(R.strided_slice(wide, [1], [lo], [hi]))
        return self.crops[var]

    def visit_dataflow_var_(self, var):
        return self._crop(var) if var in self.full else super().visit_dataflow_var_(var)

    def _widened(self, call):
        """``(call on the wide tensors, window)`` when ``call`` is elementwise on windows
        of one wide tensor shape, its other operands constants (scalars, or per channel:
        widened with the edge channel's value, so the extra channels compute something
        harmless that is then cropped away), else ``None``."""
        if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op) \
                or call.op.name not in _ELEMENTWISE | _SELECT:
            return None
        shape = _shape(call)
        window, args = None, []
        for arg in call.args:
            if isinstance(arg, relax.Var) and arg in self.full:
                wide, lo, hi, c = self.full[arg]
                if window not in (None, (lo, hi, c)) or _shape(arg) != shape:
                    return None
                window = (lo, hi, c)
                args.append(wide)
            elif isinstance(arg, tvm.ir.expr.Constant):
                args.append(_as_4d(arg))  # scalars and per-channel tables, checked below
            elif not isinstance(getattr(arg, "ty", None), relax.TensorType):
                args.append(arg)  # (attributes passed as values: clip's bounds)
            else:
                return None
        if window is None or shape is None or len(shape) != 4:
            return None
        lo, hi, c = window
        for i, arg in enumerate(args):
            if not isinstance(arg, tvm.ir.expr.Constant) or _scalar(arg):
                continue
            ashape = _shape(arg)
            if ashape is None or len(ashape) != 4 or any(
                    d not in (1, shape[k]) for k, d in enumerate(ashape)):
                return None
            if ashape[1] == hi - lo and hi - lo > 1:
                table = np.pad(arg.value.numpy(), [(0, 0), (lo, c - hi), (0, 0), (0, 0)],
                               mode="edge")
                args[i] = relax.const(table, arg.ty.dtype)
            elif ashape[1] != 1:
                return None
        return relax.Call(call.op, args, call.attrs, call.ty_args), window

    def visit_var_binding_(self, binding):
        var, value = binding.var, binding.value
        if isinstance(var, relax.DataflowVar):
            window = _channel_crop(value)
            src = value.args[0] if window is not None else None
            if window is not None and isinstance(src, relax.Var) and src not in self.full \
                    and len(self.users.get(src, ())) == 1:
                self.full[var] = (self.visit_expr(src), *window, _shape(src)[1])
                return
            widened = self._widened(value)
            if widened is not None:
                call, (lo, hi, c) = widened
                self.full[var] = (self.builder_.emit(call), lo, hi, c)
                return
        super().visit_var_binding_(binding)


def sink_channel_crops(mod: tvm.IRModule) -> tvm.IRModule:
    """Move each channel crop ``strided_slice(y, axis 1)`` of a tensor used by nothing
    else past the elementwise ops after it, which then compute on all of ``y``'s channels
    (per-channel constants widened), and crop their results instead.  Why: a conv whose
    outputs were padded to whole vectors (`layout._pad_output_channels`) was followed by
    the crop, which TVM's fusion does not take into the conv's kernel -- so its bias /
    requantize / activation epilogue ran as separate kernels over the stored int32 (or
    float) output.  After the move the epilogue fuses into the conv and only its result
    (int8 for a requantize) is cropped.  Run on NCHW modules, before ``ConvertLayout``;
    the values of the kept channels are unchanged (the ops are channel by channel)."""
    mutator = _SinkCrops(mod)
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        users: dict = {}
        for block in getattr(func.body, "blocks", []):
            if isinstance(block, relax.DataflowBlock):
                users.update(relax.analysis.udchain(block))
        mutator.users, mutator.full, mutator.crops = users, {}, {}
        mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get())
