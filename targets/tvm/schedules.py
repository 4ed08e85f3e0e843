"""Schedule templates for our packed convolutions, as MetaSchedule custom rules.

MetaSchedule's generic search (multi-level tiling, then auto-tensorization) needs hundreds
of trials per conv, and at the budgets a whole network gets it left tuned fp32 1.2-1.9x
slower than onnxruntime and MobileNetV2 int8 at 6.8 ms (onnxruntime int8: 2.3 ms).  The
schedules that make direct convolution fast on a CPU are known (TVM's old x86
``conv2d_NCHWc`` / ``conv2d_NCHWc_int8`` templates): a register block of output pixels
times one vector of output channels, accumulated over the whole reduction (``vpdpbusd``
for u8 x s8, a broadcast multiply-add for float), with the epilogue (bias, requantize,
activation, the next conv's input shift) computed right after each block while it is in
cache.  The templates below write those schedules with one or two tunable factors
(perfect tiles that MetaSchedule samples and mutates), so a kernel needs a handful of
trials, not hundreds; parallel and vectorized loops, the reduction's init and the
tensorization are left to MetaSchedule's postprocessors, as for its own rules.  Measured:
benchmarks/README.md ("Latest (session 6)").

`pack_convolutions` puts ``schedule_rule = <name>`` on the conv blocks of targets with an
integer dot-product path (`dot_product`); MetaSchedule's ``ApplyCustomRule`` (first of its
default CPU rules, x86 and Arm alike) then calls the registered template for that block
instead of its own rules:

* ``vnni`` (x86 AVX-512 VNNI, where the templates were measured): every packed conv --
  u8 x s8 (``vpdpbusd``), float or other dense, depthwise.
* ``neon`` (aarch64 without SDOT, e.g. the Cortex-A72): the int8 x int8 convs
  (`schedule_conv2d_nchwc_s8s8`), each ``4o x 4i`` step one call of TVM's
  ``dot_4x4_i8i8s32_neon`` (``smull`` / ``saddlp`` / ``addp``: widening multiplies, as
  ARMv8.0 has no dot-product instruction).  Float and depthwise convs keep MetaSchedule's
  generic search there: the templates' register blocks are sized for 32 AVX-512
  registers, and on the A72 only emulated timings can check a choice.
"""
from __future__ import annotations

from typing import Any

import tvm

__all__ = ["U8S8_RULE", "S8S8_RULE", "CONV_RULE", "DEPTHWISE_RULE", "dot_product",
           "int8_conv_data", "register_schedule_rules", "schedule_conv2d_nchwc_u8s8",
           "schedule_conv2d_nchwc_s8s8", "schedule_conv2d_nchwc", "schedule_depthwise_nchwc"]

U8S8_RULE = "conv2d_nchwc_u8s8"
S8S8_RULE = "conv2d_nchwc_s8s8"
CONV_RULE = "conv2d_nchwc"
DEPTHWISE_RULE = "depthwise_conv2d_nchwc"
_REGISTERED = False


def dot_product(target: Any) -> str | None:
    """The integer dot-product path of ``target`` (a TVM target or dict): ``"vnni"`` (x86
    ``vpdpbusd``, u8 x s8), ``"neon"`` (aarch64 NEON without SDOT: s8 x s8 by widening
    multiplies) or ``None``.  It decides the int8 conv data type (`int8_conv_data`), the
    packed int8 layouts and which kernels get our schedule templates."""
    from .build import make_target

    tgt = make_target(target)
    if str(tgt.kind.name) != "llvm":
        return None

    def has(feature: str) -> bool:
        try:
            return bool(tvm.target.codegen.target_has_features(feature, tgt))
        except Exception:  # noqa: BLE001  (a target LLVM cannot describe: no)
            return False

    if has("avx512vnni"):
        return "vnni"
    if "aarch64" in str(tgt.attrs.get("mtriple", "")) and has("neon"):
        return "neon"
    return None


def int8_conv_data(target: Any) -> str:
    """The type an int8 conv's data is convolved in on ``target``: ``"int8"`` for NEON's
    s8 x s8 multiplies, else ``"uint8"`` (``x + 128``: VNNI's u8 x s8 operand pair; see
    `lowering.quant._q_conv`)."""
    return "int8" if dot_product(target) == "neon" else "uint8"


def _inline_epilogue(sch, conv_name: str) -> list:
    """Inline the elementwise blocks after the conv (bias, requantize, clip, cast, the
    next conv's u8 shift) into the blocks that write the function's outputs; returns
    those (they are computed at the conv's register block).  The blocks are looked up
    on an untraced copy of the schedule: a traced ``get_child_blocks`` does not replay
    with the same number of outputs once blocks are inlined."""
    from tvm import s_tir

    view = s_tir.Schedule(sch.mod)
    root = view.get_sblock("root")
    blocks = [view.get(b) for b in view.get_child_blocks(root)]
    allocated = {buf.name for buf in view.get(root).alloc_buffers}
    names = [b.name_hint for b in blocks]
    kept = []
    for block in blocks[names.index(conv_name) + 1:]:
        if all(w.source.name in allocated for w in block.writes):
            sch.compute_inline(sch.get_sblock(block.name_hint))
        else:
            kept.append(block.name_hint)
    return [sch.get_sblock(name) for name in kept]


def _schedule_dot_conv(sch, conv, tiles, intrin_for, lanes: int | None, max_pixels: int,
                       max_rows: int) -> Any:
    """The register-blocked int8 conv shared by the dot-product templates: loops ``n,
    O/ob, oh, ow, ob`` and reductions ``I/ib, kh, kw, ib/4, 4i`` (`layout._conv_dot_te`)
    become ``n, O/ob, oh/oh_f, ow/reg_n``, the reductions, then ``oh_f x reg_n``
    unrolled, each ``ob`` outputs x 4 inputs: one dot-product step of ``ob`` lanes, or
    ``ob / lanes`` of ``lanes`` (also unrolled).  The step is blockized and annotated for
    MetaSchedule's tensorize postprocessor with ``intrin_for(step width)``; the epilogue is
    computed under ``ow/reg_n``.  Parallel and vectorized loops, the reduction's init and
    the tensorization itself are left to MetaSchedule's postprocessors, as for its own
    multi-level tiling: the trace then replays with any tile decision (a traced
    ``get_loops`` after ``reverse_compute_at`` would not: a factor of 1 drops a loop)."""
    outs = _inline_epilogue(sch, sch.get(conv).name_hint)
    n, oc, oh, ow, o, rc, ry, rx, rm, ri = sch.get_loops(conv)
    ob = int(sch.get(o).extent)
    fixed = [None, None]
    if tiles is not None:
        fixed = [[int(sch.get(loop).extent) // f, f] for loop, f in zip((ow, oh), tiles)]
    reg_n = sch.sample_perfect_tile(ow, n=2, max_innermost_factor=max_pixels,
                                    decision=fixed[0])
    oh_f = sch.sample_perfect_tile(oh, n=2, max_innermost_factor=max_rows, decision=fixed[1])
    owo, owi = sch.split(ow, reg_n)
    oho, ohi = sch.split(oh, oh_f)
    register = [ohi, owi]
    if lanes is not None and lanes < ob:
        oo, o = sch.split(o, [ob // lanes, lanes])
        register.append(oo)
    sch.reorder(n, oc, oho, owo, rc, ry, rx, rm, *register, o, ri)
    for out in outs:
        sch.reverse_compute_at(out, owo)
    dot = sch.blockize(o)
    sch.annotate(dot, "meta_schedule.auto_tensorize", intrin_for(min(ob, lanes or ob)))
    for loop in register:
        sch.unroll(loop)
        # an annotated loop is one MetaSchedule's parallel/vectorize postprocessor leaves
        # alone (it would vectorize the register block around the tensorized call)
        sch.annotate(loop, "schedule_template", "register_block")
    return sch


def schedule_conv2d_nchwc_u8s8(sch, conv, tiles: tuple[int, int] | None = None) -> Any:
    """Schedule the ``conv2d_nchwc_u8s8`` block for x86 VNNI (`_schedule_dot_conv`):
    ``oh_f x reg_n`` pixels (up to 4 x 16), each one ``vpdpbusd`` over ``16o x 4i``
    (``8o x 4i``, its 256-bit form, for blocks of 8 output channels)."""
    from tvm.s_tir.tensor_intrin.x86 import VNNI_DOT_16x4_INTRIN

    from .intrin import VNNI_DOT_8x4

    intrins = {16: VNNI_DOT_16x4_INTRIN, 8: VNNI_DOT_8x4}
    return _schedule_dot_conv(sch, conv, tiles, intrins.__getitem__, None, 16, 4)


def schedule_conv2d_nchwc_s8s8(sch, conv, tiles: tuple[int, int] | None = None) -> Any:
    """Schedule the ``conv2d_nchwc_s8s8`` block for aarch64 NEON (`_schedule_dot_conv`):
    each pixel's ``ob`` outputs are ``ob / 4`` calls of TVM's ``dot_4x4_i8i8s32_neon``
    (4 outputs x 4 inputs: two ``smull``, two ``saddlp``, an ``addp``).  The register
    block holds at most 16 int32x4 accumulators (of NEON's 32 registers): ``reg_n <=
    64 / ob`` pixels of one row."""
    from tvm.s_tir.tensor_intrin.arm_cpu import ARM_DOT_4x4_i8_NEON_INTRIN

    ob = int(sch.get(sch.get_loops(conv)[4]).extent)
    return _schedule_dot_conv(sch, conv, tiles, lambda _: ARM_DOT_4x4_i8_NEON_INTRIN, 4,
                              max(1, 64 // ob), 1)


def schedule_depthwise_nchwc(sch, conv, reg_n: int | None = None) -> Any:
    """Schedule a ``depthwise_conv2d_nchwc`` block (loops ``n, C/b, oh, ow, b``,
    reductions ``kh, kw``; int8 x int8 -> int32 or float): ``n, C/b, oh, ow/reg_n, kh,
    kw``, then ``reg_n`` output pixels unrolled, each a multiply-accumulate over the
    ``b`` (16) channels of the block, which MetaSchedule's postprocessor vectorizes; the
    spatial pad is computed per channel block, the epilogue per register block.
    MetaSchedule's generic search left MobileNetV2's int8 depthwise convs at ~3 ms in
    all; this template, 0.52 ms (best of three factors per kernel, by hand)."""
    outs = _inline_epilogue(sch, sch.get(conv).name_hint)
    n, c, oh, ow, i, ry, rx = sch.get_loops(conv)
    fixed = None if reg_n is None else [int(sch.get(ow).extent) // reg_n, reg_n]
    tile = sch.sample_perfect_tile(ow, n=2, max_innermost_factor=16, decision=fixed)
    owo, owi = sch.split(ow, tile)
    sch.reorder(n, c, oh, owo, ry, rx, owi, i)
    for out in outs:
        sch.reverse_compute_at(out, owo)
    for producer in sch.get_producers(conv):
        if sch.get(producer).name_hint == "pad":
            sch.compute_at(producer, c)
    sch.unroll(owi)
    sch.annotate(owi, "schedule_template", "register_block")
    return sch


def schedule_conv2d_nchwc(sch, conv, reg_n: int | None = None) -> Any:
    """Schedule a ``conv2d_nchwc`` block (loops ``n, O/ob, oh, ow, ob``, reductions
    ``I/ib, kh, kw, ib``; float, or an integer conv without a dot-product layout):
    ``n, O/ob, oh, ow/reg_n``, the reductions, then ``reg_n`` output pixels unrolled,
    each an ``ob``-wide multiply-add (one AVX-512 register of 16 floats, which
    MetaSchedule's postprocessor vectorizes) with the input value broadcast: the
    register-blocked direct convolution of TVM's old x86 ``conv2d_NCHWc`` template.
    By hand, one thread, conv 64->64 3x3 at 56x56: 1.10 ms at reg_n = 14 (onnxruntime
    1.10 ms, MetaSchedule's best NCHW schedule after 200 trials 1.33 ms)."""
    outs = _inline_epilogue(sch, sch.get(conv).name_hint)
    n, oc, oh, ow, o, rc, ry, rx, ri = sch.get_loops(conv)
    fixed = None if reg_n is None else [int(sch.get(ow).extent) // reg_n, reg_n]
    tile = sch.sample_perfect_tile(ow, n=2, max_innermost_factor=28, decision=fixed)
    owo, owi = sch.split(ow, tile)
    sch.reorder(n, oc, oh, owo, rc, ry, rx, ri, owi, o)
    for out in outs:
        sch.reverse_compute_at(out, owo)
    sch.unroll(owi)
    sch.annotate(owi, "schedule_template", "register_block")
    return sch


def _as_rule(template):
    """A custom rule applying ``template`` to a copy of the schedule.  A kernel the
    template does not fit (a fused epilogue it cannot place, an unexpected loop nest)
    must not abort the whole tuning run: the block then loses its annotation, with a
    warning, and MetaSchedule's own rules schedule it as usual."""

    def rule(sch, block):
        attempt = sch.copy()
        try:
            return [template(attempt, block)]
        except Exception as exc:  # noqa: BLE001  (ScheduleError, or a loop nest it did not expect)
            import warnings

            name = sch.get(block).name_hint
            warnings.warn(f"schedule template {template.__name__} does not fit block "
                          f"'{name}' ({type(exc).__name__}); MetaSchedule's generic rules "
                          "schedule it")
            sch.unannotate(block, "schedule_rule")
            return [sch]

    return rule


_RULES = {U8S8_RULE: schedule_conv2d_nchwc_u8s8, S8S8_RULE: schedule_conv2d_nchwc_s8s8,
          DEPTHWISE_RULE: schedule_depthwise_nchwc,
          CONV_RULE: schedule_conv2d_nchwc}


def register_schedule_rules() -> None:
    """Register the templates under MetaSchedule's custom-rule names (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    for name, template in _RULES.items():
        tvm.register_global_func(f"s_tir.meta_schedule.cpu.{name}", _as_rule(template),
                                 override=True)
    _REGISTERED = True
