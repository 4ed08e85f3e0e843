"""One arena per function: TVM's tensors placed by our memory planner.

Why: TVM 0.27's ``StaticPlanBlockMemory`` gives every reusable "token" its own storage
and reuses a token only within a size band, which needed 1.7x the live-bytes bound on
DeepLab (``shared/notes/memory.md`` 2.1).  `PlanArena` runs right after
``CallTIRRewrite`` -- where every intermediate tensor is an explicit
``R.builtin.alloc_tensor`` -- and replaces those allocations with one
``R.memory.alloc_storage`` of the planned arena size plus, per tensor,
``R.memory.alloc_tensor(arena, offset, ...)``.  Offsets come from
`compiler.memory_plan.place` (greedy by size, best fit: TFLite's arena planner) over the
tensors' lifetimes in binding order and are multiples of 64 bytes, because the VM's
``ensure_zero_offset`` turns a 64-byte-aligned sub-tensor into a zero-offset one
*without* a copy (any other offset is silently copied, and plain TOPI kernels reject
a nonzero ``byte_offset``).  Anything the pass cannot reason about (symbolic shapes)
keeps TVM's own allocation: the default planner that runs after this pass handles it.

Three more things make the measured peak the planned one (MobileNetV2, 224x224, fp32,
untuned: TVM's default 17.98 MiB while running, the arena 5.89 MiB, planned 5.74):

* Kernel-internal buffers: TOPI's conv and pool kernels pad their input into a
  ``pad_temp`` buffer that ``TVMBackendAllocWorkspace`` serves outside any plan (4.8 MiB
  on MobileNetV2).  `InlineKernelIntermediates` computes such blocks inside their
  consumer, or one channel plane at a time for depthwise convs and pools (0.05 MiB
  left on MobileNetV2; bit-identical; `inline_intermediates`).
* In place: an elementwise/broadcast kernel (bias add, ReLU, Clip's max and min) writes
  into the buffer of a same-shaped input that dies there, so no op makes a second
  full-size tensor -- what fusing bias and activation into the conv would save, without
  changing the kernels' arithmetic.  (Fusing them into the conv's reduction, e.g.
  ``fuse_reduction_epilogue``, starts the sum at the bias: not bit-identical.)
* Returned tensors: the VM holds a call's result until the next call has returned, so a
  result inside the arena keeps a whole second arena alive from the second call on,
  and one outside costs itself twice.  ``outputs="auto"`` picks whichever holds less
  (`_Layout.steady_bytes`).

Views: ``R.reshape`` (lowered to a zero-copy ``vm.builtin.reshape``) and plain variable
rebinding alias their input's buffer, so they extend its lifetime.

Tuned builds (`tuning.compile_tuned` with a planner): MetaSchedule's own pipeline
(fusion, then the database) with `PlanArena` after ``CallTIRRewrite``; tuned kernels are
not rewritten (their pads sit inside their tiles), kernels without a record get the pad
inlining (`InlineUnscheduled`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from compiler.memory_plan import (Record, align_up, arena_size, lower_bound, peak_step, place,
                                  validate)

__all__ = ["PlanArena", "arena_pipeline", "fused_arena_pipeline", "ArenaStats", "InlineKernelIntermediates",
           "inline_intermediates", "kernel_buffers", "InlineUnscheduled"]

ALIGNMENT = 64
_log = logging.getLogger(__name__)


@dataclass
class ArenaStats:
    """What the pass did to one function (for reports and tests)."""

    function: str
    tensors: int
    arena_bytes: int
    lower_bound: int
    unplanned: int  # allocations left to TVM (symbolic shapes)
    in_place: int = 0  # kernels writing into a dying input's buffer
    output_bytes: int = 0  # returned tensors allocated outside the arena
    steady_bytes: int = 0  # held at a run's peak when called repeatedly (`_Layout`)
    # (shape, dtype, bytes) of the planned tensors live at the busiest step, largest
    # first: what the peak is made of (e.g. an int64 intermediate of a requantize)
    peak_tensors: tuple = ()


def _is_op(expr: Any, name: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


def _static_bytes(var: relax.Var) -> tuple[tuple[int, ...], str, int] | None:
    """(shape, dtype, bytes) of a tensor variable with a fully static type, else None."""
    info = var.ty
    shape = getattr(info, "shape", None)
    dtype = str(getattr(info, "dtype", "") or "")
    if not isinstance(shape, relax.ShapeExpr) or not dtype or dtype == "void":
        return None
    dims = []
    for d in shape.values:
        if not isinstance(d, tvm.tirx.IntImm):
            return None
        dims.append(int(d.value))
    nbytes = int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize
    return tuple(dims), dtype, nbytes


def _vars_in(expr: Any) -> list[relax.Var]:
    found: list[relax.Var] = []

    def visit(e):
        if isinstance(e, relax.Var):
            found.append(e)

    relax.analysis.post_order_visit(expr, visit)
    return found


# TIR op patterns (relay's OpPatternKind, set by AnnotateTIROpPattern): an elementwise or
# broadcast kernel reads each same-shaped input at the index it writes, so its output may
# take over the bytes of such an input that dies there.
_IN_PLACE_PATTERNS = (0, 1)


def _in_place_input(mod: tvm.IRModule | None, value: Any, allocs: dict, find, group_last: dict,
                    step: int) -> relax.Var | None:
    """The planned input whose buffer the call ``value`` (``f(inputs..., out)`` after
    CallTIRRewrite) may write its output into: the kernel is elementwise/broadcast, the
    output was allocated just for this call, and the input has the output's shape and
    dtype, and every view of its buffer is read for the last time here."""
    if mod is None or not isinstance(value, relax.Call) or not isinstance(value.op, relax.GlobalVar):
        return None
    try:
        func = mod[value.op]
    except (KeyError, ValueError, tvm.error.InternalError):
        return None
    if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs is None:
        return None
    if int(func.attrs.get("op_pattern", -1)) not in _IN_PLACE_PATTERNS or len(value.args) < 2:
        return None
    out = value.args[-1]
    if not isinstance(out, relax.Var) or out not in allocs or not find(out).same_as(out):
        return None
    _, shape, dtype, nbytes = allocs[out]
    for arg in value.args[:-1]:
        if not isinstance(arg, relax.Var) or arg.same_as(out):
            continue
        info = _static_bytes(arg)
        root = find(arg)
        if root not in allocs or info is None:
            continue
        if info[:2] != (shape, dtype) or allocs[root][3] != nbytes or group_last[root] != step:
            continue
        return root
    return None


@dataclass
class _Layout:
    """One placement of a function's allocations (see `_layout`)."""

    allocs: dict  # planned alloc var -> (step, shape, dtype, bytes)
    parent: dict  # in-place alloc var -> the alloc whose bytes it takes over
    find: Any  # var -> the alloc var whose record holds it
    records: list
    offsets: dict
    total: int
    unplanned: int
    output_bytes: int  # returned tensors left outside the arena

    def offset(self, var: relax.Var) -> int:
        root = self.find(var)
        return self.offsets[root.name + f"#{self.allocs[root][0]}"]

    @property
    def steady_bytes(self) -> int:
        """What repeated calls hold at a run's peak.  Measured: the VM keeps a call's
        returned tensor until the next call has returned (a 3-op chain of 16 MiB
        tensors: 32 MiB on the first call, 48 from the second on, with TVM's own
        planner too), so a returned tensor inside the arena keeps the whole previous
        arena alive while the next one runs; one outside costs itself twice."""
        return self.total + 2 * self.output_bytes if self.output_bytes else 2 * self.total


def _layout(bindings: list, result: relax.Expr, mod: tvm.IRModule | None, in_place: bool,
            outputs_in_arena: bool) -> _Layout:
    allocs: dict[relax.Var, tuple[int, tuple[int, ...], str, int]] = {}  # var -> (step, ...)
    root: dict[relax.Var, relax.Var] = {}
    last: dict[relax.Var, int] = {}
    unplanned = 0
    for step, binding in enumerate(bindings):
        value = binding.value
        if _is_op(value, "relax.builtin.alloc_tensor"):
            info = _static_bytes(binding.var)
            if info is None:
                unplanned += 1
                continue
            allocs[binding.var] = (step, *info)
            root[binding.var] = binding.var
            last[binding.var] = step
            continue
        for var in _vars_in(value):
            r = root.get(var)
            if r is not None:
                last[r] = step
        # a view of a planned tensor shares its buffer and extends its life
        if isinstance(value, relax.Var) and value in root:
            root[binding.var] = root[value]
        elif _is_op(value, "relax.reshape") and isinstance(value.args[0], relax.Var) \
                and value.args[0] in root:
            root[binding.var] = root[value.args[0]]
    # Returned tensors live to the end of the function; outside the arena each keeps
    # its own allocation (TVM's).
    end = len(bindings)
    returned: dict = {}
    for v in _vars_in(result):
        if v in root:
            last[root[v]] = end
            returned[root[v]] = allocs[root[v]][3]
    output_bytes = 0
    if not outputs_in_arena:
        for var, nbytes in returned.items():
            del allocs[var]
            output_bytes += nbytes
    # In place: an elementwise kernel writes into an input buffer that dies there (bias
    # add, ReLU, Clip's max/min after a conv: no second full-size tensor).  Groups of
    # allocations share one record; a group lives until its last member's last use.
    parent: dict[relax.Var, relax.Var] = {}

    def find(var: relax.Var) -> relax.Var:
        r = root.get(var, var)
        while r in parent:
            r = parent[r]
        return r

    group_last = dict(last)
    if in_place:
        for step, binding in enumerate(bindings):
            target = _in_place_input(mod, binding.value, allocs, find, group_last, step)
            if target is not None and binding.value.args[-1] in allocs:
                out = binding.value.args[-1]
                parent[out] = target
                group_last[target] = max(group_last[target], group_last.pop(out))
    records = [Record(var.name + f"#{step}", align_up(max(nbytes, 1), ALIGNMENT), step,
                      group_last[var], (var.name,))
               for var, (step, _shape, _dtype, nbytes) in allocs.items() if var not in parent]
    offsets = place(records, "greedy_by_size", alignment=ALIGNMENT)
    validate(records, offsets)
    return _Layout(allocs, parent, find, records, offsets, arena_size(records, offsets),
                   unplanned, output_bytes)


def _plan_function(func: relax.Function, name: str, mod: tvm.IRModule | None = None,
                   in_place: bool = True, outputs: "bool | str" = "auto"
                   ) -> tuple[relax.Function, ArenaStats | None]:
    body = func.body
    if not isinstance(body, relax.SeqExpr) or any(
            isinstance(b, relax.DataflowBlock) for b in body.blocks):
        return func, None
    bindings = [b for block in body.blocks for b in block.bindings]
    if any(not isinstance(b, relax.VarBinding) for b in bindings):
        return func, None
    if outputs == "auto":  # returned tensors in the arena when that holds less
        layout = min((_layout(bindings, body.body, mod, in_place, inside)
                      for inside in (False, True)), key=lambda lay: lay.steady_bytes)
    else:
        layout = _layout(bindings, body.body, mod, in_place, bool(outputs))
    if not layout.records:
        return func, None
    allocs = layout.allocs
    storage = relax.op.memory.alloc_storage(relax.ShapeExpr([layout.total]), 0, "global",
                                            "uint8")
    arena = relax.Var("arena", relax.ObjectType())
    new_bindings = [relax.VarBinding(arena, storage)]
    for binding in bindings:
        if binding.var in allocs:
            _, shape, dtype, _ = allocs[binding.var]
            raw = relax.Var(binding.var.name + "_at", binding.var.ty)
            new_bindings.append(relax.VarBinding(raw, relax.op.memory.alloc_tensor(
                arena, layout.offset(binding.var), relax.ShapeExpr(list(shape)), dtype)))
            new_bindings.append(relax.VarBinding(binding.var,
                                                 relax.op.memory.ensure_zero_offset(raw)))
        else:
            new_bindings.append(binding)
    new_body = relax.SeqExpr([relax.BindingBlock(new_bindings)], body.body)
    new_func = relax.Function(func.params, new_body, func.ret_ty, func.is_pure,
                              func.attrs, func.span)
    return new_func, ArenaStats(name, len(layout.records), layout.total,
                                lower_bound(layout.records), layout.unplanned,
                                len(layout.parent), layout.output_bytes, layout.steady_bytes,
                                _peak_tensors(layout))


def _peak_tensors(layout: _Layout) -> tuple:
    """(shape, dtype, bytes) of the records live at the step with the most live bytes."""
    records = layout.records
    if not records:
        return ()
    step = peak_step(records)
    info = {var.name + f"#{st}": (shape, dtype, nbytes)
            for var, (st, shape, dtype, nbytes) in layout.allocs.items()}
    return tuple(sorted((info[r.name] for r in records if r.first <= step <= r.last),
                        key=lambda t: -t[2]))


@tvm.transform.module_pass(opt_level=0, name="PlanArena")
class PlanArena:
    """Place every statically shaped intermediate tensor of each Relax function in one
    arena (run after ``CallTIRRewrite``).  ``stats`` lists what each run planned."""

    def __init__(self, in_place: bool = True, outputs: "bool | str" = "auto",
                 workspace: bool = False) -> None:
        if outputs not in (True, False, "auto"):
            raise ValueError(f"outputs must be True, False or 'auto', not {outputs!r}")
        self.stats: list[ArenaStats] = []
        self.in_place = in_place
        self.outputs = outputs
        # With ``workspace``: `kernel_buffers` of the module as the arena saw it (the
        # kernels as built: fused, scheduled), what TVM serves outside the arena.
        self.record_workspace = workspace
        self.workspace: dict[str, list[tuple[str, int]]] = {}

    def transform_module(self, mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        if self.record_workspace:
            self.workspace = kernel_buffers(mod)
        out = mod
        for gvar, func in mod.functions.items():
            if not isinstance(func, relax.Function):
                continue
            new_func, stats = _plan_function(func, gvar.name_hint, mod, self.in_place,
                                             self.outputs)
            if stats is not None:
                out.update_func(gvar, new_func)
                self.stats.append(stats)
        return out


def inline_intermediates(func: "tvm.tirx.PrimFunc") -> tuple["tvm.tirx.PrimFunc", list[str]]:
    """``func`` with every spatial block that fills a kernel-internal buffer (TOPI's
    ``pad_temp`` / ``data_pad`` of convolutions and pools, the dilated input of a
    transposed conv) computed inside its consumer instead, and the names inlined.

    Why: such a buffer is not a Relax tensor; the built kernel gets it from
    ``TVMBackendAllocWorkspace`` at run time, outside any plan -- up to the whole
    padded input (24.6 MiB on DeepLab's stem, ``shared/notes/memory.md`` 2.2).  Inlined,
    the consumer reads the input through the pad's bounds check; where the consumer
    works per channel (depthwise conv, pool) the pad is instead computed one channel
    plane at a time under its channel loop (`_pad_per_channel`, named ``NAME@channel``).  The products and the
    order of the sums are unchanged (an out-of-bounds tap still adds ``0 * w``), so the
    results are bit-identical.  Blocks that cannot be inlined (reductions, such as a
    softmax's row maximum) stay."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    try:
        root = sch.get_sblock("root")
    except (s_tir.ScheduleError, tvm.error.InternalError, ValueError):
        return func, []
    internal = list(sch.get(root).alloc_buffers)
    inlined = []
    for block in sch.get_child_blocks(root):
        stmt = sch.get(block)
        if len(stmt.writes) != 1 or not any(stmt.writes[0].source.same_as(b) for b in internal):
            continue
        if _pad_per_channel(sch, block):
            inlined.append(stmt.name_hint + "@channel")
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            continue
        inlined.append(stmt.name_hint)
    return (sch.mod["main"] if inlined else func), inlined


def _pad_per_channel(sch: Any, block: Any) -> bool:
    """Move the pad ``block`` under its consumer's second loop (a depthwise conv's
    channel) when that computes each padded element once: then the buffer is one padded
    channel plane, and the conv keeps reading it without a bounds check per tap (inlined,
    the check made a 96-channel 112x112 depthwise conv 2x slower, 1.71 -> 3.51 ms; a dense
    3x3 conv got slightly faster inlined, 108 -> 102 ms, where this placement would
    recompute the pad per output channel).  Returns whether it was moved."""
    from tvm import s_tir

    consumers = sch.get_consumers(block)
    if len(consumers) != 1:
        return False
    loops = sch.get_loops(consumers[0])
    if len(loops) < 3:
        return False

    def extents(schedule, rvs) -> int:
        n = 1
        for rv in rvs:
            n *= int(schedule.get(rv).extent)
        return n

    before = extents(sch, sch.get_loops(block))
    state = sch.copy()
    try:
        state.compute_at(block, loops[1])
    except s_tir.ScheduleError:
        return False
    if extents(state, state.get_loops(block)) > before:  # recomputes padded elements
        return False
    sch.compute_at(block, loops[1])
    return True


def kernel_buffers(mod: tvm.IRModule) -> dict[str, list[tuple[str, int]]]:
    """``{kernel: [(buffer, bytes), ...]}``: the buffers each PrimFunc of ``mod``
    allocates inside itself (what ``TVMBackendAllocWorkspace`` serves at run time), at
    the size the build gives them (after ``CompactBufferAllocation``: a buffer computed
    under a loop holds only that loop's region)."""
    import re

    from tvm import s_tir

    compact = tvm.transform.Sequential([
        s_tir.transform.LowerInitBlock(), s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.CompactBufferAllocation()])
    out: dict[str, list[tuple[str, int]]] = {}
    for gvar, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        try:
            text = compact(tvm.IRModule({"main": func}))["main"].script()
        except (tvm.error.InternalError, ValueError):
            text = func.script()
        for name, dims, dtype in re.findall(
                r"(\w+) = T\.(?:sblock_)?alloc_buffer\(\(((?:[^()]|\([^()]*\))*)\)"
                r"(?:, \"(\w+)\")?", text):
            sizes = [int(d) for d in re.findall(r"\d+", dims.replace("T.int64(", "("))]
            nbytes = int(np.prod(sizes, dtype=np.int64)) * tvm.DataType(dtype or "float32").bits // 8
            out.setdefault(gvar.name_hint, []).append((name, nbytes))
    return out


@tvm.transform.module_pass(opt_level=0, name="InlineKernelIntermediates")
class InlineKernelIntermediates:
    """`inline_intermediates` on every PrimFunc (run after ``LegalizeOps``);
    ``inlined`` lists ``(kernel, block)`` pairs."""

    def __init__(self) -> None:
        self.inlined: list[tuple[str, str]] = []

    def skips(self, func: "tvm.tirx.PrimFunc") -> bool:
        """Kernels left as they are (none here)."""
        return False

    def transform_module(self, mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        for gvar, func in list(mod.functions.items()):
            if not isinstance(func, tvm.tirx.PrimFunc) or self.skips(func):
                continue
            new_func, names = inline_intermediates(func)
            if names:
                mod.update_func(gvar, new_func)
                self.inlined += [(gvar.name_hint, n) for n in names]
        return mod


def arena_pipeline(planner: "PlanArena | None" = None) -> tvm.transform.Pass:
    """TVM 0.27's default build pipeline with the kernels' padded copies inlined
    (`InlineKernelIntermediates`, after ``LegalizeOps``; ``AnnotateTIROpPattern`` marks
    the elementwise kernels the planner may run in place) and `PlanArena` right after
    ``CallTIRRewrite`` (``StaticPlanBlockMemory`` then only sees what the arena left out)."""
    from tvm.relax import backend, transform

    planner = planner or PlanArena()

    @tvm.transform.module_pass(opt_level=0, name="ArenaBuildPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        return tvm.transform.Sequential([
            backend.DispatchSampling(), backend.DispatchSortScan(),
            transform.LegalizeOps(), InlineKernelIntermediates(),
            transform.AnnotateTIROpPattern(), transform.RewriteDataflowReshape(),
            transform.ToNonDataflow(), transform.RemovePurityChecking(),
            transform.CallTIRRewrite(), planner, transform.StaticPlanBlockMemory(),
            transform.RewriteCUDAGraph(), transform.LowerAllocTensor(),
            transform.KillAfterLastUse(), transform.LowerRuntimeBuiltin(),
            transform.ComputePrimValue(), transform.VMShapeLower(),
            transform.AttachGlobalSymbol()])(mod)

    return _pipeline


def fused_arena_pipeline(planner: "PlanArena | None" = None, scheduler: Any = None
                         ) -> tvm.transform.Pass:
    """The untuned arena build through TVM's operator fusion: `build.fused_pipeline`
    with no database and `PlanArena` (what `tuning.compile_tuned` does with an empty
    database).  Build the module with ``lower_graph(fused=True)`` (``q.Requantize``
    whole, fused into its conv's kernel).

    Why, against `arena_pipeline` (one kernel per op): fused, a conv's bias,
    activation and requantize chain stay inside its kernel, so the arena holds one
    tensor per fused group instead of every op's output, and the kernels get the
    default schedule (parallel, vectorized) instead of naive loops.  A fused kernel's
    own intermediates (the int32 accumulator of a conv + requantize) are workspace
    outside the arena; ``PlanArena(workspace=True)`` reports them
    (benchmarks/fused_arena.py measures both builds)."""
    from .build import fused_pipeline

    return fused_pipeline(planner=planner if planner is not None else PlanArena(),
                          scheduler=scheduler if scheduler is not None else ArenaSchedule())


@tvm.transform.module_pass(opt_level=0, name="InlineUnscheduledIntermediates")
class InlineUnscheduled(InlineKernelIntermediates):
    """`InlineKernelIntermediates` on the kernels no tuning record scheduled (a tuned
    schedule already places its pad inside its tiles; it must not be rewritten)."""

    def skips(self, func: "tvm.tirx.PrimFunc") -> bool:
        from .default_schedule import is_scheduled

        return is_scheduled(func)


def _storage_bytes(mod: tvm.IRModule) -> int:
    import re

    total = 0
    for _gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            total += sum(int(s) for s in re.findall(r"alloc_storage\(R\.shape\(\[(\d+)\]\)",
                                                    func.script()))
    return total


def planned_memory(mod: tvm.IRModule, target: Any = "llvm", fused: bool = False
                   ) -> dict[str, int]:
    """Planned bytes of ``mod`` (a lowered, untuned Relax module), by both planners
    (``fused``: as `fused_arena_pipeline` builds it, ``mod`` lowered with ``fused=True``;
    the workspace figures are then the largest sum of one kernel's buffers, which are
    live together):
    ``tvm_default_bytes`` (StaticPlanBlockMemory's storages, outputs excluded: TVM
    allocates those per call), ``tvm_workspace_bytes`` (the largest buffer a kernel
    allocates inside itself, which TVM serves outside its plan), ``arena_bytes``,
    ``lower_bound`` (max live bytes of what the arena holds), ``arena_outputs_bytes``
    (returned tensors left outside the arena), ``arena_steady_bytes`` (held at a run's
    peak when called repeatedly, `_Layout.steady_bytes`), ``arena_workspace_bytes`` and
    ``arena_peak_tensors`` (what the arena holds at its busiest step, `ArenaStats`)."""
    from tvm.relax import backend, transform

    from .build import make_target
    from .default_schedule import default_schedule

    def front(extra: list) -> list:
        return [backend.DispatchSampling(), backend.DispatchSortScan(),
                transform.LegalizeOps(), *extra, transform.RewriteDataflowReshape(),
                transform.ToNonDataflow(), transform.RemovePurityChecking(),
                transform.CallTIRRewrite()]

    def largest(m: tvm.IRModule) -> int:
        if fused:
            return max((sum(n for _b, n in bufs) for bufs in kernel_buffers(m).values()),
                       default=0)
        return max((n for bufs in kernel_buffers(m).values() for _b, n in bufs), default=0)

    planner = PlanArena()
    if fused:  # (the front of build.fused_pipeline, up to the arena)
        fuse = [transform.AnnotateTIROpPattern(), transform.FoldConstant(),
                transform.FuseOps(), transform.FuseTIR()]
        extra_default = fuse + [default_schedule()]
        extra_arena = fuse + [InlineUnscheduled(), ArenaSchedule()]
    else:
        extra_default = []
        extra_arena = [InlineKernelIntermediates(), transform.AnnotateTIROpPattern()]
    with make_target(target):
        default = tvm.transform.Sequential(front(extra_default)
                                           + [transform.StaticPlanBlockMemory()])(
            tvm.IRModule(mod.functions))
        arena = tvm.transform.Sequential(front(extra_arena) + [planner])(
            tvm.IRModule(mod.functions))
    stats = [s for s in planner.stats if s.function == "main"] or planner.stats
    return {"tvm_default_bytes": _storage_bytes(default), "tvm_workspace_bytes": largest(default),
            "arena_bytes": sum(s.arena_bytes for s in stats),
            "lower_bound": sum(s.lower_bound for s in stats),
            "arena_outputs_bytes": sum(s.output_bytes for s in stats),
            "arena_steady_bytes": sum(s.steady_bytes for s in stats),
            "arena_workspace_bytes": largest(arena),
            "arena_peak_tensors": [t for s in stats for t in s.peak_tensors]}


def _realize(sch: Any, block: Any) -> Any:
    """The ``SBlockRealize`` of ``block`` (its iterators' bindings to the loops)."""
    return tvm.get_global_func("s_tir.schedule.GetSBlockRealize")(sch, block)


def _iterations(sch: Any, block: Any) -> int:
    n = 1
    for loop in sch.get_loops(block):
        n *= int(sch.get(loop).extent)
    return n


def _bound_iter(sch: Any, block: Any, loop: Any) -> Any:
    """The one iterator of ``block`` whose binding uses ``loop``'s variable, else None."""
    from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr

    var = sch.get(loop).loop_var
    found = [iv for iv, value in zip(sch.get(block).iter_vars, _realize(sch, block).iter_values)
             if any(v.same_as(var) for v in collect_vars_used_in_prim_expr(value))]
    return found[0] if len(found) == 1 else None


def _place_under(sch: Any, names: list[str], depth: int) -> Any:
    """A copy of ``sch`` with every block computed under loop ``depth`` of the last
    block (the output's), or None when some block would then compute an element twice
    (a depthwise conv's padded input, per output row) or cannot move."""
    from tvm import s_tir

    sch = sch.copy()
    loops = sch.get_loops(sch.get_sblock(names[-1]))
    if len(loops) <= depth + 1 or int(sch.get(loops[1]).extent) < 2:
        return None
    at = loops[depth]
    for name in reversed(names[:-1]):
        block = sch.get_sblock(name)
        if any(sch.get(lp).same_as(sch.get(at)) for lp in sch.get_loops(block)):
            continue
        before = _iterations(sch, block)
        state = sch.copy()
        try:
            state.compute_at(state.get_sblock(name), at, preserve_unit_loops=True)
        except s_tir.ScheduleError:
            return None
        if _iterations(state, state.get_sblock(name)) > before:
            return None
        sch = state
    return sch


def per_channel(func: "tvm.tirx.PrimFunc", target: Any) -> "tvm.tirx.PrimFunc | None":
    """``func`` (a fused kernel, e.g. conv + bias + activation, or conv + requantize)
    computed one output channel at a time: every block is moved under the output
    block's channel loop (its second loop) when that computes none of its elements
    twice, so each kernel-internal buffer -- the conv's full-size accumulator, the int64
    copies of a requantize -- holds one channel plane.  Then the channel loop (fused with
    the batch loop) is parallel and each block's innermost contiguous spatial loop is
    vectorized, the reduction's vector loop inside its reduction loops (what
    `default_schedule.CPUFallback` does per block).  Every block computes what it
    computed, in the same order, so outputs are unchanged.  None when the kernel does not
    fit (one block, no channel loop, an internal buffer left full size).

    Why: with FuseOps, a kernel's intermediates are not Relax tensors; TVM serves them
    from ``TVMBackendAllocWorkspace`` outside the arena (DeepLab v3 int8 at 256: 12 MiB
    per int64 intermediate of the 96x128x128 requantize, several in one kernel)."""
    from tvm import s_tir

    from .default_schedule import _MIN_PARALLEL_WORK, _contiguous, _extent, _lanes

    sch = s_tir.Schedule(func)
    try:
        names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    except (s_tir.ScheduleError, ValueError):
        return None
    if len(names) < 2:
        return None
    placed = None
    for depth in (2, 1):  # one output row per channel, else one channel plane
        placed = _place_under(sch, names, depth)
        if placed is not None:
            break
    if placed is None:
        return None
    sch = placed
    # the batch and channel loops (shared by every block) fused, parallel; then each
    # block's own loops below the placement loop
    out = sch.get_sblock(names[-1])
    outer = sch.fuse(*sch.get_loops(out)[:2])
    if _iterations(sch, out) >= _MIN_PARALLEL_WORK and int(sch.get(outer).extent) > 1:
        sch.parallel(outer)
    for name in names:
        block = sch.get_sblock(name)
        inner = sch.get_loops(block)[depth:]
        iters = [_bound_iter(sch, block, lp) for lp in inner]
        if not inner or any(iv is None for iv in iters):
            continue
        kinds = ["R" if int(iv.iter_type) == 2 else "S" for iv in iters]
        stmt = sch.get(block)
        s_loops = [lp for lp, k in zip(inner, kinds) if k == "S"]
        r_loops = [lp for lp, k in zip(inner, kinds) if k == "R"]
        if not s_loops:
            continue
        bits = stmt.writes[0].source.dtype.bits if stmt.writes else 32
        lanes = _lanes(target, bits)
        if not _contiguous(stmt, _bound_iter(sch, block, s_loops[-1]).var):
            continue
        ext = _extent(sch, s_loops[-1])
        if ext is None or ext < 4:
            continue
        chunk = ext if ext <= lanes else next(
            (lanes * k for k in (4, 2, 1) if ext % (lanes * k) == 0),
            next((d for d in range(4 * lanes, lanes - 1, -1) if ext % d == 0), lanes))
        if chunk < ext:
            outer, vec = sch.split(s_loops.pop(), factors=[None, chunk])
            s_loops.append(outer)
        else:
            vec = s_loops.pop()
        order = s_loops + r_loops + [vec]
        if len(order) > 1:
            sch.reorder(*order)
        sch.vectorize(vec)
        if r_loops:
            init = sch.decompose_reduction(block, r_loops[0])
            last_loop = sch.get_loops(init)[-1]
            if sch.get(last_loop).kind != tvm.tirx.ForKind.VECTORIZED:
                sch.vectorize(last_loop)
    return sch.mod["main"]


@tvm.transform.module_pass(opt_level=0, name="ArenaSchedule")
class ArenaSchedule:
    """The fused arena build's scheduler: `per_channel` on every kernel not yet
    scheduled whose intermediates it can bound, `default_schedule.default_schedule` on
    the rest.  ``per_channel`` lists the kernels it placed so, ``default`` is the
    default-schedule pass that ran after it."""

    def __init__(self) -> None:
        from .default_schedule import default_schedule

        self.per_channel: list[str] = []
        self.default = default_schedule()

    @property
    def applied(self) -> list[str]:
        """Every kernel scheduled (as `default_schedule.applied`, for build stats)."""
        return self.per_channel + self.default.applied

    @property
    def left(self) -> list[str]:
        return self.default.left

    def transform_module(self, mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        from .checks import SCHEDULED
        from .default_schedule import is_scheduled

        target = tvm.target.Target.current(allow_none=False)
        for gvar, func in list(mod.functions.items()):
            if not isinstance(func, tvm.tirx.PrimFunc) or is_scheduled(func):
                continue
            if not kernel_buffers(tvm.IRModule({"main": func})):
                continue
            try:
                new = per_channel(func, target)
            except Exception as exc:  # noqa: BLE001  (TVM's schedule errors: leave it)
                _log.debug("%s: not per channel: %s", gvar.name_hint, exc)
                new = None
            if new is not None:
                mod.update_func(gvar, new.with_attr(SCHEDULED, True))
                self.per_channel.append(gvar.name_hint)
        return self.default(mod)
