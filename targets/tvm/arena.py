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
a nonzero ``byte_offset``).  Tensors the function returns, and anything the pass cannot
reason about (symbolic shapes), keep TVM's own allocation: the default planner that
runs after this pass still handles them.  Returned tensors are placed in the arena as
well (live to the end): a returned tensor keeps the arena alive while the caller holds
it, which costs nothing extra when the runtime keeps its pooled blocks anyway, and it
saves a fresh output allocation on top of the arena at its peak.

Views: ``R.reshape`` (lowered to a zero-copy ``vm.builtin.reshape``) and plain
variable rebinding alias their input's buffer, so they extend its lifetime.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from compiler.memory_plan import Record, align_up, arena_size, lower_bound, place, validate

__all__ = ["PlanArena", "arena_pipeline", "ArenaStats"]

ALIGNMENT = 64


@dataclass
class ArenaStats:
    """What the pass did to one function (for reports and tests)."""

    function: str
    tensors: int
    arena_bytes: int
    lower_bound: int
    unplanned: int  # allocations left to TVM (symbolic shapes)


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


def _plan_function(func: relax.Function, name: str) -> tuple[relax.Function, ArenaStats | None]:
    body = func.body
    if not isinstance(body, relax.SeqExpr) or any(
            isinstance(b, relax.DataflowBlock) for b in body.blocks):
        return func, None
    bindings = [b for block in body.blocks for b in block.bindings]
    if any(not isinstance(b, relax.VarBinding) for b in bindings):
        return func, None
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
    # Returned tensors live to the end of the function.  They are placed in the arena
    # too: left outside, each would be a fresh allocation on top of the arena at its
    # peak (measured: a 3-op chain of 16 MiB tensors ran in 48 MiB instead of 32).
    end = len(bindings)
    for v in _vars_in(body.body):
        if v in root:
            last[root[v]] = end
    records = []
    for var, (step, _shape, _dtype, nbytes) in allocs.items():
        records.append(Record(var.name + f"#{step}", align_up(max(nbytes, 1), ALIGNMENT), step,
                              last[var], (var.name,)))
    if not records:
        return func, None
    offsets = place(records, "greedy_by_size", alignment=ALIGNMENT)
    validate(records, offsets)
    total = arena_size(records, offsets)
    by_step = {r.first: offsets[r.name] for r in records}

    storage = relax.op.memory.alloc_storage(relax.ShapeExpr([total]), 0, "global", "uint8")
    arena = relax.Var("arena", relax.ObjectType())
    new_bindings = [relax.VarBinding(arena, storage)]
    for step, binding in enumerate(bindings):
        if step in by_step and binding.var in allocs:
            _, shape, dtype, _ = allocs[binding.var]
            raw = relax.Var(binding.var.name + "_at", binding.var.ty)
            new_bindings.append(relax.VarBinding(raw, relax.op.memory.alloc_tensor(
                arena, by_step[step], relax.ShapeExpr(list(shape)), dtype)))
            new_bindings.append(relax.VarBinding(binding.var,
                                                 relax.op.memory.ensure_zero_offset(raw)))
        else:
            new_bindings.append(binding)
    new_body = relax.SeqExpr([relax.BindingBlock(new_bindings)], body.body)
    new_func = relax.Function(func.params, new_body, func.ret_ty, func.is_pure,
                              func.attrs, func.span)
    return new_func, ArenaStats(name, len(records), total, lower_bound(records), unplanned)


@tvm.transform.module_pass(opt_level=0, name="PlanArena")
class PlanArena:
    """Place every statically shaped intermediate tensor of each Relax function in one
    arena (run after ``CallTIRRewrite``).  ``stats`` lists what each run planned."""

    def __init__(self) -> None:
        self.stats: list[ArenaStats] = []

    def transform_module(self, mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        out = mod
        for gvar, func in mod.functions.items():
            if not isinstance(func, relax.Function):
                continue
            new_func, stats = _plan_function(func, gvar.name_hint)
            if stats is not None:
                out.update_func(gvar, new_func)
                self.stats.append(stats)
        return out


def arena_pipeline(planner: "PlanArena | None" = None) -> tvm.transform.Pass:
    """TVM 0.27's default build pipeline with `PlanArena` right after ``CallTIRRewrite``
    (``StaticPlanBlockMemory`` then only sees what the arena left out)."""
    from tvm.relax import backend, transform

    planner = planner or PlanArena()

    @tvm.transform.module_pass(opt_level=0, name="ArenaBuildPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        return tvm.transform.Sequential([
            backend.DispatchSampling(), backend.DispatchSortScan(),
            transform.LegalizeOps(), transform.RewriteDataflowReshape(),
            transform.ToNonDataflow(), transform.RemovePurityChecking(),
            transform.CallTIRRewrite(), planner, transform.StaticPlanBlockMemory(),
            transform.RewriteCUDAGraph(), transform.LowerAllocTensor(),
            transform.KillAfterLastUse(), transform.LowerRuntimeBuiltin(),
            transform.ComputePrimValue(), transform.VMShapeLower(),
            transform.AttachGlobalSymbol()])(mod)

    return _pipeline
