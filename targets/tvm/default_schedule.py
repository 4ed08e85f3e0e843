"""A schedule for every kernel that tuning did not reach: parallel and vectorized loops.

Relax lowers an op to a TE loop nest with no schedule at all; MetaSchedule gives a kernel
its schedule only when the database holds a record for it, and a kernel without one runs
as that naive nest, serial and scalar.  A tuning budget never reaches every task of a
100-task model (PP-OCR's recognizer int8: records for 90 of 111), so the tuned build
applies `default_schedule` after the database: `CPUFallback`, the CPU counterpart of
dlight's GPU fallback, on every kernel left (convs, matmuls, pools, elementwise chains,
layout transforms).  A kernel it cannot schedule stays as it was: the pass never fails a
build.  Measured on PP-OCR's recognizer, one kernel at a time, 1 thread: a 3x3 conv
67 -> 5.3 ms, a 1x1 conv with its HardSwish 6.1 -> 0.77 ms, a depthwise conv
5.8 -> 0.41 ms, the 120 x 6625 output matmul 40 -> 13 ms.  Packed u8 x s8 convs on a
VNNI target are tensorized instead (`_dot_conv`: ``vpdpbusd`` dot products; the ten
largest kernels of PP-OCR's recognizer int8 6.1-13.9x over the naive nest, of
EfficientNet-Lite0 int8 1.1-17x, the 112x112 ones bound by their 30-block epilogue).  (dlight's CPU ``Reduction``
rule, tried first, scheduled a conv with its epilogue 5x slower than no schedule and
made the 6625-class softmax slower too.)

The schedules only parallelize, reorder, vectorize and (integer dot products only)
tensorize loops, block by block: every block computes what it computed, float sums in
the same order, integer sums exactly.  (Float outputs can still differ from the naive
kernel's by an ulp: LLVM contracts more of the naive nest's multiplies and adds into
fused multiply-adds; see tests/tvm_tests/test_default_schedule.py.)
"""
from __future__ import annotations

import logging
from typing import Any

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr, normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, get_extent
from tvm.target.codegen import llvm_get_vector_width

from .checks import SCHEDULED
from .schedules import U8S8_RULE

__all__ = ["CPUFallback", "default_schedule", "is_scheduled"]

_log = logging.getLogger(__name__)

# Below this many iterations a parallel loop costs more in thread wake-ups than it saves
# (the VM's thread pool does not spin: each parallel region is a wake-up of every worker).
_MIN_PARALLEL_WORK = 16384
# Output pixels per register block of a tensorized u8 x s8 conv (`_dot_conv`): as many
# int32x16 accumulators, of AVX-512's 32 registers.  Measured (benchmarks/default_schedule.py,
# 10 largest kernels, 1 thread): 4 / 8 / 16 pixels, EfficientNet-Lite0 int8 18.3 / 13.2 /
# 11.4 ms, PP-OCR's recognizer int8 24.1 (8) / 21.3 (16) ms.
_DOT_PIXELS = 16


def _lanes(target: Any, dtype_bits: int) -> int:
    bits = llvm_get_vector_width(target)
    return max(2, (bits if bits > 0 else 128) // max(8, dtype_bits))


def _extent(sch: s_tir.Schedule, loop: Any) -> int | None:
    ext = get_extent(sch, loop)
    return ext if isinstance(ext, int) else None


def _contiguous(stmt: Any, var: tirx.Var) -> bool:
    """Whether every buffer access of block ``stmt`` is indexed by ``var`` in its last
    dimension only, as ``var + c`` (or not at all): a vector along ``var`` is then one
    load, not a gather.  The accesses themselves are read, not the block's declared
    regions: a Resize declares its whole input plane and reads it at computed positions
    (vectorized, that gather wrote wrong values).  (The u8 x s8 weights interleave 4
    input channels inside each output channel: vectorized over output channels they
    measured 2x slower than scalar.)"""
    import tvm_ffi
    from tvm.sym.pattern import detect_linear_equation

    ok = [True]

    def check(access: Any) -> Any:
        *outer, last = list(access.indices)
        if any(var in collect_vars_used_in_prim_expr(i) for i in outer):
            ok[0] = False
        elif var in collect_vars_used_in_prim_expr(last):
            coef = detect_linear_equation(last, [var])
            if len(coef) != 2 or not isinstance(coef[0], tirx.IntImm) or int(coef[0]) != 1:
                ok[0] = False
        return access

    tvm_ffi.structural_map(stmt.body, [(tvm.ir.expr.TensorLoad, check), (tirx.stmt.BufferStore, check)])
    return ok[0]


def _gathers(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` reads a buffer at positions computed from floats (a Resize's
    sampling positions).  Such kernels are left unscheduled: scheduled, a packed
    linear + nearest Resize kernel computed wrong values (a conv + linear + nearest Resize model
    was off by 14.8 of 32 vs onnxruntime), cause not found yet."""
    import tvm_ffi

    found = [False]

    def cast(expr: Any) -> Any:
        found[0] = found[0] or str(expr.value.dtype).startswith("float")
        return expr

    def load(access: Any) -> Any:
        for index in access.indices:
            tvm_ffi.structural_map(index, [(tvm.ir.prim.expr.Cast, cast)])
        return access

    tvm_ffi.structural_map(func.body, [(tvm.ir.expr.TensorLoad, load)])
    return found[0]


def _dot_intrin(target: Any, lanes: int) -> str | None:
    """The registered ``vpdpbusd`` intrinsic of ``lanes`` int32 outputs when ``target``
    has VNNI (`schedules.dot_product`), else None."""
    from .intrin import register_vnni_dots
    from .schedules import dot_product

    if dot_product(target) != "vnni":
        return None
    return register_vnni_dots().get(lanes)


def _is_dot_conv(block: Any) -> bool:
    return block.name_hint.startswith(U8S8_RULE)


def _has_dot_conv(sch: s_tir.Schedule, target: Any) -> bool:
    """Whether ``sch``'s function holds a u8 x s8 conv block and ``target`` has VNNI."""
    try:
        blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    except s_tir.schedule.ScheduleError:  # (no root block: a function written without blocks)
        return False
    return any(_is_dot_conv(b) for b in blocks) and _dot_intrin(target, 16) is not None


def _plain_infos(sch: s_tir.Schedule) -> list | None:
    """The root's blocks with their loops as TE wrote them, one loop per block iterator,
    bound to it as is; None if a block is not of that form (`normalize_prim_func`
    then).  Unlike dlight's normal form (which fuses the iterators the output buffer
    keeps adjacent and drops unit ones) the loops stay the operator's own."""
    from tvm.s_tir.dlight.analysis import IterInfo, SBlockInfo

    kinds = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    infos = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        stmt, loops = sch.get(block), sch.get_loops(block)
        binds = list(sch.get(loops[-1]).body.iter_values) if loops and isinstance(
            sch.get(loops[-1]).body, s_tir.SBlockRealize) else None
        if binds is None or len(loops) != len(stmt.iter_vars) or not all(
                b.same_as(sch.get(lp).loop_var) for b, lp in zip(binds, loops)):
            return None
        if any(iv.iter_type not in kinds for iv in stmt.iter_vars):
            return None
        iters = [IterInfo(kinds[iv.iter_type], iv.var, iv.dom.extent, lp)
                 for iv, lp in zip(stmt.iter_vars, loops)]
        infos.append(SBlockInfo(stmt.name_hint, iters, block,
                                any(iv.iter_type == tirx.IterVar.CommReduce
                                    for iv in stmt.iter_vars)))
    return infos


def _divisor(n: int, at_most: int) -> int:
    return next(d for d in range(min(n, at_most), 0, -1) if n % d == 0)


def _dot_conv(sch: s_tir.Schedule, block: Any, kinds: str, target: Any) -> bool:
    """Schedule a packed u8 x s8 conv block (`layout._conv_dot_te`: loops ``n, O/ob, oh,
    ow, ob``, reductions ``I/ib, kh, kw, ib/4, 4``) as dot products, if the target has
    them; True if done.  Its weights interleave 4 input channels inside each output
    channel, so no loop is contiguous in every buffer and the generic rule leaves it
    scalar (PP-OCR's recognizer int8, 1 thread: its 1x1 conv to 1x30x6x80x16 at
    26 ms naive, 16 ms default; tensorized here 2.7 ms; benchmarks/README.md).  Here the ``ob``
    outputs x 4 inputs of each step are one ``vpdpbusd`` (the step MetaSchedule's
    template tensorizes, `schedules.schedule_conv2d_nchwc_u8s8`), over a register block
    of up to `_DOT_PIXELS` output pixels of one row (unrolled) inside the reduction:
    ``n, O/ob, oh, ow/reg`` (fused, parallel when large), ``I/ib, kh, kw, ib/4``, then
    ``reg`` pixels of one ``vpdpbusd`` each.  Integer sums in another order: the
    same int32 results (wrapping, like the scalar adds, never saturating)."""
    stmt = sch.get(block)
    if not _is_dot_conv(stmt) or kinds != "SSSSSRRRRR":
        return False
    loops = sch.get_loops(block)
    exts = [_extent(sch, lp) for lp in loops]
    if any(e is None for e in exts) or exts[9] != 4:
        return False
    intrin = _dot_intrin(target, exts[4])
    if intrin is None:
        return False
    n, oc, oh, ow, o, rc, ry, rx, rm, ri = loops
    reg = _divisor(exts[3], _DOT_PIXELS)
    owo, owi = sch.split(ow, factors=[None, reg])
    sch.reorder(n, oc, oh, owo, rc, ry, rx, rm, owi, o, ri)
    outer = sch.fuse(n, oc, oh, owo)
    work = 1
    for e in exts:
        work *= e
    if (_extent(sch, outer) or 0) > 1 and work >= _MIN_PARALLEL_WORK:
        sch.parallel(outer)
    init = sch.decompose_reduction(block, rc)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(o, intrin)
    if reg > 1:
        sch.unroll(owi)
    return True


class CPUFallback(ScheduleRule):
    """Every block gets its spatial loops first (fused, parallel when the work is large
    enough), then its reduction loops, then one innermost spatial loop vectorized when
    its extent fills a vector.  No block is inlined into another: an inlined chain lets
    LLVM contract a multiply and an add that were two blocks into one fused
    multiply-add, which rounds differently (seen: 2e-6 on PP-OCR's HardSwish chains,
    enough to flip an int8 requantize and move its softmax output by 0.07)."""

    def apply(self, func: tirx.PrimFunc, target: Any, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        if _gathers(func):
            return None
        sch = s_tir.Schedule(func)
        # a u8 x s8 conv keeps its loop nest as written (`_dot_conv` tensorizes it);
        # dlight's normal form would fuse and drop its loops
        infos = _plain_infos(sch) if _has_dot_conv(sch, target) else None
        if infos is None:
            infos = normalize_prim_func(sch)
        if infos is None:
            return None
        for info in infos:
            self._schedule_block(sch, info, target)
        return sch

    @staticmethod
    def _schedule_block(sch: s_tir.Schedule, info: Any, target: Any) -> None:
        block = info.block_rv
        loops = sch.get_loops(block)
        kinds = info.dom_kind()
        if not loops or len(kinds) != len(loops) or "O" in kinds:
            return
        if _dot_conv(sch, block, kinds, target):
            return
        s_loops = [lp for lp, k in zip(loops, kinds) if k == "S"]
        r_loops = [lp for lp, k in zip(loops, kinds) if k == "R"]
        stmt = sch.get(block)
        bits = stmt.writes[0].source.dtype.bits if stmt.writes else 32
        lanes = _lanes(target, bits)
        vec = None
        # the innermost spatial loop is the vector loop when its extent fills a vector
        # and every buffer is contiguous along it: it moves inside the reduction loops
        last_s = max((i for i, k in enumerate(kinds) if k == "S"), default=-1)
        if s_loops and _contiguous(stmt, stmt.iter_vars[last_s].var):
            ext = _extent(sch, s_loops[-1])
            if ext is not None and 4 <= ext <= lanes:
                vec = s_loops.pop()
            elif ext is not None and ext > lanes:
                # up to four vectors of accumulators (the rest of the loop stays outside):
                # a whole number of vectors, else any divisor of the extent between one
                # and four vectors (LLVM splits it), else a predicated last chunk (slow:
                # the predicate scalarizes the loop)
                chunk = next((lanes * k for k in (4, 2, 1) if ext % (lanes * k) == 0),
                             next((d for d in range(4 * lanes, lanes - 1, -1) if ext % d == 0),
                                  lanes))
                if chunk < ext:
                    outer, vec = sch.split(s_loops.pop(), factors=[None, chunk])
                    s_loops.append(outer)
                else:
                    vec = s_loops.pop()
        order = s_loops + r_loops + ([vec] if vec is not None else [])
        if len(order) > 1:
            sch.reorder(*order)
        if s_loops:
            outer = sch.fuse(*s_loops) if len(s_loops) > 1 else s_loops[0]
            work = 1
            for lp in sch.get_loops(block):
                work *= _extent(sch, lp) or 1
            if (_extent(sch, outer) or 0) > 1 and work >= _MIN_PARALLEL_WORK:
                sch.parallel(outer)
        if vec is None:
            return
        sch.vectorize(vec)
        if r_loops:
            # the reduction's init becomes its own block, before the reduction loops, with
            # its own copy of the vector loop (the update then accumulates in vectors)
            init = sch.decompose_reduction(block, r_loops[0])
            inner = sch.get_loops(init)[-1]
            if sch.get(inner).kind != tirx.ForKind.VECTORIZED:
                sch.vectorize(inner)


@tvm.transform.module_pass(opt_level=0, name="DefaultCPUSchedule")
class default_schedule:  # noqa: N801  (a pass, named like TVM's passes' factories)
    """Schedule every PrimFunc not yet scheduled (no ``tirx.is_scheduled``) with
    `CPUFallback`; a kernel it cannot schedule (a schedule error, an opaque block) is
    left unchanged.  ``applied`` lists the kernels it scheduled, ``left`` those it
    could not."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.left: list[str] = []

    def transform_module(self, mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=False)
        updates = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or is_scheduled(func):
                continue
            tgt = func.attrs.get("target", target) if func.attrs is not None else target
            try:
                sch = CPUFallback().apply(func, tgt, False)
            except Exception as exc:  # noqa: BLE001  (TVM's schedule errors)
                _log.debug("%s: no default schedule: %s", gv.name_hint, exc)
                sch = None
            if sch is None:
                self.left.append(gv.name_hint)
                continue
            updates[gv] = sch.mod["main"].with_attr(SCHEDULED, True)
            self.applied.append(gv.name_hint)
        if updates:
            # a copy: setting a function on an IRModule from Python updates it in place,
            # so the caller's module (the unscheduled kernels) would change with ours
            mod = mod.clone()
        for gv, func in updates.items():
            mod[gv] = func
        return mod


def is_scheduled(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` carries a schedule already (``tirx.is_scheduled``: set by
    MetaSchedule's database, by dlight and by `default_schedule`)."""
    return func.attrs is not None and any(
        str(k).endswith("is_scheduled") and bool(v) for k, v in func.attrs.items())
