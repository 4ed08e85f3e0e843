"""Small kernels run serially: a parallel loop in a kernel too small to pay for waking
the thread pool becomes a serial one.

TVM's CPU runtime runs each parallel loop as a parallel region of its thread pool, and
a region costs a wake-up of every worker (tens of microseconds when the pool does not
spin, ``TVM_THREAD_POOL_SPIN_COUNT=0``, as in the benchmarks and on a board shared with
other work).  MetaSchedule's schedules parallelize the outer loops of every kernel
whatever its size, so a model of small kernels ran slower at 2 threads than at 1:
MTCNN's RNet (24x24 input) went from 0.108 ms to 1.951 ms.  `serialize_small_kernels`
runs after the schedules (tuned, default) and turns every parallel loop of a kernel
whose floating/integer operation count (`estimate_tir_flops`) is below ``min_ops`` into
a serial loop.  Only the loop kind changes: every iteration computes what it computed,
so outputs are bit-identical.
"""
from __future__ import annotations

from typing import Any

import tvm
import tvm_ffi
from tvm import tirx

__all__ = ["serialize_small_kernels", "MIN_PARALLEL_OPS"]

# Operations below which a kernel runs on one thread; see `serialize_small_kernels`.
MIN_PARALLEL_OPS = 1 << 20


def _serial(loop: tirx.For) -> tirx.For:
    if loop.kind != tirx.ForKind.PARALLEL:
        return loop
    return tirx.For(loop.loop_var, loop.min, loop.extent, tirx.ForKind.SERIAL, loop.body,
                    loop.thread_binding, loop.annotations)


def _has_parallel(func: tirx.PrimFunc) -> bool:
    found = []

    def visit(loop: tirx.For) -> tirx.For:
        if loop.kind == tirx.ForKind.PARALLEL:
            found.append(loop)
        return loop

    tvm_ffi.structural_map(func.body, (tirx.For, visit))
    return bool(found)


def _ops(func: tirx.PrimFunc) -> float | None:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(tvm.IRModule({"main": func})))
    except Exception:  # noqa: BLE001  (an op the estimator does not know: leave it parallel)
        return None


@tvm.transform.module_pass(opt_level=0, name="SerializeSmallKernels")
class serialize_small_kernels:  # noqa: N801  (a pass, named like TVM's passes' factories)
    """Parallel loops of kernels below ``min_ops`` operations made serial.  Records the
    names of the kernels it changed in ``serialized``."""

    def __init__(self, min_ops: float = MIN_PARALLEL_OPS) -> None:
        self.min_ops = float(min_ops)
        self.serialized: list[str] = []

    def transform_module(self, mod: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, tirx.PrimFunc) or not _has_parallel(func):
                continue
            ops = _ops(func)
            if ops is None or ops >= self.min_ops:
                continue
            mod.update_func(gvar, tvm_ffi.structural_map(func, (tirx.For, _serial)))
            self.serialized.append(gvar.name_hint)
        return mod
