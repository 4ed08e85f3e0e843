"""Packed (NCHWc) convolutions for CPU targets.

``pack_convolutions(mod, "nchwc")`` rewrites our lowered NCHW Relax module before it is
built or tuned:

0. Rewrites (`_CONV_REWRITES`, each a function from a call to its replacement): a
   channel ``split`` becomes channel slices (`keep_packed.split_channels_as_slices`), a
   ``clip`` max/min (`keep_packed.clip_as_min_max`: ``clip`` has no layout rule); a
   transposed conv with kernel = stride and no padding (U-Net upsampling) becomes a 1x1
   conv + depth-to-space; an int8 conv with input channels not a multiple of 4 gets zero
   channels; a dense conv with an output count not a multiple of 4 (a segmentation head)
   gets zero filters up to a vector's width, sliced off after it -- after its elementwise
   epilogue (`keep_packed.sink_channel_crops`), so bias and requantize stay in its kernel.
1. ``relax.transform.ConvertLayout`` with a per-conv choice (`_choose_layouts`): dense
   convs get ``NCHW{ib}c`` data, ``OIHW{ib}i{ob}o`` weights and ``NCHW{ob}c`` output
   (blocks of up to 16 channels: one AVX-512 register of fp32), depthwise convs
   ``NCHW{b}c`` / ``OIHW1i{b}o``.  Relax propagates the packed layout through the
   elementwise ops, adds, pools and reductions in between, so activations stay packed from
   conv to conv and layout transforms are only left at the edges (and where a block size
   changes).  Other grouped convs keep NCHW.  `keep_packed.keep_packed` then keeps channel
   slices, resizes and H/W gathers on the packed data (Relax unpacks around them), and
   a change of block is one direct packed -> packed ``repack`` kernel.
2. ``FoldConstant``: the weights' layout transforms run once, at build time (weights are
   stored pre-packed; nothing is transformed at run time).
3. ``LegalizeOps`` with our own TE kernels for the packed layouts (TVM's legalization has
   none).  The bias / activation / requantize ops that follow a conv are elementwise in
   the packed layout, so the fusion pipeline puts them into the conv's kernel.

int8 x int8 -> int32 convs whose channels allow it (inputs a multiple of 4, outputs of
16 -- or of 8 on targets with the schedule templates, see below) are laid out for
dot-product instructions: weights are ``O/16, I/ib, KH, KW, ib/4, 16o, 4i``, and the
conv's innermost ``16 x 4`` reduction block is exactly x86 VNNI's ``vpdpbusd`` (TVM's
``dot_16x4_vnni`` tensor intrinsic, u8 x s8 -> s32).  The lowering of ``q.Conv`` already
hands them uint8 data (``x + 128``, shifted inside the producer's epilogue, the zero point
folded into the bias; `lowering.quant._q_conv`).  Other int8 data (``ConvInteger``) is
shifted to uint8 here (``x + 128``, padded with 128 -- a real zero) in a small pack kernel,
and ``128 * sum(w)`` per output channel is subtracted in a fused epilogue, so results stay
bit-exact.  An int8 conv with a channel count that is not a multiple of 4
(the RGB or grayscale first conv) is padded to one with zero channels and zero weights
first (`_pad_input_channels`), so it takes the same kernel.

On targets with VNNI (`schedules.dot_product` is ``"vnni"``) every packed conv kernel (u8
x s8, float or other dense, depthwise) carries a ``schedule_rule`` annotation: MetaSchedule
schedules them with our templates (`schedules.py`), which tune one or two tile factors
instead of searching the whole space; u8 x s8 convs take output blocks of 8 channels too
(the 256-bit ``vpdpbusd``).

On aarch64 NEON targets (``"neon"``: the Cortex-A72, which has no SDOT) the lowering keeps
int8 conv data signed (`schedules.int8_conv_data`) and int8 x int8 convs with channel
counts that are multiples of 4 take the same weight layout with output blocks of 16, 8 or
4: ``conv2d_nchwc_s8s8`` kernels, each ``4o x 4i`` step one call of TVM's
``dot_4x4_i8i8s32_neon``, scheduled by our s8 x s8 template.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax, te, tirx

from .keep_packed import (_ELEMENTWISE, _SELECT, clip_as_min_max, keep_packed,
                          sink_channel_crops, split_channels_as_slices)
from .schedules import CONV_RULE, DEPTHWISE_RULE, dot_product

__all__ = ["pack_convolutions", "LAYOUTS", "packed_conv_count", "check_layout",
           "apply_layout"]

LAYOUTS = ("nchw", "nchwc")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS + ("auto",):
        raise ValueError(f"unknown conv layout {layout!r}; known: {list(LAYOUTS) + ['auto']}")
    return layout


def _block(c: int, choices=(16, 8, 4, 2, 1)) -> int:
    for b in choices:
        if c % b == 0:
            return b
    return 1


def _ints(arr) -> list[int]:
    return [int(v) for v in arr]


def _default_conv2d_legalize():
    return tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")


# -- TE stages ----------------------------------------------------------------------------

def _conv_f32_te(xp, wp, out_hw, strides, dilation, out_dtype, template=False):
    n, icc, _, _, ib = _ints(xp.shape)
    occ, _, kh, kw, _, ob = _ints(wp.shape)
    oh, ow = out_hw
    sh, sw = strides
    dh, dw = dilation
    rc = te.reduce_axis((0, icc), "rc")
    ri = te.reduce_axis((0, ib), "ri")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, occ, oh, ow, ob),
        lambda b, oc, y, x, o: te.sum(
            xp[b, rc, y * sh + ry * dh, x * sw + rx * dw, ri].astype(out_dtype)
            * wp[oc, rc, ry, rx, ri, o].astype(out_dtype), axis=[rc, ry, rx, ri]),
        name="conv2d_nchwc", attrs={"schedule_rule": CONV_RULE} if template else None)


def _conv_dot_te(xp, wp, out_hw, strides, dilation, template=False):
    """int8 conv for dot-product steps of ``ob`` outputs x 4 inputs: weights
    ``O/ob, I/ib, KH, KW, ib/4, ob, 4`` (`_dot_weights`); data uint8 (x86 VNNI's operand)
    or int8 (NEON), the block and its template named after the pair."""
    name = "conv2d_nchwc_u8s8" if xp.dtype == "uint8" else "conv2d_nchwc_s8s8"
    n, icc, _, _, ib = _ints(xp.shape)
    occ, _, kh, kw, i4, ob, four = _ints(wp.shape)
    oh, ow = out_hw
    sh, sw = strides
    dh, dw = dilation
    rc = te.reduce_axis((0, icc), "rc")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    rm = te.reduce_axis((0, i4), "rm")
    ri = te.reduce_axis((0, four), "ri")
    return te.compute(
        (n, occ, oh, ow, ob),
        lambda b, oc, y, x, o: te.sum(
            xp[b, rc, y * sh + ry * dh, x * sw + rx * dw, rm * 4 + ri].astype("int32")
            * wp[oc, rc, ry, rx, rm, o, ri].astype("int32"), axis=[rc, ry, rx, rm, ri]),
        name=name, attrs={"schedule_rule": name} if template else None)


# -- layout choice (ConvertLayout callback) ----------------------------------------------

def _static_shape(expr) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    if shape is None or any(not isinstance(d, tirx.IntImm) for d in shape):
        return None
    return [int(d) for d in shape]


def _dot_shape(c: int, o: int, kind: str | None) -> bool:
    """Whether an int8 conv of ``c`` inputs and ``o`` outputs takes the dot-product layout
    with its first choice of output block (16 for VNNI; 16, 8 or 4 for NEON)."""
    return c % 4 == 0 and o % (4 if kind == "neon" else 16) == 0


def _packable_conv_shapes(call: relax.Call) -> tuple[list[int], list[int]] | None:
    """``(data shape, weight shape)`` of an NCHW/OIHW ``conv2d`` with a constant weight
    and static 4-D shapes (the convs the packed layouts handle), else ``None``."""
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"):
        return None
    a = call.attrs
    if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or a.out_layout not in ("", "NCHW"):
        return None
    if not isinstance(call.args[1], tvm.ir.expr.Constant):
        return None  # weights as run-time parameters: nothing to pre-pack, keep NCHW
    xs, ws = _static_shape(call.args[0]), _static_shape(call.args[1])
    if xs is None or ws is None or len(xs) != 4:
        return None
    return xs, ws


def _choose_layouts(call: relax.Call, kind: str | None = None,
                    data_block: int | None = None) -> dict:
    """Per-conv layouts for ``ConvertLayout``: ``[data, kernel, out]``; ``{}`` keeps NCHW.
    ``kind``: the target's `dot_product` path; ``data_block``: the block the conv's data
    will already be packed in (`_DataBlocks`), which the conv then reads as it is."""
    if not isinstance(call.op, tvm.ir.Op):
        return {}
    if call.op.name == "relax.nn.conv2d_transpose":
        # Relax's layout inference for it fails on packed inputs ("Layouts must have the
        # same size"): asking for NCHW explicitly makes it unpack the input instead.
        return {"relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}
    shapes = _packable_conv_shapes(call)
    if shapes is None:
        return {}
    xs, ws = shapes
    c, o, g = xs[1], ws[0], int(call.attrs.groups)
    dtype = call.args[0].ty.dtype
    if g == 1:
        if dtype in ("int8", "uint8") and _dot_shape(c, o, kind):
            ib, ob = _block(c, (16, 8, 4)), _block(o, (16, 8, 4))
        else:
            ib, ob = _block(c), _block(o)
        if data_block is not None and c % data_block == 0:
            ib = data_block
        return {"relax.nn.conv2d": [f"NCHW{ib}c", f"OIHW{ib}i{ob}o", f"NCHW{ob}c"]}
    if g == c == o and ws[1] == 1:  # depthwise
        b = _block(c)
        return {"relax.nn.conv2d": [f"NCHW{b}c", f"OIHW1i{b}o", f"NCHW{b}c"]}
    return {}


# ops whose result Relax's layout inference gives the packed layout of their (first
# packed) operand
_FOLLOW = _ELEMENTWISE | _SELECT | frozenset(
    "relax." + n for n in ("nn.max_pool2d", "nn.avg_pool2d", "nn.silu", "nn.gelu", "power"))


class _DataBlocks:
    """The channel block each conv's data will be packed in when ``ConvertLayout`` reaches
    it, predicted on the NCHW module: a packed conv's output block, kept through the ops
    that follow their operand's layout (`_FOLLOW`) and through a channel ``concat`` (Relax
    gives it its first packed input's layout when every input's channels are a multiple
    of that block).

    Why: ``ConvertLayout`` can go from NCHW to a packed layout and back, but not from one
    block to another -- both layouts have 5 axes, so it takes its axis-permutation path
    and fails ("Invalid layout axis 16b").  That is what a conv after a concat of
    differently sized blocks asked for (ddddocr_det's 24 + 24 channels packed by 8, read
    by a conv choosing 16 for 48 channels), and the whole model fell back to NCHW
    (issue #16).  Such a conv reads its data in the block it comes in instead.  A wrong
    prediction only costs a block size: NCHW data is packed to any block."""

    def __init__(self, mod: tvm.IRModule, kind: str | None):
        self.kind = kind
        self.var2val: dict = {}
        for _, func in mod.functions_items():
            if isinstance(func, relax.Function):
                self.var2val.update(relax.analysis.get_var2val(func))
        self.memo: dict = {}

    def __call__(self, expr) -> int | None:
        if isinstance(expr, relax.Var):
            if expr not in self.memo:
                self.memo[expr] = None  # (no cycles in dataflow; guards recursion)
                value = self.var2val.get(expr)
                self.memo[expr] = self(value) if value is not None else None
            return self.memo[expr]
        if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
            return None
        name = expr.op.name
        if name == "relax.nn.conv2d":
            layouts = _choose_layouts(expr, self.kind, self(expr.args[0])).get(name)
            out = layouts[2] if layouts else "NCHW"
            return int(out[4:-1]) if out.startswith("NCHW") and out.endswith("c") else None
        if name == "relax.concat":
            fields = expr.args[0].fields if isinstance(expr.args[0], relax.Tuple) else None
            if not fields or int(expr.attrs.axis) % 4 != 1:
                return None
            shapes = [_static_shape(f) for f in fields]
            if any(sh is None or len(sh) != 4 for sh in shapes):
                return None
            block = next((b for b in map(self, fields) if b is not None), None)
            return block if block and all(sh[1] % block == 0 for sh in shapes) else None
        if name in _FOLLOW:
            shape = _static_shape(expr)
            for arg in expr.args:
                if isinstance(getattr(arg, "ty", None), relax.TensorType) \
                        and _static_shape(arg) == shape:
                    block = self(arg)
                    if block is not None:
                        return block
        return None


# -- TE kernels for the packed layouts ----------------------------------------------------

def _pad5(x, pads, fill):
    """Spatial padding (t, l, b, r) of packed NCHWc data, inside the conv's PrimFunc."""
    n, cc, h, w, cb = _ints(x.shape)
    pt, pl, pb, pr = pads
    if not any(pads):
        return x

    def f(b, c, y, xx, i):
        iy, ix = y - pt, xx - pl
        inside = tvm.tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
        return tvm.tirx.if_then_else(inside, x[b, c, iy, ix, i], tvm.tirx.const(fill, x.dtype))

    return te.compute((n, cc, h + pt + pb, w + pl + pr, cb), f, name="pad")


def _conv_nchwc_te(x, wp, pads, out_hw, strides, dilation, out_dtype, template=False):
    xp = _pad5(x, pads, 0)
    return _conv_f32_te(xp, wp, out_hw, strides, dilation, out_dtype, template)


def _depthwise_nchwc_te(x, wp, pads, out_hw, strides, dilation, out_dtype, template=False):
    xp = _pad5(x, pads, 0)
    n, cc, _, _, cb = _ints(xp.shape)
    _, _, kh, kw, _, _ = _ints(wp.shape)
    oh, ow = out_hw
    sh, sw = strides
    dh, dw = dilation
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, cc, oh, ow, cb),
        lambda b, c, y, xx, i: te.sum(
            xp[b, c, y * sh + ry * dh, xx * sw + rx * dw, i].astype(out_dtype)
            * wp[c, 0, ry, rx, 0, i].astype(out_dtype), axis=[ry, rx]),
        name="depthwise_conv2d_nchwc",
        attrs={"schedule_rule": DEPTHWISE_RULE} if template else None)


def _pack_u8_te(x, pads):
    """int8 NCHW{ib}c -> uint8 (``x + 128``), spatially padded with 128 (a real zero)."""
    n, cc, h, w, cb = _ints(x.shape)
    pt, pl, pb, pr = pads

    def f(b, c, y, xx, i):
        iy, ix = y - pt, xx - pl
        inside = tvm.tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
        v = x[b, c, tvm.tirx.max(tvm.tirx.min(iy, h - 1), 0),
              tvm.tirx.max(tvm.tirx.min(ix, w - 1), 0), i]
        v = (v.astype("int32") + 128).astype("uint8")
        return tvm.tirx.if_then_else(inside, v, tvm.tirx.const(128, "uint8"))

    return te.compute((n, cc, h + pt + pb, w + pl + pr, cb), f, name="pack_u8")


def _conv_dot_padded_te(x, wq, pads, out_hw, strides, dilation, template=False):
    return _conv_dot_te(_pad5(x, pads, 0), wq, out_hw, strides, dilation, template)


def _dot_weights(wv: np.ndarray) -> relax.Constant:
    """Packed ``O/ob, I/ib, KH, KW, ib, ob`` int8 weights regrouped for dot
    products: ``O/ob, I/ib, KH, KW, ib/4, ob, 4`` (ob outputs x 4 inputs per step)."""
    occ, icc, kh, kw, ib, ob = wv.shape
    wq = wv.reshape(occ, icc, kh, kw, ib // 4, 4, ob).transpose(0, 1, 2, 3, 4, 6, 5)
    return relax.const(np.ascontiguousarray(wq), "int8")


def _subtract_te(y, corr):
    return te.compute(y.shape, lambda *i: y(*i) - corr[0, i[1], 0, 0, i[4]], name="zp_correct")


def _legalize_conv2d(bb: relax.BlockBuilder, call: relax.Call, kind: str | None = None
                     ) -> relax.Expr:
    """TE kernels for the packed layouts; ``kind``: the target's `dot_product` path, which
    decides the int8 kernels and which conv blocks are marked for our schedule templates
    (`schedules.py`)."""
    a = call.attrs
    dl, kl, ol = str(a.data_layout), str(a.kernel_layout), str(a.out_layout or a.data_layout)
    if dl == "NCHW" and kl == "OIHW" and ol == "NCHW":
        return _default_conv2d_legalize()(bb, call)
    x, w = call.args
    ok = (dl.startswith("NCHW") and ol.startswith("NCHW") and kl.startswith("OIHW")
          and isinstance(w, tvm.ir.expr.Constant) and _static_shape(x) is not None)
    if not ok:
        raise ValueError(f"packed conv2d {dl}/{kl}/{ol} with a non-constant weight or "
                         "dynamic shape is not supported")
    wv = w.value.numpy()
    strides, dilation = _ints(a.strides), _ints(a.dilation)
    pads = _ints(a.padding)
    pads = {1: pads * 4, 2: [pads[0], pads[1]] * 2, 4: pads}[len(pads)]
    n, cc, h, wd, ib = _static_shape(x)
    kh, kw = wv.shape[2], wv.shape[3]
    oh = (h + pads[0] + pads[2] - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    out_dtype = call.ty.dtype
    groups = int(a.groups)
    template = kind == "vnni"
    if groups > 1:
        return bb.call_te(_depthwise_nchwc_te, x, w, pads, (oh, ow), strides, dilation,
                          out_dtype, template, primfunc_name_hint="depthwise_conv2d_nchwc")
    ob = wv.shape[5]
    # 16 output channels per block: one 512-bit vpdpbusd; 8 (outputs a multiple of 8 but
    # not of 16): its 256-bit form, an intrinsic only our template uses
    wide8 = template and tvm.target.codegen.llvm_version_major() >= 20  # (see intrin.py)
    dot = ib % 4 == 0 and (ob == 16 or (ob == 8 and wide8))
    if x.ty.dtype == "uint8" and w.ty.dtype == "int8" and dot:
        # already u8 (the lowering shifted it, the zero point is in the bias): padding as
        # given, no correction, the pad inlined into the conv's PrimFunc
        return bb.call_te(_conv_dot_padded_te, x, _dot_weights(wv), pads, (oh, ow),
                          strides, dilation, template, primfunc_name_hint="conv2d_nchwc_u8s8")
    if (kind == "neon" and x.ty.dtype == "int8" and w.ty.dtype == "int8" and ib % 4 == 0
            and ob % 4 == 0):
        # s8 x s8, 4 outputs x 4 inputs per NEON step (the lowering kept the data signed)
        return bb.call_te(_conv_dot_padded_te, x, _dot_weights(wv), pads, (oh, ow),
                          strides, dilation, True, primfunc_name_hint="conv2d_nchwc_s8s8")
    if x.ty.dtype == "int8" and w.ty.dtype == "int8" and dot:
        wq = _dot_weights(wv)
        occ = wv.shape[0]
        # sum over the input channels of each output channel, in the packed output layout
        wsum = wv.astype(np.int64).sum(axis=(1, 2, 3, 4))          # (O/ob, ob)
        corr = relax.const((128 * wsum).astype(np.int32).reshape(1, occ, 1, 1, ob), "int32")
        xp = bb.emit_te(_pack_u8_te, x, pads, primfunc_name_hint="pack_u8")
        y = bb.emit_te(_conv_dot_te, xp, wq, (oh, ow), strides, dilation, template,
                       primfunc_name_hint="conv2d_nchwc_u8s8")
        return bb.call_te(_subtract_te, y, corr, primfunc_name_hint="zp_correct")
    return bb.call_te(_conv_nchwc_te, x, w, pads, (oh, ow), strides, dilation, out_dtype,
                      template, primfunc_name_hint="conv2d_nchwc")


# -- conv rewrites before packing (rules as data: call -> replacement or None) -------------

def _conv_call(call: relax.Call):
    """``(data shape, weight shape, attrs, x, w)`` of a dense (groups 1) NCHW conv2d the
    packed layouts handle, else ``None``."""
    shapes = _packable_conv_shapes(call)
    if shapes is None or int(call.attrs.groups) != 1:
        return None
    return (*shapes, call.attrs, *call.args)


def _conv2d_like(a, x, w: np.ndarray, **changes) -> relax.Call:
    attrs = dict(strides=a.strides, padding=a.padding, dilation=a.dilation, groups=1,
                 data_layout="NCHW", kernel_layout="OIHW", out_dtype=a.out_dtype)
    attrs.update(changes)
    return relax.op.nn.conv2d(x, relax.const(w, str(w.dtype)), **attrs)


def _pad_input_channels(bb: relax.BlockBuilder, call: relax.Call, kind: str | None):
    """Integer dense convs whose input channels are not a multiple of 4 (the RGB or
    grayscale first conv) but whose outputs fit the dot-product layout get their input
    padded with zero channels up to a multiple of 4, and zero weights for them (a zero
    weight makes the padded values irrelevant), so they take the dot-product kernel
    instead of the generic one: MobileNetV2's 3->32 first conv at 224x224 took 6.7 ms of
    a 13.5 ms int8 call in the generic kernel."""
    conv = _conv_call(call)
    if conv is None:
        return None
    (_, c, _, _), ws, a, x, w = conv
    c4 = -(-c // 4) * 4
    if c == c4 or not _dot_shape(c4, ws[0], kind) or x.ty.dtype not in ("int8", "uint8") \
            or w.ty.dtype != "int8":
        return None
    wv = w.value.numpy()
    wp = np.zeros((wv.shape[0], c4) + wv.shape[2:], wv.dtype)
    wp[:, :c] = wv
    xp = bb.emit(relax.op.nn.pad(x, [0, 0, 0, c4 - c, 0, 0, 0, 0], "constant", 0))
    return _conv2d_like(a, xp, wp)


def _pad_output_channels(bb: relax.BlockBuilder, call: relax.Call, kind: str | None):
    """A dense conv with an output count that is not a multiple of 4 (a segmentation
    head's 11 classes) would be packed in blocks of 1 channel -- a scalar loop (unet_seg's
    16->11 head was its slowest fp32 kernel).  Its weights get zero filters up to a
    multiple of 16 (8 below 8), so it computes whole vectors, and the extra channels are
    sliced off after it."""
    conv = _conv_call(call)
    if conv is None:
        return None
    _, ws, a, x, w = conv
    o = ws[0]
    if o % 4 == 0 or o < 4:
        return None
    block = 8 if o < 8 else 16
    wv = w.value.numpy()
    wp = np.zeros((-(-o // block) * block,) + wv.shape[1:], wv.dtype)
    wp[:o] = wv
    y = bb.emit(_conv2d_like(a, x, wp))
    return relax.op.strided_slice(y, [1], [0], [o])


def _conv_transpose_as_conv(bb: relax.BlockBuilder, call: relax.Call, kind: str | None):
    """A transposed conv whose kernel equals its stride, without padding (a U-Net's 2x2 /
    stride 2 upsampling) writes each output pixel from exactly one input pixel:
    ``y[n, o, i*kh + u, j*kw + v] = sum_c x[n, c, i, j] w[c, o, u, v]``.  That is a 1x1
    conv to ``O * kh * kw`` channels (which takes the packed kernels and their templates)
    followed by a depth-to-space reshuffle -- instead of TVM's NCHW ``conv2d_transpose``
    between two layout transforms."""
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d_transpose"):
        return None
    a = call.attrs
    x, w = call.args
    xs, ws = _static_shape(x), _static_shape(w)
    if (not isinstance(w, tvm.ir.expr.Constant) or xs is None or ws is None or len(xs) != 4
            or str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "IOHW"
            or str(a.out_layout or "NCHW") != "NCHW" or int(a.groups) != 1):
        return None
    kh, kw = ws[2], ws[3]
    if (_ints(a.strides) != [kh, kw] or any(_ints(a.padding)) or any(_ints(a.output_padding))
            or _ints(a.dilation) != [1, 1]):
        return None
    n, c, h, wd = xs
    o = ws[1]
    w1 = w.value.numpy().transpose(1, 2, 3, 0).reshape(o * kh * kw, c, 1, 1)
    y = bb.emit(relax.op.nn.conv2d(x, relax.const(np.ascontiguousarray(w1), str(w1.dtype)),
                                   data_layout="NCHW", kernel_layout="OIHW",
                                   out_dtype=a.out_dtype))
    y = bb.emit(relax.op.reshape(y, (n, o, kh, kw, h, wd)))
    y = bb.emit(relax.op.permute_dims(y, [0, 1, 4, 2, 5, 3]))
    return relax.op.reshape(y, (n, o, h * kh, wd * kw))


_CONV_REWRITES = (_conv_transpose_as_conv, _pad_input_channels, _pad_output_channels,
                  split_channels_as_slices, clip_as_min_max)


@relax.expr_functor.mutator
class _RewriteConvs(relax.PyExprMutator):
    """Applies `_CONV_REWRITES` to each call, in order (a rule may hand its new conv to
    the next one)."""

    def __init__(self, mod: tvm.IRModule, kind: str | None):
        super().__init__(mod)
        self.kind = kind

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        expr = super().visit_call_(call)
        for rule in _CONV_REWRITES:
            if not isinstance(expr, relax.Call):
                break
            new = rule(self.builder_, expr, self.kind)
            if new is not None:
                expr = new
        return expr


def _rewrite_convs(mod: tvm.IRModule, kind: str | None) -> tvm.IRModule:
    mutator = _RewriteConvs(mod, kind)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()


def pack_convolutions(mod: tvm.IRModule, layout: str = "nchwc", target: Any = None
                      ) -> tvm.IRModule:
    """Convert ``mod``'s convolutions to packed layouts (``layout="nchwc"``: activations
    stay packed between convs and elementwise ops, weights are packed at build time) and
    legalize them; ``"nchw"`` returns ``mod`` unchanged.  The result goes through the
    normal build / tuning pipeline.  For a ``target`` with VNNI the packed convs are
    marked for our schedule templates (`schedules.py`); for an aarch64 NEON target the int8
    convs are s8 x s8 kernels with their template."""
    if check_layout(layout) == "auto":
        raise ValueError("layout 'auto' is resolved by the target (nchwc when tuning)")
    if layout == "nchw":
        return mod
    kind = dot_product(target) if target is not None else None
    mod = sink_channel_crops(_rewrite_convs(mod, kind))  # (crops after the epilogues)

    def legalize(bb, call):
        return _legalize_conv2d(bb, call, kind)

    blocks = _DataBlocks(mod, kind)
    mod = tvm.transform.Sequential([
        relax.transform.ConvertLayout({}, layout_cb=lambda call: _choose_layouts(
            call, kind, blocks(call.args[0]) if call.args else None)),
        relax.transform.Normalize(),
    ])(mod)
    mod = keep_packed(mod)  # split / slice / resize on packed data (keep_packed.py)
    seq = tvm.transform.Sequential([
        relax.transform.FoldConstant(),   # packs the constant weights, once, here
        relax.transform.LegalizeOps(customize_legalize_map={"relax.nn.conv2d": legalize}),
    ])
    return seq(mod)


def apply_layout(mod: tvm.IRModule, layout: str, target: Any = None
                 ) -> tuple[tvm.IRModule, str]:
    """`pack_convolutions`, falling back to NCHW (with a warning) when TVM's layout
    conversion fails on some op of the model (seen: ``relax.image.resize2d`` /
    ``conv2d_transpose`` in a U-Net: "Layouts must have the same size").  Returns
    ``(module, layout used)``."""
    try:
        return pack_convolutions(mod, layout, target), layout
    except Exception as exc:  # noqa: BLE001  (TVM raises its own error types)
        if layout == "nchw":
            raise
        import warnings

        msg = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"packed conv layout '{layout}' failed ({msg}); using nchw")
        return mod, "nchw"


def packed_conv_count(mod: tvm.IRModule) -> dict[str, int]:
    """How many packed conv kernels ``mod`` holds (by kind): for tests and reports."""
    out = {"conv": 0, "u8s8": 0, "s8s8": 0, "depthwise": 0}
    for gv, _ in mod.functions_items():
        name = gv.name_hint
        if name.startswith("conv2d_nchwc_u8s8"):
            out["u8s8"] += 1
        elif name.startswith("conv2d_nchwc_s8s8"):
            out["s8s8"] += 1
        elif name.startswith("conv2d_nchwc"):
            out["conv"] += 1
        elif name.startswith("depthwise_conv2d_nchwc"):
            out["depthwise"] += 1
    return out
